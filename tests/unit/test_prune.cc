// Pruning: physically removed heads / neurons give the logits of the dense model with those weights zeroed (masking
// in the dense model is the independent route), cubic schedule values by hand, magnitude masks by hand, engine and
// TrainableEncoder agree on pruned models, save/load round trip, the gradual driver keeps the last good model.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <shrink/compress/prune.h>
#include <shrink/core/error.h>
#include <shrink/formats/model_dir.h>
#include <shrink/models/model.h>
#include <shrink/train/encoder.h>
#include <shrink/train/trainer.h>

#include <cmath>
#include <random>

#include "test_util.h"

namespace shrink::prune {
namespace {

constexpr int kHidden = 32, kHeads = 4, kHd = 8, kFfn = 48, kLayers = 2, kVocab = 40;

ModelConfig tiny_config(const std::string& type) {
  nlohmann::json j = {{"model_type", type}, {"vocab_size", kVocab}, {"max_position_embeddings", 16}, {"num_labels", 3}};
  if (type == "bert")
    j.update({{"architectures", {"BertForSequenceClassification"}},
              {"hidden_size", kHidden},
              {"num_hidden_layers", kLayers},
              {"num_attention_heads", kHeads},
              {"intermediate_size", kFfn},
              {"type_vocab_size", 2},
              {"layer_norm_eps", 1e-12},
              {"hidden_act", "gelu"}});
  else
    j.update({{"architectures", {"DistilBertForSequenceClassification"}},
              {"dim", kHidden},
              {"n_layers", kLayers},
              {"n_heads", kHeads},
              {"hidden_dim", kFfn},
              {"activation", "gelu"}});
  return parse_config(j, "test config");
}

// Random weights with non-trivial biases and norms.
TensorMap random_model(const ModelConfig& cfg, uint32_t seed) {
  train::TrainableEncoder enc(cfg, seed);
  std::mt19937 gen(seed + 1);
  std::normal_distribution<float> nd(0.f, 0.08f);
  TensorMap t = enc.state();
  for (auto& [name, x] : t)
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] += nd(gen);
  return t;
}

BatchEncoding random_batch(int64_t B, int64_t T, uint32_t seed) {
  std::mt19937 gen(seed);
  BatchEncoding b;
  b.batch = B;
  b.seq = T;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t len = T - (i % 3);
    for (int64_t t = 0; t < T; ++t) {
      b.ids.push_back(t < len ? static_cast<int32_t>(gen() % kVocab) : 0);
      b.type_ids.push_back(t >= len / 2 && t < len ? 1 : 0);
      b.attention_mask.push_back(t < len ? 1 : 0);
    }
  }
  return b;
}

std::vector<float> engine_logits(const ModelConfig& cfg, const TensorMap& t, const BatchEncoding& b) {
  auto m = build_model(cfg, t, "in-memory");
  const Tensor l = dynamic_cast<EncoderModel&>(*m).forward(b).logits;
  return std::vector<float>(l.data<float>(), l.data<float>() + l.numel());
}

// The independent route: the dense model with the removed heads' q/k/v rows (and biases) and output-dense columns,
// and the removed neurons' intermediate rows (and biases) and output columns, set to zero.
TensorMap zeroed(const ModelConfig& cfg, const TensorMap& dense, const Removal& r) {
  TensorMap t = own_f32(dense);
  const auto blocks = encoder_blocks(cfg, t);
  auto zero_rows = [&](const std::string& n, int64_t r0, int64_t r1) {
    Tensor& w = t[n];
    const int64_t C = w.rank() == 2 ? w.dim(1) : 1;
    for (int64_t i = r0 * C; i < r1 * C; ++i) w.data<float>()[i] = 0.f;
  };
  auto zero_cols = [&](const std::string& n, int64_t c0, int64_t c1) {
    Tensor& w = t[n];
    for (int64_t r = 0; r < w.dim(0); ++r)
      for (int64_t c = c0; c < c1; ++c) w.data<float>()[r * w.dim(1) + c] = 0.f;
  };
  for (size_t l = 0; l < blocks.size(); ++l) {
    const auto& b = blocks[l];
    for (int h : r.heads[l]) {
      for (const std::string* n : {&b.q, &b.k, &b.v}) {
        zero_rows(*n + ".weight", h * kHd, (h + 1) * kHd);
        zero_rows(*n + ".bias", h * kHd, (h + 1) * kHd);
      }
      zero_cols(b.o + ".weight", h * kHd, (h + 1) * kHd);
    }
    for (int j : r.neurons[l]) {
      zero_rows(b.ffn_in + ".weight", j, j + 1);
      zero_rows(b.ffn_in + ".bias", j, j + 1);
      zero_cols(b.ffn_out + ".weight", j, j + 1);
    }
  }
  return t;
}

void expect_near(const std::vector<float>& a, const std::vector<float>& b, float tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], tol) << "logit " << i;
}

class Removed : public ::testing::TestWithParam<std::string> {};

TEST_P(Removed, EqualsDenseModelWithZeroedWeights) {
  const ModelConfig cfg = tiny_config(GetParam());
  const TensorMap dense = random_model(cfg, 3);
  // Layer 0: two heads and three neurons; layer 1: every head (attention sublayer = its bias) and every neuron.
  Removal r;
  r.heads = {{1, 3}, {0, 1, 2, 3}};
  r.neurons = {{0, 5, 47}, {}};
  for (int j = 0; j < kFfn; ++j) r.neurons[1].push_back(j);
  ModelConfig pc = cfg;
  TensorMap pt = own_f32(dense);
  remove_structures(pc, pt, r);
  const auto blocks = encoder_blocks(pc, pt);
  EXPECT_EQ(pt.at(blocks[0].q + ".weight").shape(), (Shape{2 * kHd, kHidden}));
  EXPECT_EQ(pt.at(blocks[0].o + ".weight").shape(), (Shape{kHidden, 2 * kHd}));
  EXPECT_EQ(pt.at(blocks[0].ffn_in + ".weight").shape(), (Shape{kFfn - 3, kHidden}));
  EXPECT_EQ(pt.at(blocks[0].ffn_out + ".weight").shape(), (Shape{kHidden, kFfn - 3}));
  EXPECT_EQ(pt.at(blocks[1].k + ".weight").shape(), (Shape{0, kHidden}));
  EXPECT_EQ(pt.at(blocks[1].ffn_out + ".weight").shape(), (Shape{kHidden, 0}));
  EXPECT_EQ(pc.raw["pruned_heads"], nlohmann::json::parse(R"({"0": [1, 3], "1": [0, 1, 2, 3]})"));
  EXPECT_EQ(pc.raw["shrink_pruning"]["intermediate_sizes"], nlohmann::json::parse("[45, 0]"));
  const BatchEncoding b = random_batch(3, 9, 7);
  const auto pruned = engine_logits(pc, pt, b);
  expect_near(pruned, engine_logits(cfg, zeroed(cfg, dense, r), b), 2e-5f);
  // The removed weights mattered: the untouched dense model gives other logits.
  const auto full = engine_logits(cfg, dense, b);
  double diff = 0;
  for (size_t i = 0; i < full.size(); ++i) diff = std::max(diff, double(std::fabs(full[i] - pruned[i])));
  EXPECT_GT(diff, 1e-3);
}

TEST_P(Removed, TrainableEncoderAgreesWithEngine) {
  const ModelConfig cfg = tiny_config(GetParam());
  Removal r;
  r.heads = {{2}, {0, 1, 2, 3}};
  r.neurons = {{}, {1, 2, 3, 10, 20}};
  ModelConfig pc = cfg;
  TensorMap pt = own_f32(random_model(cfg, 4));
  remove_structures(pc, pt, r);
  const BatchEncoding b = random_batch(4, 7, 9);
  train::TrainableEncoder enc(pc, pt, 1);
  train::EncoderBatch eb{b.batch, b.seq, b.ids, b.type_ids, b.attention_mask, {}};
  std::mt19937 rng(0);
  const train::Var logits = enc.forward(eb, false, rng).logits;
  expect_near(std::vector<float>(logits.data(), logits.data() + logits.numel()), engine_logits(pc, pt, b), 2e-5f);
  // A training step reaches the pruned shapes (the zero-head layer trains its output bias only).
  train::backward(train::cross_entropy(enc.forward(eb, true, rng).logits, {0, 1, 2, 0}));
  const std::string o_bias = encoder_blocks(pc, pt)[1].o + ".bias";
  ASSERT_TRUE(enc.param(o_bias).grad().defined());
  double g = 0;
  for (int i = 0; i < kHidden; ++i) g += std::fabs(enc.param(o_bias).grad().data<float>()[i]);
  EXPECT_GT(g, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Families, Removed, ::testing::Values("bert", "distilbert"));

TEST(Prune, PrunedHeadsKeepOriginalIdsAcrossSteps) {
  ModelConfig cfg = tiny_config("bert");
  TensorMap t = own_f32(random_model(cfg, 5));
  remove_structures(cfg, t, {{{1}, {}}, {{}, {}}});
  // Current index 1 of layer 0 is now original head 2.
  remove_structures(cfg, t, {{{1}, {3}}, {{}, {}}});
  EXPECT_EQ(cfg.raw["pruned_heads"], nlohmann::json::parse(R"({"0": [1, 2], "1": [3]})"));
  const EncoderShape s = encoder_shape(cfg);
  EXPECT_EQ(s.heads[0], (std::vector<int>{0, 3}));
  EXPECT_EQ(s.heads[1], (std::vector<int>{0, 1, 2}));
  EXPECT_THROW(remove_structures(cfg, t, {{{2}, {}}, {{}, {}}}), Error);  // layer 0 has 2 heads left
}

TEST(Prune, SaveLoadRoundTrip) {
  const ModelConfig cfg = tiny_config("bert");
  ModelConfig pc = cfg;
  TensorMap pt = own_f32(random_model(cfg, 6));
  remove_structures(pc, pt, {{{0, 3}, {1}}, {{4, 5, 6}, {}}});
  const BatchEncoding b = random_batch(2, 8, 2);
  const auto before = engine_logits(pc, pt, b);
  auto m = build_model(pc, pt, "in-memory");
  const auto dir = shrink::testing::temp_dir("prune_roundtrip") / "out";
  save_model(*m, dir);
  auto loaded = load_model(dir);
  const Tensor l = dynamic_cast<EncoderModel&>(*loaded).forward(b).logits;
  expect_near(std::vector<float>(l.data<float>(), l.data<float>() + l.numel()), before, 0.f);
  EXPECT_EQ(loaded->config().raw["pruned_heads"], nlohmann::json::parse(R"({"0": [0, 3], "1": [1]})"));
  const EncoderShape s = encoder_shape(loaded->config());
  EXPECT_EQ(s.ffn, (std::vector<int64_t>{kFfn - 3, kFfn}));
  EXPECT_LT(loaded->parameters(), build_model(cfg, random_model(cfg, 6), "x")->parameters());
}

TEST(Prune, EngineRejectsShapesConfigDoesNotDescribe) {
  ModelConfig cfg = tiny_config("bert");
  TensorMap t = own_f32(random_model(cfg, 7));
  ModelConfig pc = cfg;
  remove_structures(pc, t, {{{0}, {}}, {{}, {}}});
  // The tensors lost a head but the config says nothing was pruned.
  try {
    build_model(cfg, t, "m");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention.self.query.weight"), std::string::npos) << e.what();
  }
  pc.raw["pruned_heads"] = {{"0", {9}}};
  EXPECT_THROW(encoder_shape(pc), Error);
  pc.raw["pruned_heads"] = {{"5", {0}}};
  EXPECT_THROW(encoder_shape(pc), Error);
}

TEST(Prune, CubicScheduleByHand) {
  // s_t = s_f + (s_i - s_f)(1 - t/n)^3, n = 4, s_f = 0.5.
  EXPECT_DOUBLE_EQ(cubic_sparsity(0.5, 0, 4), 0.0);
  EXPECT_DOUBLE_EQ(cubic_sparsity(0.5, 1, 4), 0.5 - 0.5 * 27.0 / 64.0);  // 0.2890625
  EXPECT_DOUBLE_EQ(cubic_sparsity(0.5, 2, 4), 0.4375);
  EXPECT_DOUBLE_EQ(cubic_sparsity(0.5, 3, 4), 0.4921875);
  EXPECT_DOUBLE_EQ(cubic_sparsity(0.5, 4, 4), 0.5);
  EXPECT_DOUBLE_EQ(cubic_sparsity(0.5, 2, 4, 0.1), 0.45);
  EXPECT_DOUBLE_EQ(cubic_sparsity(0.8, 1, 1), 0.8);
  EXPECT_THROW(cubic_sparsity(0.5, 1, 0), Error);
}

TEST(Prune, MagnitudeMasksByHand) {
  TensorMap t;
  t["m.layer.0.a.weight"] = Tensor::from_f32({1, -2, 3, 4}, {2, 2});
  t["m.layer.1.b.weight"] = Tensor::from_f32({0.5f, 5, -6, -0.1f}, {2, 2});
  t["m.embeddings.word_embeddings.weight"] = Tensor::from_f32({0, 0}, {1, 2});
  t["m.layer.0.LayerNorm.weight"] = Tensor::from_f32({1, 1}, {2});
  const auto names = default_prunable_weights(t);
  EXPECT_EQ(names, (std::vector<std::string>{"m.layer.0.a.weight", "m.layer.1.b.weight"}));
  // Global 0.5: the four smallest |w| over both (0.1, 0.5, 1, 2) go.
  const Masks g = magnitude_masks(t, names, 0.5, true);
  EXPECT_EQ(g.at("m.layer.0.a.weight"), (std::vector<uint8_t>{0, 0, 1, 1}));
  EXPECT_EQ(g.at("m.layer.1.b.weight"), (std::vector<uint8_t>{0, 1, 1, 0}));
  // Per layer 0.25: one value of each.
  const Masks p = magnitude_masks(t, names, 0.25, false);
  EXPECT_EQ(p.at("m.layer.0.a.weight"), (std::vector<uint8_t>{0, 1, 1, 1}));
  EXPECT_EQ(p.at("m.layer.1.b.weight"), (std::vector<uint8_t>{1, 1, 1, 0}));
  TensorMap o = own_f32(t);
  apply_masks(o, g);
  EXPECT_EQ(o.at("m.layer.1.b.weight").data<float>()[2], -6.f);
  EXPECT_EQ(o.at("m.layer.1.b.weight").data<float>()[0], 0.f);
  EXPECT_DOUBLE_EQ(zero_fraction(o, names), 0.5);
  EXPECT_THROW(magnitude_masks(t, names, 1.0, true), Error);
  EXPECT_THROW(magnitude_masks(t, names, -0.1, true), Error);
  EXPECT_THROW(magnitude_masks(t, {}, 0.5, true), Error);
}

TEST(Prune, MagnitudeHitsSparsityAndKeepsLargest) {
  const ModelConfig cfg = tiny_config("bert");
  const TensorMap t = own_f32(random_model(cfg, 8));
  const auto names = default_prunable_weights(t);
  EXPECT_EQ(names.size(), static_cast<size_t>(6 * kLayers));  // q k v o intermediate output per layer
  for (bool global : {true, false}) {
    TensorMap o = own_f32(t);
    const Masks m = magnitude_masks(o, names, 0.7, global);
    apply_masks(o, m);
    int64_t n = 0, zeros = 0;
    float max_dropped = 0, min_kept = 1e30f;
    for (const auto& name : names) {
      const float* w = t.at(name).data<float>();
      const auto& mk = m.at(name);
      int64_t nz = 0;
      float md = 0, mk_min = 1e30f;
      for (size_t i = 0; i < mk.size(); ++i) {
        (mk[i] ? mk_min : md) = mk[i] ? std::min(mk_min, std::fabs(w[i])) : std::max(md, std::fabs(w[i]));
        nz += !mk[i];
      }
      if (!global) {
        EXPECT_EQ(nz, std::llround(0.7 * static_cast<double>(mk.size()))) << name;
        EXPECT_LE(md, mk_min) << name;
      }
      max_dropped = std::max(max_dropped, md);
      min_kept = std::min(min_kept, mk_min);
      n += static_cast<int64_t>(mk.size());
      zeros += nz;
    }
    if (global) {
      EXPECT_EQ(zeros, std::llround(0.7 * static_cast<double>(n)));
      EXPECT_LE(max_dropped, min_kept);
    }
    EXPECT_NEAR(zero_fraction(o, names), 0.7, 1e-3);
  }
}

TEST(Prune, NormImportanceRemovesTheWeakestHeadAndNeuron) {
  const ModelConfig cfg = tiny_config("bert");
  TensorMap t = own_f32(random_model(cfg, 9));
  const auto blocks = encoder_blocks(cfg, t);
  // Head 2 of layer 0 and neuron 7 of layer 1 made tiny: the plan must pick exactly them.
  for (const std::string* n : {&blocks[0].q, &blocks[0].k, &blocks[0].v})
    for (int64_t i = 2 * kHd * kHidden; i < 3 * kHd * kHidden; ++i) t[*n + ".weight"].data<float>()[i] *= 0.01f;
  for (int64_t r = 0; r < kHidden; ++r)
    for (int64_t c = 2 * kHd; c < 3 * kHd; ++c) t[blocks[0].o + ".weight"].data<float>()[r * kHidden + c] *= 0.01f;
  for (int64_t c = 0; c < kHidden; ++c) t[blocks[1].ffn_in + ".weight"].data<float>()[7 * kHidden + c] *= 0.01f;
  for (int64_t r = 0; r < kHidden; ++r) t[blocks[1].ffn_out + ".weight"].data<float>()[r * kFfn + 7] *= 0.01f;
  const Scores s = norm_scores(cfg, t);
  // Head 0 of layer 0 by hand: sqrt of the squares of its q/k/v rows and o columns.
  double h0 = 0;
  for (const std::string* n : {&blocks[0].q, &blocks[0].k, &blocks[0].v})
    for (int64_t i = 0; i < kHd * kHidden; ++i) h0 += std::pow(t[*n + ".weight"].data<float>()[i], 2);
  for (int64_t r = 0; r < kHidden; ++r)
    for (int64_t c = 0; c < kHd; ++c) h0 += std::pow(t[blocks[0].o + ".weight"].data<float>()[r * kHidden + c], 2);
  EXPECT_NEAR(s.heads[0][0], std::sqrt(h0), 1e-4);
  const Removal r = plan_removal(cfg, s, 0.25, 1.0 / kFfn, false);
  EXPECT_EQ(r.heads[0], (std::vector<int>{2}));
  EXPECT_EQ(r.neurons[1], (std::vector<int>{7}));
  EXPECT_EQ(r.heads[1].size(), 1u);
  // Global: 1 of 8 heads goes, the tiny one; layer 1 keeps all four.
  const Removal g = plan_removal(cfg, s, 1.0 / 8, 0.0, true);
  EXPECT_EQ(g.heads[0], (std::vector<int>{2}));
  EXPECT_TRUE(g.heads[1].empty());
  EXPECT_TRUE(g.neurons[0].empty() && g.neurons[1].empty());
}

// Label 1 when token 5 occurs: a rule the tiny model learns in a few epochs.
train::ClassifyData rule_data(int n, uint32_t seed) {
  std::mt19937 gen(seed);
  train::ClassifyData d;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> ids = {1};
    const int len = 3 + static_cast<int>(gen() % 6);
    bool five = false;
    for (int t = 0; t < len; ++t) {
      int32_t id = 6 + static_cast<int32_t>(gen() % (kVocab - 6));
      if (i % 2 == 0 && t == len / 2) id = 5;
      five |= id == 5;
      ids.push_back(id);
    }
    ids.push_back(2);
    d.ids.push_back(ids);
    d.labels.push_back(five ? 1 : 0);
  }
  return d;
}

TEST(Prune, TaylorScoresAreZeroForDeadHeads) {
  ModelConfig cfg = tiny_config("bert");
  cfg.num_labels = 2;
  cfg.raw["num_labels"] = 2;
  TensorMap t = own_f32(random_model(cfg, 10));
  const auto blocks = encoder_blocks(cfg, t);
  for (const std::string* n : {&blocks[1].q, &blocks[1].k, &blocks[1].v})
    for (int64_t i = kHd * kHidden; i < 2 * kHd * kHidden; ++i) t[*n + ".weight"].data<float>()[i] = 0.f;
  for (int64_t r = 0; r < kHidden; ++r)
    for (int64_t c = kHd; c < 2 * kHd; ++c) t[blocks[1].o + ".weight"].data<float>()[r * kHidden + c] = 0.f;
  train::TrainableEncoder enc(cfg, t, 0);
  const Scores s = taylor_scores(enc, rule_data(40, 1), 2, 16);
  EXPECT_EQ(s.heads[1][1], 0.0);
  for (int h : {0, 2, 3}) EXPECT_GT(s.heads[1][h], 0.0);
  const Removal r = plan_removal(cfg, s, 0.25, 0.0, false);
  EXPECT_EQ(r.heads[1], (std::vector<int>{1}));
}

TEST(Prune, GradualScheduleKeepsLastGoodModel) {
  ModelConfig cfg = tiny_config("bert");
  cfg.num_labels = 2;
  cfg.raw["num_labels"] = 2;
  const TensorMap dense = random_model(cfg, 12);
  const auto tr = rule_data(160, 2), va = rule_data(60, 3);
  PruneOptions opt;
  opt.sparsity = 0.5;
  opt.steps = 2;
  opt.train.epochs = 1;
  opt.train.batch = 16;
  opt.train.patience = 0;
  // A budget nothing can meet: the first step is rejected and the dense model comes back.
  opt.max_drop = -1000;
  PruneResult none = prune_classifier(cfg, dense, tr, va, opt);
  EXPECT_TRUE(none.stopped_early);
  ASSERT_EQ(none.steps.size(), 1u);
  EXPECT_FALSE(none.steps[0].accepted);
  EXPECT_NEAR(none.steps[0].drop_points, 100 * (none.dense_accuracy - none.steps[0].val_accuracy), 1e-9);
  EXPECT_EQ(count_parameters(none.tensors), count_parameters(dense));
  // Any drop allowed: both steps run; the ramp reaches half of the heads and neurons in every layer.
  opt.max_drop = 1000;
  std::vector<double> targets;
  PruneResult all = prune_classifier(cfg, dense, tr, va, opt, [&](const PruneStep& s) { targets.push_back(s.target); });
  EXPECT_FALSE(all.stopped_early);
  EXPECT_EQ(targets, (std::vector<double>{cubic_sparsity(0.5, 1, 2), 0.5}));
  const EncoderShape s = encoder_shape(all.config);
  for (int l = 0; l < kLayers; ++l) {
    EXPECT_EQ(s.heads[l].size(), 2u);
    EXPECT_EQ(s.ffn[l], kFfn / 2);
  }
  EXPECT_NEAR(all.steps.back().achieved, 0.5, 0.02);  // biases of o / ffn_out stay: slightly under half
  // The result loads in the engine and matches the trainable model.
  train::TrainableEncoder enc(all.config, all.tensors, 0);
  EXPECT_NEAR(train::accuracy(enc, va), all.steps.back().val_accuracy, 1e-9);
  // Magnitude keeps its zeros through recovery.
  opt.method = Method::Magnitude;
  opt.steps = 1;
  PruneResult mag = prune_classifier(cfg, dense, tr, va, opt);
  EXPECT_NEAR(zero_fraction(mag.tensors, default_prunable_weights(mag.tensors)), 0.5, 1e-3);
}

TEST(Prune, ErrorsNameTheProblem) {
  EXPECT_THROW(parse_method("random"), Error);
  EXPECT_THROW(parse_importance("fisher"), Error);
  ModelConfig cfg = tiny_config("bert");
  const TensorMap t = random_model(cfg, 13);
  PruneOptions opt;
  opt.sparsity = 1.0;
  train::ClassifyData empty;
  try {
    prune_classifier(cfg, t, empty, empty, opt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sparsity"), std::string::npos);
  }
  ModelConfig llama = cfg;
  llama.model_type = "llama";
  EXPECT_THROW(encoder_blocks(llama, t), Error);
}

TEST(Prune, CliOneShotStructuredAndErrors) {
  const ModelConfig cfg = tiny_config("bert");
  const auto root = shrink::testing::temp_dir("prune_cli");
  save_model(*build_model(cfg, random_model(cfg, 14), "in-memory"), root / "dense");
  const auto out = root / "pruned";
  auto r = shrink::testing::run_cli(fmt::format("prune {} --method structured --sparsity 0.5 --out {} --json",
                                                (root / "dense").string(), out.string()));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_LT(j["parameters"].get<int64_t>(), j["parameters_before"].get<int64_t>());
  auto m = load_model(out);
  const EncoderShape s = encoder_shape(m->config());
  for (int l = 0; l < kLayers; ++l) {
    EXPECT_EQ(s.heads[l].size(), 2u);
    EXPECT_EQ(s.ffn[l], kFfn / 2);
  }
  for (const char* bad : {"--method structured --sparsity 1.0", "--method pick --sparsity 0.5",
                          "--method structured --importance taylor", "--method structured --heads-only --ffn-only"}) {
    const auto bad_out = root / "bad";
    r = shrink::testing::run_cli(fmt::format("prune {} {} --out {}", (root / "dense").string(), bad, bad_out.string()));
    EXPECT_NE(r.code, 0) << bad;
    EXPECT_NE(r.err.find("error"), std::string::npos) << bad << ": " << r.err;
    EXPECT_FALSE(std::filesystem::exists(bad_out)) << bad;
  }
}

}  // namespace
}  // namespace shrink::prune
