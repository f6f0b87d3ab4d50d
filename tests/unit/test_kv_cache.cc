// Decoder runtime: the INT8 KV cache (format KV8) against the fp32 cache on stories260K (llama2.c reference logits,
// tiny Shakespeare top-1 and perplexity) and a synthetic GPT-2, and the fused decode linears (Linear::forward_rows,
// ops::linear_fused) against the unfused path.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/core/parallel.h>
#include <shrink/eval/perplexity.h>
#include <shrink/kernels/gemm.h>
#include <shrink/models/generate.h>
#include <shrink/models/model.h>
#include <shrink/models/synth.h>
#include <shrink/ops/linear.h>
#include <shrink/ops/ops.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "unit/test_util.h"

namespace shrink {
namespace {

using testing::fixture;

// Bounds from measurements on AMD EPYC (Zen 5), printed by the tests as "[ kv8 ]" (measured -> bound):
// - stories260K decode of the 69 reference tokens, int8 vs fp32 cache: max abs logit diff 0.755 -> 1.0 (logits span
//   about +-15); int8 vs the llama2.c reference at its 5 recorded positions 0.306 -> 0.5 (fp32: 1e-5).
// - tiny Shakespeare, 8 windows of 512 tokens (4,088 predictions): top-1 changed at 4.84% of positions -> 6%;
//   perplexity +0.047% -> 0.5%. The keys carry most of it (run with only keys quantized, top-1 differs from the int8
//   cache at 2.1% of positions; with only values quantized, at 4.9%). The brief's target of <= 1% top-1 changes is
//   not met on this model (head_dim 8, out-of-domain text, ppl 68: many near-ties); perplexity (< 1%) is.
// - gpt2-tiny (random weights, std 0.02), 100 decode steps: max abs logit diff 1.6e-3 -> 5e-3.
constexpr double kStoriesLogitBound = 1.0;
constexpr double kStoriesRefBound = 0.5;
constexpr double kTop1ChangedBound = 0.06;
constexpr double kPplRelBound = 0.005;
constexpr double kGpt2LogitBound = 5e-3;

std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

struct Stories : testing::StoriesSuite {
  // Token-by-token decode of `ids` (every position's logits).
  static std::vector<float> decode_all(const std::vector<int32_t>& ids, KvCacheType type) {
    const int64_t V = dec().config().vocab_size;
    KvCache cache = dec().new_cache(static_cast<int64_t>(ids.size()), type);
    std::vector<float> logits(ids.size() * V);
    for (size_t p = 0; p < ids.size(); ++p) dec().forward(cache, &ids[p], 1, &logits[p * V], false);
    return logits;
  }
};

TEST_F(Stories, CacheBytesByType) {
  // stories260K: 5 layers, 4 KV heads of 8. fp32: 2 (K, V) x 5 x 512 x 32 x 4 bytes; int8: 32 codes + 4 fp32 scales.
  KvCache f = dec().new_cache(512, KvCacheType::F32), q = dec().new_cache(512, KvCacheType::Int8);
  EXPECT_EQ(f.kv_bytes(), size_t{2 * 5 * 512 * 32 * 4});
  EXPECT_EQ(q.kv_bytes(), size_t{2 * 5 * 512 * (32 + 4 * 4)});
  EXPECT_EQ(dec().kv_cache_bytes(512, KvCacheType::F32), f.kv_bytes());
  EXPECT_EQ(dec().kv_cache_bytes(512, KvCacheType::Int8), q.kv_bytes());
  EXPECT_EQ(q.type, KvCacheType::Int8);
  EXPECT_TRUE(q.k.empty() && q.v.empty());
  // The one-argument form follows the model's default type.
  dec().set_kv_cache_type(KvCacheType::Int8);
  EXPECT_EQ(dec().new_cache(16).type, KvCacheType::Int8);
  dec().set_kv_cache_type(KvCacheType::F32);
  EXPECT_EQ(dec().new_cache(16).type, KvCacheType::F32);
  EXPECT_EQ(parse_kv_cache_type("int8"), KvCacheType::Int8);
  EXPECT_THROW(parse_kv_cache_type("int4"), Error);
}

TEST_F(Stories, StoreQuantizesRowsByTheReference) {
  // Rows written into an int8 cache are quantize_row_s8_ref of each (position, KV head) row of 8 values.
  KvCache c = dec().new_cache(16, KvCacheType::Int8);
  const auto k = random_vector(3 * 32, 5), v = random_vector(3 * 32, 6);
  c.store(2, 4, 3, k.data(), v.data(), 32);
  for (int t = 0; t < 3; ++t)
    for (int g = 0; g < 4; ++g) {
      const float* row = k.data() + t * 32 + g * 8;
      float amax = 0;
      for (int i = 0; i < 8; ++i) amax = std::max(amax, std::fabs(row[i]));
      const float scale = c.k_scale[(2 * 4 + g) * 16 + 4 + t];
      EXPECT_FLOAT_EQ(scale, amax / 127.0f);
      for (int i = 0; i < 8; ++i) {
        const int8_t code = c.k8[(2 * 16 + 4 + t) * 32 + g * 8 + i];
        EXPECT_EQ(code, static_cast<int8_t>(std::lround(row[i] / scale))) << t << " " << g << " " << i;
      }
    }
}

TEST_F(Stories, Int8CacheLogitsNearFp32AndReference) {
  const auto all = (*ref_)["greedy"]["all_token_ids"].get<std::vector<int32_t>>();
  const int64_t V = 512;
  const auto f = decode_all(all, KvCacheType::F32), q = decode_all(all, KvCacheType::Int8);
  double diff = 0;
  for (size_t i = 0; i < f.size(); ++i) diff = std::max(diff, std::fabs(double(f[i]) - q[i]));
  double ref_err = 0;
  for (const char* key : {"pos_0", "pos_1", "pos_2", "pos_3", "last"}) {
    const auto& r = (*ref_)["logits"][key];
    const int pos = r["pos"].get<int>();
    const auto values = r["values"].get<std::vector<float>>();
    for (int64_t i = 0; i < V; ++i) ref_err = std::max(ref_err, std::fabs(double(values[i]) - q[pos * V + i]));
  }
  std::printf("[ kv8 ] stories260K decode of %zu tokens: max |int8 - fp32| logit %.3g, int8 vs llama2.c %.3g\n",
              all.size(), diff, ref_err);
  EXPECT_GT(diff, 0.0) << "the int8 cache should not be bit-identical to fp32 (is it used?)";
  EXPECT_LE(diff, kStoriesLogitBound);
  EXPECT_LE(ref_err, kStoriesRefBound);
}

TEST_F(Stories, Int8CacheTop1AndPerplexityOnTinyShakespeare) {
  std::string text = read_text_file(fixture("text/tinyshakespeare.txt"));
  text.resize(40000);
  auto ids = model_->require_tokenizer().encode(text, true);
  const int64_t ctx = 512, V = 512, windows = 8;
  ASSERT_GE(static_cast<int64_t>(ids.size()), ctx * windows);
  int64_t changed = 0, scored = 0;
  double nll_f = 0, nll_q = 0;
  KvCache cf = dec().new_cache(ctx, KvCacheType::F32), cq = dec().new_cache(ctx, KvCacheType::Int8);
  std::vector<float> lf(ctx * V), lq(ctx * V);
  for (int64_t w = 0; w < windows; ++w) {
    cf.reset();
    cq.reset();
    const int32_t* x = ids.data() + w * ctx;
    dec().forward(cf, x, ctx, lf.data(), true);
    dec().forward(cq, x, ctx, lq.data(), true);
    for (int64_t j = 0; j + 1 < ctx; ++j) {
      changed += argmax(&lf[j * V], V) != argmax(&lq[j * V], V);
      nll_f += token_nll(&lf[j * V], V, x[j + 1]);
      nll_q += token_nll(&lq[j * V], V, x[j + 1]);
      ++scored;
    }
  }
  const double share = double(changed) / scored;
  const double ppl_f = std::exp(nll_f / scored), ppl_q = std::exp(nll_q / scored);
  const double rel = std::fabs(ppl_q - ppl_f) / ppl_f;
  std::printf(
      "[ kv8 ] tiny Shakespeare %lld positions: top-1 changed %lld (%.3f%%), ppl fp32 %.5f int8 %.5f (%+.3f%%)\n",
      static_cast<long long>(scored), static_cast<long long>(changed), 100 * share, ppl_f, ppl_q,
      100 * (ppl_q - ppl_f) / ppl_f);
  EXPECT_LE(share, kTop1ChangedBound);
  EXPECT_LE(rel, kPplRelBound);
  // Through perplexity() with the model's default type set to int8 (the path `shrink ppl --kv-cache int8` takes).
  dec().set_kv_cache_type(KvCacheType::Int8);
  ids.resize(ctx * windows);
  const PerplexityResult r = perplexity(dec(), ids, ctx);
  dec().set_kv_cache_type(KvCacheType::F32);
  EXPECT_NEAR(r.ppl, ppl_q, 1e-9 * ppl_q);
}

TEST_F(Stories, FusedDecodeEqualsUnfused) {
  const auto all = (*ref_)["greedy"]["all_token_ids"].get<std::vector<int32_t>>();
  for (KvCacheType type : {KvCacheType::F32, KvCacheType::Int8}) {
    ops::set_linear_fusion(false);
    const auto plain = decode_all(all, type);
    ops::set_linear_fusion(true);
    const auto fused = decode_all(all, type);
    EXPECT_EQ(plain, fused) << kv_cache_type_name(type);
  }
}

// A synthetic GPT-2 (random weights, preset gpt2-tiny): int8 vs fp32 cache, fused vs unfused.
TEST(Gpt2Decode, Int8CacheAndFusion) {
  const auto dir = testing::temp_dir("kv_gpt2");
  synth_model(find_synth_preset("gpt2-tiny"), dir, 7);
  auto model = load_model(dir);
  auto& dec = dynamic_cast<DecoderModel&>(*model);
  const int64_t V = dec.config().vocab_size, n = 100;
  std::vector<int32_t> ids(n);
  std::mt19937 rng(3);
  for (auto& t : ids) t = static_cast<int32_t>(rng() % V);
  auto run = [&](KvCacheType type) {
    KvCache cache = dec.new_cache(n, type);
    std::vector<float> logits(n * V);
    for (int64_t p = 0; p < n; ++p) dec.forward(cache, &ids[p], 1, &logits[p * V], false);
    return logits;
  };
  const auto f = run(KvCacheType::F32), q = run(KvCacheType::Int8);
  double diff = 0;
  for (size_t i = 0; i < f.size(); ++i) diff = std::max(diff, std::fabs(double(f[i]) - q[i]));
  std::printf("[ kv8 ] gpt2-tiny decode of %lld tokens: max |int8 - fp32| logit %.3g\n", static_cast<long long>(n),
              diff);
  EXPECT_GT(diff, 0.0);
  EXPECT_LE(diff, kGpt2LogitBound);
  ops::set_linear_fusion(false);
  const auto plain = run(KvCacheType::F32);
  ops::set_linear_fusion(true);
  EXPECT_EQ(plain, f);
}

// ---- Linear::forward_rows of the dense fp32 Linear and ops::linear_fused ----

std::unique_ptr<Linear> random_dense(int64_t out, int64_t in, bool bias, uint32_t seed) {
  const Tensor w = Tensor::from_f32(random_vector(out * in, seed), {out, in});
  const Tensor b = Tensor::from_f32(random_vector(out, seed + 1), {out});
  return make_dense_linear(w, bias ? &b : nullptr);
}

TEST(DenseForwardRows, SlicesEqualForwardExactly) {
  for (int64_t out : {1, 17, 63, 64, 65, 130, 200}) {
    for (int64_t in : {1, 7, 33, 100}) {
      for (bool bias : {false, true}) {
        auto l = random_dense(out, in, bias, static_cast<uint32_t>(out * 131 + in));
        for (int64_t m = 1; m <= 4; ++m) {
          const auto x = random_vector(m * in, static_cast<uint32_t>(m));
          std::vector<float> want(m * out), got(m * out, 7.0f);
          l->forward(x.data(), m, want.data());
          // Ranges cut panels anywhere (16- and 64-wide panels): [0, 5), [5, 16), [16, 70), [70, out).
          const std::vector<int64_t> cuts = {0, std::min<int64_t>(5, out), std::min<int64_t>(16, out),
                                             std::min<int64_t>(70, out), out};
          for (size_t c = 0; c + 1 < cuts.size(); ++c)
            ASSERT_TRUE(l->forward_rows(x.data(), m, got.data(), cuts[c], cuts[c + 1]));
          EXPECT_EQ(got, want) << "out " << out << " in " << in << " m " << m << " bias " << bias;
          // And against the double-precision reference (forward itself is tested in test_linear.cc).
          std::vector<float> ref(m * out);
          const auto w = random_vector(out * in, static_cast<uint32_t>(out * 131 + in));
          const auto b = random_vector(out, static_cast<uint32_t>(out * 131 + in) + 1);
          kernels::sgemm_ref(m, out, in, x.data(), in, w.data(), in, bias ? b.data() : nullptr, ref.data(), out);
          for (int64_t i = 0; i < m * out; ++i) ASSERT_NEAR(got[i], ref[i], 1e-5 * (1 + in));
        }
      }
    }
  }
}

TEST(DenseForwardRows, DeclinesBatchesAndChecksRanges) {
  auto l = random_dense(10, 8, true, 1);
  std::vector<float> x(5 * 8, 1.0f), y(5 * 10);
  EXPECT_FALSE(l->forward_rows(x.data(), 5, y.data(), 0, 10));
  EXPECT_THROW(l->forward_rows(x.data(), 1, y.data(), 4, 11), Error);
  EXPECT_THROW(l->forward_rows(x.data(), 1, y.data(), 6, 5), Error);
}

// A Linear without forward_rows, and one that accepts the probe but declines real slices.
class PlainLinear final : public Linear {
 public:
  PlainLinear(std::unique_ptr<Linear> inner, bool accept_probe) : inner_(std::move(inner)), probe_(accept_probe) {
    in_ = inner_->in_features();
    out_ = inner_->out_features();
  }
  void forward(const float* x, int64_t m, float* y) const override { inner_->forward(x, m, y); }
  bool forward_rows(const float*, int64_t, float*, int64_t o0, int64_t o1) const override { return probe_ && o0 == o1; }
  std::string scheme() const override { return "test"; }
  size_t weight_bytes() const override { return inner_->weight_bytes(); }

 private:
  std::unique_ptr<Linear> inner_;
  bool probe_;
};

TEST(LinearFused, EqualsSeparateForwardsForAnyThreadCount) {
  const int64_t in = 300;
  auto a = random_dense(700, in, false, 11), b = random_dense(130, in, true, 12), c = random_dense(64, in, true, 13);
  const int before = num_threads();
  for (int64_t m : {1, 3, 4, 6}) {
    const auto x = random_vector(m * in, 21);
    std::vector<float> ya(m * 700), yb(m * 130), yc(m * 64);
    a->forward(x.data(), m, ya.data());
    b->forward(x.data(), m, yb.data());
    c->forward(x.data(), m, yc.data());
    for (int threads : {1, 2, 3}) {
      set_num_threads(threads);
      std::vector<float> ga(m * 700, 7.0f), gb(m * 130, 7.0f), gc(m * 64, 7.0f);
      ops::linear_fused(x.data(), m, {{a.get(), ga.data()}, {b.get(), gb.data()}, {c.get(), gc.data()}});
      EXPECT_EQ(ga, ya) << m << " " << threads;
      EXPECT_EQ(gb, yb) << m << " " << threads;
      EXPECT_EQ(gc, yc) << m << " " << threads;
    }
  }
  set_num_threads(before);
}

TEST(LinearFused, FallsBackForLayersWithoutRowSlices) {
  const int64_t in = 256;
  auto d = random_dense(512, in, true, 31);
  PlainLinear none(random_dense(512, in, true, 31), false), liar(random_dense(512, in, true, 31), true);
  const auto x = random_vector(2 * in, 4);
  std::vector<float> want(2 * 512);
  d->forward(x.data(), 2, want.data());
  for (const Linear* l : {static_cast<const Linear*>(&none), static_cast<const Linear*>(&liar)}) {
    std::vector<float> got(2 * 512, 7.0f), dense(2 * 512, 7.0f);
    ops::linear_fused(x.data(), 2, {{d.get(), dense.data()}, {l, got.data()}});
    EXPECT_EQ(got, want);
    EXPECT_EQ(dense, want);
  }
  auto other = random_dense(8, in + 1, false, 2);
  std::vector<float> y(2 * 512), z(2 * 8);
  EXPECT_THROW(ops::linear_fused(x.data(), 2, {{d.get(), y.data()}, {other.get(), z.data()}}), Error);
}

}  // namespace
}  // namespace shrink
