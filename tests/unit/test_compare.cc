// compare: KL divergence against hand-computed values, the decoder comparison against llama2.c's perplexity figures
// and against eval/perplexity.h on both models, and the encoder comparison against classification metrics.
#include <gtest/gtest.h>
#include <shrink/compress/quantize.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/eval/compare.h>
#include <shrink/kernels/int8.h>
#include <shrink/models/synth.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "unit/test_util.h"

namespace shrink {
namespace {

using testing::fixture;
using testing::temp_dir;

std::unique_ptr<Model> load_stories() {
  LoadOptions o;
  o.tokenizer = fixture("stories260K/tok512.bin");
  return load_model(fixture("stories260K/stories260K.bin"), o);
}

DecoderModel& dec(Model& m) {
  return dynamic_cast<DecoderModel&>(m);
}

// stories260K, a copy quantized with `scheme`, and the first `n` tokens of tiny Shakespeare.
struct QuantizedStories {
  std::unique_ptr<Model> base, cand;
  std::vector<int32_t> ids;
};
QuantizedStories quantized_stories(const std::string& scheme, size_t n) {
  const std::string text = read_text_file(fixture("text/tinyshakespeare.txt"));
  QuantizedStories q{load_stories(), load_stories(), {}};
  QuantizeOptions o;
  o.scheme = parse_quant_spec(scheme);
  quantize_model(*q.cand, o);
  q.ids = q.base->require_tokenizer().encode(text.substr(0, 2048), true);
  q.ids.resize(n);
  return q;
}

TEST(KlDivergence, HandComputed) {
  // P = softmax(0, ln 3) = (1/4, 3/4), Q = softmax(0, 0) = (1/2, 1/2).
  const float p[2] = {0.f, static_cast<float>(std::log(3.0))}, q[2] = {0.f, 0.f};
  const double want = 0.25 * std::log(0.25 / 0.5) + 0.75 * std::log(0.75 / 0.5);  // 0.1308...
  EXPECT_NEAR(kl_divergence_logits(p, q, 2), want, 1e-7);
  // KL is not symmetric: KL(Q || P) = 1/2 ln(2) + 1/2 ln(2/3).
  EXPECT_NEAR(kl_divergence_logits(q, p, 2), 0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3.0), 1e-7);
  // Logits are defined up to a constant; large ones must not overflow.
  const float p2[2] = {1000.f, 1000.f + static_cast<float>(std::log(3.0))}, q2[2] = {-500.f, -500.f};
  EXPECT_NEAR(kl_divergence_logits(p2, q2, 2), want, 1e-4);
  EXPECT_EQ(kl_divergence_logits(p, p, 2), 0.0);
  // One-hot-ish P against uniform Q over n classes: KL -> ln n.
  std::vector<float> a(512, 0.f), u(512, 0.f);
  a[7] = 100.f;
  EXPECT_NEAR(kl_divergence_logits(a.data(), u.data(), 512), std::log(512.0), 1e-6);
}

TEST(CompareDecoders, SameModelMatchesLlama2cPerplexity) {
  // reference.json: run.c's perplexity over 1024 tokens in two windows of 512.
  const auto ref = nlohmann::json::parse(read_text_file(fixture("stories260K/reference.json")))["perplexity"];
  const auto ids = ref["token_ids"].get<std::vector<int32_t>>();
  auto a = load_stories();
  auto b = load_stories();
  const DecoderComparison r = compare_decoders(dec(*a), dec(*b), ids, ref["window"].get<int64_t>());
  EXPECT_EQ(r.positions, ref["n_predictions"].get<int64_t>());
  EXPECT_EQ(r.base.tokens, r.positions);
  const double want = ref["perplexity"].get<double>();
  EXPECT_NEAR(r.base.ppl, want, 5e-4 * want);
  EXPECT_NEAR(r.candidate.ppl, want, 5e-4 * want);
  EXPECT_EQ(r.kld, 0.0);
  EXPECT_EQ(r.top1_agreement, 1.0);
  EXPECT_EQ(r.base.windows, 2);
}

// Agreement and KLD recomputed from both models' logits, window by window: whole-window forwards, or one token per
// forward (decode), then every position but each window's last. Checks the comparison's position count.
void expect_recomputed(const DecoderModel& base, const DecoderModel& cand, const std::vector<int32_t>& ids, int64_t ctx,
                       bool decode, const DecoderComparison& r) {
  const int64_t V = base.config().vocab_size, total = static_cast<int64_t>(ids.size());
  int64_t agree = 0, n = 0;
  double kld = 0;
  for (int64_t begin = 0; begin < total; begin += ctx) {
    const int64_t len = std::min<int64_t>(ctx, total - begin);
    std::vector<float> lb(len * V), lc(len * V);
    KvCache cb = base.new_cache(ctx), cc = cand.new_cache(ctx);
    if (decode) {
      for (int64_t j = 0; j < len; ++j) {
        base.forward(cb, ids.data() + begin + j, 1, lb.data() + j * V, true);
        cand.forward(cc, ids.data() + begin + j, 1, lc.data() + j * V, true);
      }
    } else {
      base.forward(cb, ids.data() + begin, len, lb.data(), true);
      cand.forward(cc, ids.data() + begin, len, lc.data(), true);
    }
    for (int64_t j = 0; j + 1 < len; ++j, ++n) {
      const float* x = &lb[j * V];
      const float* y = &lc[j * V];
      agree += std::max_element(x, x + V) - x == std::max_element(y, y + V) - y;
      kld += kl_divergence_logits(x, y, V);
    }
  }
  EXPECT_EQ(n, r.positions);
  EXPECT_DOUBLE_EQ(r.top1_agreement, static_cast<double>(agree) / n);
  EXPECT_NEAR(r.kld, kld / n, 1e-12);
}

TEST(CompareDecoders, EachSideIsThePerplexityProtocolAndAgreementCountsArgmaxes) {
  auto [base, cand, ids] = quantized_stories("w4a16-g32", 300);
  const int64_t ctx = 128;  // 3 windows, the last one short
  const DecoderComparison r = compare_decoders(dec(*base), dec(*cand), ids, ctx);
  const PerplexityResult pb = perplexity(dec(*base), ids, ctx), pc = perplexity(dec(*cand), ids, ctx);
  EXPECT_EQ(r.base.token_nll, pb.token_nll);
  EXPECT_EQ(r.candidate.token_nll, pc.token_nll);
  EXPECT_DOUBLE_EQ(r.base.ppl, pb.ppl);
  EXPECT_DOUBLE_EQ(r.candidate.ppl, pc.ppl);
  EXPECT_EQ(r.positions, 127 + 127 + 43);
  expect_recomputed(dec(*base), dec(*cand), ids, ctx, false, r);
  EXPECT_GT(r.kld, 0.0);
  EXPECT_LT(r.top1_agreement, 1.0);
}

// --decode: the same positions, each through a one-token forward. The base (fp32) scores as in the prefill protocol
// up to summation order; agreement and KLD are recomputed here token by token; on a CPU whose W8A16 decode GEMV rounds
// x to int8, the decode path of a W8A16 candidate differs from its prefill path (what --decode is for).
TEST(CompareDecoders, DecodePathScoresOneTokenPerForward) {
  auto [base, cand, ids] = quantized_stories("w8a16", 200);
  const int64_t ctx = 128;
  const DecoderComparison pre = compare_decoders(dec(*base), dec(*cand), ids, ctx);
  const DecoderComparison r = compare_decoders(dec(*base), dec(*cand), ids, ctx, {}, true);
  EXPECT_EQ(r.positions, pre.positions);
  EXPECT_NEAR(r.base.ppl, pre.base.ppl, 1e-4 * pre.base.ppl);
  expect_recomputed(dec(*base), dec(*cand), ids, ctx, true, r);
  if (kernels::w8a16_gemv_rounds_x(kernels::int8_isa_for(active_isa()))) {
    EXPECT_NE(r.kld, pre.kld);
  }
}

using testing::error_of;

TEST(CompareDecoders, Errors) {
  auto a = load_stories();
  const auto dir = temp_dir("cmp_err") / "llama";
  synth_model(find_synth_preset("llama-tiny"), dir, 1);  // vocabulary 1000, not 512
  auto other = load_model(dir);
  const std::vector<int32_t> ids = {1, 403, 407, 261, 378};
  std::string msg = error_of([&] { compare_decoders(dec(*a), dec(*other), ids, 0); });
  EXPECT_NE(msg.find("vocabulary of 512"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1000"), std::string::npos) << msg;
  msg = error_of([&] { compare_decoders(dec(*a), dec(*a), {1}, 0); });
  EXPECT_NE(msg.find("at least 2"), std::string::npos) << msg;
  msg = error_of([&] { compare_decoders(dec(*a), dec(*a), ids, 4096); });
  EXPECT_NE(msg.find("4096"), std::string::npos) << msg;
}

TEST(CompareEncoders, AccuracyOfBothAgreementAndKld) {
  const auto dir = temp_dir("cmp_bert") / "bert";
  synth_model(find_synth_preset("bert-tiny"), dir, 5);
  auto base = load_model(dir);
  auto cand = load_model(dir);
  QuantizeOptions o;
  o.scheme = parse_quant_spec("w4a16-g128");
  o.default_skips = false;  // the classifier too: make the candidate differ
  quantize_model(*cand, o);
  LabeledText data;
  const char* texts[] = {"a fine film", "not good at all", "the plot was thin", "wonderful acting",
                         "it rained",   "boring",          "a classic",         "i would watch it again"};
  for (int i = 0; i < 8; ++i) data.texts.push_back(texts[i]), data.labels.push_back(i % 2);
  const auto& eb = dynamic_cast<const EncoderModel&>(*base);
  const auto& ec = dynamic_cast<const EncoderModel&>(*cand);
  const EncoderComparison same = compare_encoders(eb, eb, data, 32, 3);
  EXPECT_EQ(same.n, 8);
  EXPECT_EQ(same.kld, 0.0);
  EXPECT_EQ(same.top1_agreement, 1.0);
  const EncoderComparison r = compare_encoders(eb, ec, data, 32, 3);
  // Predictions and KL recomputed here, one text at a time (padding must not change a row's logits).
  std::vector<int> pb, pc;
  double kld = 0;
  int agree = 0;
  for (const auto& t : data.texts) {
    const EncoderOutput xb = eb.forward(base->require_tokenizer().encode_batch({t}));
    const EncoderOutput xc = ec.forward(cand->require_tokenizer().encode_batch({t}));
    const float* lb = xb.logits.data<float>();
    const float* lc = xc.logits.data<float>();
    pb.push_back(lb[1] > lb[0]);
    pc.push_back(lc[1] > lc[0]);
    agree += pb.back() == pc.back();
    kld += kl_divergence_logits(lb, lc, 2);
  }
  EXPECT_DOUBLE_EQ(r.base.accuracy, classification_metrics(pb, data.labels, 2).accuracy);
  EXPECT_DOUBLE_EQ(r.candidate.accuracy, classification_metrics(pc, data.labels, 2).accuracy);
  EXPECT_DOUBLE_EQ(r.top1_agreement, agree / 8.0);
  EXPECT_NEAR(r.kld, kld / 8, 1e-5);
  EXPECT_GT(r.kld, 0.0);
}

}  // namespace
}  // namespace shrink
