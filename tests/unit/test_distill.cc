// Knowledge distillation: the KD loss against a hand computation, its gradient against the closed form (and the
// high-temperature limit), layer maps, students initialised from exactly the mapped teacher layers, hidden-state
// matching, and tiny `shrink distill` runs end to end (classifier and LM) that write loadable students.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/models/model.h>
#include <shrink/models/synth.h>
#include <shrink/train/distill.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "test_util.h"

namespace shrink::train {
namespace {

using shrink::testing::fixture;
using shrink::testing::run_cli;
using shrink::testing::temp_dir;

std::vector<double> softmax(const std::vector<double>& z, double T) {
  double mx = z[0], s = 0;
  for (double v : z) mx = std::max(mx, v);
  std::vector<double> p;
  for (double v : z) p.push_back(std::exp((v - mx) / T)), s += p.back();
  for (double& v : p) v /= s;
  return p;
}

TEST(Distill, KdLossEqualsHandComputation) {
  // Two rows, three classes, T = 2, alpha = 0.4.
  const std::vector<std::vector<double>> zs = {{1.0, 2.0, 0.0}, {-1.0, 0.5, 3.0}}, zt = {{0.5, 0.5, 2.0}, {0, 1, 2}};
  const std::vector<int32_t> labels = {1, 2};
  const double T = 2, alpha = 0.4;
  double ce = 0, kl = 0;
  for (int r = 0; r < 2; ++r) {
    ce += -std::log(softmax(zs[r], 1)[labels[r]]);
    const auto ps = softmax(zs[r], T), pt = softmax(zt[r], T);
    for (int c = 0; c < 3; ++c) kl += pt[c] * std::log(pt[c] / ps[c]);
  }
  const double want = alpha * ce / 2 + (1 - alpha) * T * T * kl / 2;
  Var s = parameter(Tensor::from_f32({1, 2, 0, -1, 0.5f, 3}, {2, 3}));
  const Tensor t = Tensor::from_f32({0.5f, 0.5f, 2, 0, 1, 2}, {2, 3});
  EXPECT_NEAR(kd_loss(s, t, labels, 2.f, 0.4f).item(), want, 1e-5);
  // alpha = 1 is the hard loss alone, alpha = 0 the soft loss alone.
  EXPECT_NEAR(kd_loss(s, t, labels, 2.f, 1.f).item(), ce / 2, 1e-5);
  EXPECT_NEAR(kd_loss(s, t, labels, 2.f, 0.f).item(), T * T * kl / 2, 1e-5);
}

TEST(Distill, SoftGradientIsClosedFormAndHighTemperatureLimit) {
  const std::vector<double> zs = {0.3, -1.2, 2.0, 0.7}, zt = {1.0, 0.1, -0.5, 0.2};
  const Tensor t = Tensor::from_f32({1.0f, 0.1f, -0.5f, 0.2f}, {1, 4});
  for (double T : {4.0, 200.0}) {
    Var s = parameter(Tensor::from_f32({0.3f, -1.2f, 2.0f, 0.7f}, {1, 4}));
    backward(kd_loss(s, t, {0}, static_cast<float>(T), 0.f));
    // d/dz_s [T^2 KL(p_t || p_s)] = T^2 (p_s - p_t) / T.
    const auto ps = softmax(zs, T), pt = softmax(zt, T);
    for (int c = 0; c < 4; ++c) EXPECT_NEAR(s.grad().data<float>()[c], T * T * (ps[c] - pt[c]) / T, 1e-5) << T;
    if (T > 100) {
      // Hinton's limit: the gradient tends to (centred z_s - centred z_t) / C, i.e. logit matching.
      double ms = 0, mt = 0;
      for (int c = 0; c < 4; ++c) ms += zs[c] / 4, mt += zt[c] / 4;
      for (int c = 0; c < 4; ++c) EXPECT_NEAR(s.grad().data<float>()[c], ((zs[c] - ms) - (zt[c] - mt)) / 4, 5e-3);
    }
  }
}

TEST(Distill, LayerMaps) {
  EXPECT_EQ(default_layer_map(4, 2), (std::vector<int>{0, 3}));
  EXPECT_EQ(default_layer_map(5, 3), (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(default_layer_map(12, 6), (std::vector<int>{0, 2, 4, 7, 9, 11}));
  EXPECT_EQ(default_layer_map(4, 1), (std::vector<int>{3}));
  EXPECT_EQ(default_layer_map(3, 3), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(parse_layer_map("1,3", 4, 2), (std::vector<int>{1, 3}));
  EXPECT_THROW(parse_layer_map("1,4", 4, 2), Error);  // no teacher layer 4
  EXPECT_THROW(parse_layer_map("3,1", 4, 2), Error);  // not increasing
  EXPECT_THROW(parse_layer_map("1", 4, 2), Error);    // one entry per student layer
  EXPECT_THROW(parse_layer_map("1,x", 4, 2), Error);
  EXPECT_THROW(default_layer_map(2, 3), Error);
}

ModelConfig tiny_bert(int layers) {
  return parse_config({{"architectures", {"BertForSequenceClassification"}},
                       {"model_type", "bert"},
                       {"vocab_size", 30},
                       {"max_position_embeddings", 16},
                       {"num_labels", 2},
                       {"hidden_size", 16},
                       {"num_hidden_layers", layers},
                       {"num_attention_heads", 2},
                       {"intermediate_size", 24},
                       {"type_vocab_size", 2},
                       {"layer_norm_eps", 1e-12},
                       {"hidden_act", "gelu"}},
                      "tiny bert");
}

void expect_same(const Var& a, const Var& b, const std::string& what) {
  ASSERT_EQ(a.numel(), b.numel()) << what;
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.data()[i], b.data()[i]) << what << "[" << i << "]";
}

TEST(Distill, StudentStartsFromExactlyTheMappedTeacherLayers) {
  const TrainableEncoder teacher(tiny_bert(4), 3);
  const ModelConfig sc = student_config(teacher.config(), 2, 0, 0);
  const TrainableEncoder student(sc, select_layers(teacher.state(), {1, 3}), 5);
  EXPECT_EQ(student.config().num_layers, 2);
  for (auto& p : student.parameters()) {
    std::string tname = p.name;
    for (auto [s, t] : {std::pair{".layer.0.", ".layer.1."}, std::pair{".layer.1.", ".layer.3."}})
      if (auto pos = tname.find(s); pos != std::string::npos) {
        tname.replace(pos, std::string(s).size(), t);
        break;
      }
    expect_same(p.var, teacher.param(tname), p.name + " <- " + tname);
  }
  // LLaMA names (model.layers.N.), tied embeddings.
  const auto ldir = temp_dir("distill_llama") / "t";
  synth_model(find_synth_preset("llama-tiny"), ldir, 4);
  auto m = load_model(ldir);
  const TrainableDecoder tdec(m->config(), m->tensors());
  const TrainableDecoder sdec(student_config(tdec.config(), 1, 0, 0), select_layers(tdec.state(), {1}));
  EXPECT_EQ(sdec.config().num_layers, 1);
  expect_same(sdec.param("model.layers.0.mlp.down_proj.weight"), tdec.param("model.layers.1.mlp.down_proj.weight"),
              "down_proj");
  expect_same(sdec.param("model.layers.0.self_attn.k_proj.weight"),
              tdec.param("model.layers.1.self_attn.k_proj.weight"), "k_proj");
  expect_same(sdec.param("model.embed_tokens.weight"), tdec.param("model.embed_tokens.weight"), "embeddings");
  EXPECT_FALSE(sdec.has_param("model.layers.1.mlp.down_proj.weight"));
}

TEST(Distill, HiddenLossIsZeroWhereStudentAndTeacherAgree) {
  const TrainableEncoder teacher(tiny_bert(4), 3);
  const TrainableEncoder student(student_config(teacher.config(), 2, 0, 0), select_layers(teacher.state(), {0, 3}), 5);
  EncoderBatch b;
  b.batch = 2;
  b.seq = 5;
  for (int i = 0; i < 10; ++i) b.ids.push_back(1 + (i * 7) % 29), b.mask.push_back(1);
  std::mt19937 rng(0);
  NoGradGuard ng;
  const auto tf = teacher.forward(b, false, rng), sf = student.forward(b, false, rng);
  // Student layer 0 is teacher layer 0 on the same input: identical; student layer 1 (teacher layer 3) sees
  // another input than teacher layer 3 did.
  EXPECT_EQ(hidden_loss(sf.hidden, tf.hidden, {0}, {}).item(), 0.f);
  EXPECT_GT(hidden_loss(sf.hidden, tf.hidden, {0, 3}, {}).item(), 1e-8f);
  // Narrower student: the learned projection maps its width to the teacher's.
  std::vector<NamedParam> extra;
  const auto proj = make_projections(2, 8, 16, 0, extra);
  ASSERT_EQ(proj.size(), 2u);
  EXPECT_EQ(proj[0].shape(), (Shape{16, 8}));
  EXPECT_EQ(extra.size(), 2u);
}

// The first n data rows of the SST-2 fixture (with its header).
std::filesystem::path sst2_head(int n) {
  const auto path = temp_dir("distill_sst2") / "head.tsv";
  std::ifstream in(fixture("sst2/train.tsv"));
  std::ofstream out(path);
  std::string line;
  for (int i = 0; i <= n && std::getline(in, line); ++i) out << line << "\n";
  return path;
}

TEST(DistillCli, ClassifierStudentIsWrittenAndLoads) {
  const auto dir = temp_dir("distill_cls");
  const auto data = sst2_head(200);
  // A small (untrained) 3-layer teacher with a WordPiece vocabulary of the data: the test is about the plumbing.
  const LabeledText raw = read_labeled_tsv(data);
  const auto tok = build_wordpiece_tokenizer(raw.texts, 400);
  shrink::testing::write_bytes(dir / "tokenizer.json", tok.dump());
  ModelConfig tc = tiny_bert(3);
  tc.vocab_size = static_cast<int>(tok["model"]["vocab"].size());
  tc.max_position_embeddings = 32;
  TrainableEncoder(tc, 1).save(dir / "teacher", dir / "tokenizer.json");
  auto r = run_cli("distill --teacher " + (dir / "teacher").string() + " --student-layers 1 --data " + data.string() +
                   " --max-length 32 --epochs 1 --baseline --json --out " + (dir / "student").string());
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* k : {"teacher_accuracy", "student_accuracy", "baseline_accuracy", "teacher_parameters",
                        "student_parameters", "seconds"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["layer_map"], nlohmann::json({2}));  // one student layer: the teacher's last (of 3)
  EXPECT_LT(j["student_parameters"].get<int64_t>(), j["teacher_parameters"].get<int64_t>());
  auto m = load_model(dir / "student");
  EXPECT_EQ(m->config().num_layers, 1);
  ASSERT_NE(m->tokenizer(), nullptr);
  auto c = run_cli("classify " + (dir / "student").string() + " --data " + data.string() + " --json");
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_GT(nlohmann::json::parse(c.out)["accuracy"].get<double>(), 0.4);
}

TEST(DistillCli, LanguageModelStudentLearnsFromStories260K) {
  const auto dir = temp_dir("distill_lm");
  auto r =
      run_cli("distill --teacher " + fixture("stories260K/stories260K.bin").string() + " --tokenizer " +
              fixture("stories260K/tok512.bin").string() + " --data " + fixture("text/tinyshakespeare.txt").string() +
              " --limit 8000 --ctx 32 --batch 16 --epochs 2 --lr 3e-3 --student-layers 3 --json --out " +
              (dir / "student").string());
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["layer_map"], nlohmann::json({0, 2, 4}));
  // Dropping two of five layers hurts; distillation recovers a good part of it.
  EXPECT_LT(j["student_ppl"].get<double>(), 0.8 * j["student_initial_ppl"].get<double>());
  auto m = load_model(dir / "student");
  EXPECT_EQ(m->config().num_layers, 3);
  auto p = run_cli("ppl " + (dir / "student").string() + " --text " + fixture("text/tinyshakespeare.txt").string() +
                   " --max-tokens 100 --ctx 32 --json");
  ASSERT_EQ(p.code, 0) << p.err;
  EXPECT_GT(nlohmann::json::parse(p.out)["ppl"].get<double>(), 1.0);
}

TEST(DistillCli, BadArgumentsAreNamed) {
  const auto dir = temp_dir("distill_bad");
  auto r = run_cli("distill --teacher " + fixture("stories260K/stories260K.bin").string() + " --tokenizer " +
                   fixture("stories260K/tok512.bin").string() + " --data " +
                   fixture("text/tinyshakespeare.txt").string() + " --student-layers 6 --out " + (dir / "s").string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("6 student layers"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "s"));
}

}  // namespace
}  // namespace shrink::train
