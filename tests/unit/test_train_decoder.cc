// TrainableDecoder: its logits equal the inference engine's LlamaForCausalLM (synthetic GQA model and the real
// stories260K checkpoint, whose llama2.c interleaved q/k rows it re-orders) and llama2.c run.c's logits; a saved
// model loads back through load_model; its gradients match finite differences; LM training learns a toy text.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/eval/perplexity.h>
#include <shrink/models/model.h>
#include <shrink/models/synth.h>
#include <shrink/train/decoder.h>
#include <shrink/train/lm_trainer.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "test_util.h"

namespace shrink::train {
namespace {

using shrink::testing::fixture;
using shrink::testing::temp_dir;

// Engine logits of `batch` sequences, each through a fresh KV cache in one causal pass.
std::vector<float> engine_logits(const Model& m, const std::vector<int32_t>& ids, int64_t batch, int64_t seq) {
  const auto& dec = dynamic_cast<const DecoderModel&>(m);
  const int64_t V = m.config().vocab_size;
  std::vector<float> out(static_cast<size_t>(batch * seq * V));
  for (int64_t b = 0; b < batch; ++b) {
    KvCache cache = dec.new_cache(seq);
    dec.forward(cache, ids.data() + b * seq, seq, out.data() + b * seq * V, true);
  }
  return out;
}

std::vector<int32_t> random_ids(int64_t n, int vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int32_t> ids(n);
  for (auto& t : ids) t = static_cast<int32_t>(gen() % vocab);
  return ids;
}

double max_abs_diff(const float* a, const float* b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

TEST(TrainableDecoder, ForwardEqualsEngineOnSynthGqaModel) {
  const auto dir = temp_dir("decoder_synth");
  synth_model(find_synth_preset("llama-tiny"), dir / "m", 7);
  auto model = load_model(dir / "m");
  ASSERT_LT(model->config().num_kv_heads, model->config().num_heads);  // the preset exercises GQA
  TrainableDecoder dec(model->config(), model->tensors());
  const int64_t B = 2, T = 13, V = model->config().vocab_size;
  const auto ids = random_ids(B * T, static_cast<int>(V), 3);
  const DecoderForward f = dec.forward(ids, B, T);
  ASSERT_EQ(f.logits.numel(), B * T * V);
  ASSERT_EQ(f.hidden.size(), static_cast<size_t>(model->config().num_layers + 1));
  const auto ref = engine_logits(*model, ids, B, T);
  EXPECT_LT(max_abs_diff(f.logits.data(), ref.data(), B * T * V), 1e-4);
}

TEST(TrainableDecoder, ForwardEqualsEngineAndRunCOnStories260K) {
  LoadOptions lo;
  lo.tokenizer = fixture("stories260K/tok512.bin");
  auto model = load_model(fixture("stories260K/stories260K.bin"), lo);
  ASSERT_TRUE(model->config().rope_interleaved);  // llama2.c layout: the decoder must re-order q/k rows
  TrainableDecoder dec(model->config(), model->tensors());
  EXPECT_FALSE(dec.config().rope_interleaved);
  const auto ref = nlohmann::json::parse(read_text_file(fixture("stories260K/reference.json")));
  std::vector<int32_t> ids;
  for (auto& t : ref["greedy"]["all_token_ids"]) ids.push_back(t.get<int32_t>());
  ids.resize(24);
  const int64_t T = static_cast<int64_t>(ids.size()), V = model->config().vocab_size;
  const DecoderForward f = dec.forward(ids, 1, T);
  const auto eng = engine_logits(*model, ids, 1, T);
  EXPECT_LT(max_abs_diff(f.logits.data(), eng.data(), T * V), 1e-4);
  // llama2.c run.c's own logits at positions 0..3 (independent of shrink).
  for (int p = 0; p < 4; ++p) {
    const auto& r = ref["logits"]["pos_" + std::to_string(p)];
    ASSERT_EQ(r["input_token"].get<int32_t>(), ids[p]);
    std::vector<float> want;
    for (auto& v : r["values"]) want.push_back(v.get<float>());
    EXPECT_LT(max_abs_diff(f.logits.data() + p * V, want.data(), V), 1e-4) << "position " << p;
  }
}

TEST(TrainableDecoder, SavedModelLoadsAndComputesTheSameLogits) {
  LoadOptions lo;
  lo.tokenizer = fixture("stories260K/tok512.bin");
  auto model = load_model(fixture("stories260K/stories260K.bin"), lo);
  TrainableDecoder dec(model->config(), model->tensors());
  const auto dir = temp_dir("decoder_save") / "out";
  dec.save(dir, fixture("stories260K/tok512.bin"));
  auto back = load_model(dir);
  ASSERT_NE(back->tokenizer(), nullptr);
  EXPECT_EQ(back->tokenizer()->encode("Once upon a time"), model->tokenizer()->encode("Once upon a time"));
  EXPECT_FALSE(back->config().rope_interleaved);
  const auto ids = random_ids(20, model->config().vocab_size, 5);
  const auto a = engine_logits(*model, ids, 1, 20), b = engine_logits(*back, ids, 1, 20);
  EXPECT_LT(max_abs_diff(a.data(), b.data(), static_cast<int64_t>(a.size())), 1e-4);
}

ModelConfig tiny_llama(bool tied) {
  return parse_config({{"architectures", {"LlamaForCausalLM"}},
                       {"model_type", "llama"},
                       {"vocab_size", 11},
                       {"hidden_size", 8},
                       {"intermediate_size", 12},
                       {"num_hidden_layers", 2},
                       {"num_attention_heads", 2},
                       {"num_key_value_heads", 1},
                       {"max_position_embeddings", 16},
                       {"rms_norm_eps", 1e-5},
                       {"rope_theta", 10000.0},
                       {"tie_word_embeddings", tied},
                       {"hidden_act", "silu"}},
                      "tiny llama");
}

TEST(TrainableDecoder, BackwardMatchesFiniteDifferences) {
  for (bool tied : {false, true}) {
    TrainableDecoder dec(tiny_llama(tied), 3);
    // Larger weights than the 0.02 init, so every path contributes measurably.
    std::mt19937 gen(9);
    std::normal_distribution<float> nd(0.f, 0.4f);
    for (auto& p : dec.parameters())
      if (p.name.find("norm") == std::string::npos)
        for (int64_t i = 0; i < p.var.numel(); ++i) p.var.mutable_data()[i] = nd(gen);
    const std::vector<int32_t> ids = {1, 5, 2, 9, 3, 3, 7, 0, 4, 10};
    const std::vector<int32_t> targets = {5, 2, 9, 3, -1, 7, 0, 4, 10, -1};
    auto loss_value = [&] {
      NoGradGuard ng;
      return double(cross_entropy(dec.forward(ids, 2, 5).logits, targets).item());
    };
    backward(cross_entropy(dec.forward(ids, 2, 5).logits, targets));
    for (auto& p : dec.parameters()) {
      ASSERT_TRUE(p.var.grad().defined()) << p.name;
      const int64_t n = p.var.numel();
      for (int64_t i = 0; i < n; i += std::max<int64_t>(1, n / 6)) {
        float* w = p.var.mutable_data() + i;
        const float saved = *w;
        const float eps = 5e-3f;
        *w = saved + eps;
        const double up = loss_value();
        *w = saved - eps;
        const double down = loss_value();
        *w = saved;
        const double numeric = (up - down) / (2 * eps);
        EXPECT_NEAR(p.var.grad().data<float>()[i], numeric, 2e-3 + 2e-2 * std::fabs(numeric))
            << (tied ? "tied " : "untied ") << p.name << "[" << i << "]";
      }
    }
  }
}

TEST(LmTrainer, LossFallsOnRepeatedTextAndPerplexityAgreesWithEngine) {
  // "abcdefgh" repeated: every next token is determined; a 2-layer model must learn it.
  std::vector<int32_t> stream;
  for (int r = 0; r < 120; ++r)
    for (int c = 0; c < 8; ++c) stream.push_back(c + 1);
  auto [train, val] = split_lm_data(stream, 15, 0.1);
  ASSERT_GT(train.size(), 0u);
  ASSERT_GT(val.size(), 0u);
  TrainableDecoder dec(tiny_llama(false), 1);
  const double before = lm_nll(dec, val);
  LmTrainOptions opt;
  opt.epochs = 12;
  opt.batch = 8;
  opt.lr = 2e-2f;
  opt.patience = 0;
  const LmReport rep = train_lm(dec, train, val, opt);
  EXPECT_NEAR(before, std::log(11.0), 0.2);  // fresh model: about uniform over the 11 tokens
  EXPECT_LT(rep.best_val_ppl, 1.5);          // the sequence is deterministic after the first token
  EXPECT_LT(std::exp(lm_nll(dec, val)), 1.5);
  // The engine scores the trained weights the same way.
  const auto dir = temp_dir("lm_trained") / "m";
  dec.save(dir);
  auto m = load_model(dir);
  std::vector<int32_t> win(val.tokens.begin() + val.starts[0], val.tokens.begin() + val.starts[0] + 16);
  const auto pr = perplexity(dynamic_cast<const DecoderModel&>(*m), win, 16);
  std::vector<int64_t> idx = {0};
  const LmBatch b = make_lm_batch(val, idx);
  NoGradGuard ng;
  const double mine = cross_entropy(dec.forward(b.ids, b.batch, b.seq).logits, b.targets).item();
  EXPECT_NEAR(pr.nll, mine, 1e-4);
}

TEST(TrainableDecoder, MissingTensorIsNamed) {
  TrainableDecoder dec(tiny_llama(false), 3);
  TensorMap t = dec.state();
  t.erase("model.layers.1.mlp.up_proj.weight");
  try {
    TrainableDecoder bad(tiny_llama(false), t);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace shrink::train
