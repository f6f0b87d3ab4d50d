// stories260K parity with llama2.c run.c (../shared/fixtures/stories260K/reference.json): greedy
// continuation token for token, logits at recorded positions, perplexity by the recorded protocol.
#include <gtest/gtest.h>
#include <shrink/core/cpu.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/eval/perplexity.h>
#include <shrink/models/generate.h>
#include <shrink/models/model.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "unit/test_util.h"

namespace shrink {
namespace {

using testing::fixture;

struct Stories : testing::StoriesSuite {};

TEST_F(Stories, ConfigFromHeader) {
  const ModelConfig& c = model_->config();
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_layers, 5);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_TRUE(c.rope_interleaved);
}

TEST_F(Stories, PromptEncoding) {
  const auto ids = model_->require_tokenizer().encode((*ref_)["prompt"].get<std::string>(), true);
  EXPECT_EQ(ids, (*ref_)["prompt_token_ids"].get<std::vector<int32_t>>());
}

TEST_F(Stories, LogitsAtRecordedPositionsOnePass) {
  const auto all = (*ref_)["greedy"]["all_token_ids"].get<std::vector<int32_t>>();
  const int64_t V = 512;
  // One causal pass over all tokens (prefill), and token-by-token decode: both must match.
  for (bool prefill : {true, false}) {
    KvCache cache = dec().new_cache();
    std::vector<float> logits(all.size() * V);
    if (prefill) {
      dec().forward(cache, all.data(), static_cast<int64_t>(all.size()), logits.data(), true);
    } else {
      for (size_t p = 0; p < all.size(); ++p) dec().forward(cache, &all[p], 1, &logits[p * V], false);
    }
    double max_err = 0;
    for (const char* key : {"pos_0", "pos_1", "pos_2", "pos_3", "last"}) {
      const auto& r = (*ref_)["logits"][key];
      const int pos = r["pos"].get<int>();
      ASSERT_EQ(all[pos], r["input_token"].get<int>());
      const auto values = r["values"].get<std::vector<float>>();
      for (int64_t i = 0; i < V; ++i) max_err = std::max(max_err, std::fabs(double(values[i]) - logits[pos * V + i]));
    }
    EXPECT_LE(max_err, 1e-4) << (prefill ? "prefill" : "decode") << " isa=" << isa_name(active_isa());
    RecordProperty(prefill ? "max_abs_err_prefill" : "max_abs_err_decode", std::to_string(max_err));
    std::printf("stories260K logits max abs error (%s): %.3g\n", prefill ? "prefill" : "decode", max_err);
  }
}

TEST_F(Stories, GreedyContinuationTokenForToken) {
  GenerateOptions g;
  g.max_new_tokens = 64;
  g.stop_at_eos = false;
  const auto prompt = (*ref_)["prompt_token_ids"].get<std::vector<int32_t>>();
  GenerateResult r = generate(dec(), prompt, g);
  EXPECT_EQ(r.ids, (*ref_)["greedy"]["generated_token_ids"].get<std::vector<int32_t>>());
  EXPECT_EQ(r.text, (*ref_)["greedy"]["generated_text"].get<std::string>());
}

TEST_F(Stories, PerplexityByRecordedProtocol) {
  const auto& p = (*ref_)["perplexity"];
  const auto ids = p["token_ids"].get<std::vector<int32_t>>();
  PerplexityResult r = perplexity(dec(), ids, p["window"].get<int64_t>());
  EXPECT_EQ(r.tokens, p["n_predictions"].get<int64_t>());
  const double want = p["perplexity"].get<double>();
  EXPECT_NEAR(r.ppl, want, 5e-4 * want) << "4 significant digits";
  EXPECT_NEAR(r.nll, p["mean_nll_nats"].get<double>(), 1e-4);
  const auto per_token = p["per_token_nll_nats"].get<std::vector<double>>();
  double max_err = 0;
  for (size_t i = 0; i < per_token.size(); ++i) max_err = std::max(max_err, std::fabs(per_token[i] - r.token_nll[i]));
  EXPECT_LE(max_err, 1e-4);
  std::printf("stories260K ppl %.7f (reference %.7f), per-token NLL max err %.3g\n", r.ppl, want, max_err);
}

TEST_F(Stories, TokenizerReproducesPerplexityTokens) {
  std::string text = read_text_file(fixture("text/tinyshakespeare.txt"));
  text.resize(8192);
  auto ids = model_->require_tokenizer().encode(text, true);
  const auto& p = (*ref_)["perplexity"];
  EXPECT_EQ(static_cast<int64_t>(ids.size()), p["n_tokens_in_prefix"].get<int64_t>());
  ids.resize(1024);
  EXPECT_EQ(ids, p["token_ids"].get<std::vector<int32_t>>());
}

TEST_F(Stories, ContextOverflowIsAClearError) {
  KvCache cache = dec().new_cache(8);
  std::vector<int32_t> ids(9, 5);
  std::vector<float> logits(512);
  try {
    dec().forward(cache, ids.data(), 9, logits.data(), false);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("context"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace shrink
