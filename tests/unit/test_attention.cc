// Attention kernels of every ISA this CPU runs against a naive double-precision attention written here:
// causal prefill/decode with GQA and a strided KV cache, key splits of long decodes, masked encoder rows over a
// fused QKV buffer, all-masked rows (zeros, not NaN), and unusual head sizes. The INT8 KV cache kernels against the
// same naive attention over K/V dequantized by the KV8 scalar reference (quantize/dequantize_row_s8_ref).
#include <gtest/gtest.h>
#include <shrink/core/cpu.h>
#include <shrink/core/parallel.h>
#include <shrink/kernels/attention.h>
#include <shrink/kernels/quant.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace shrink {
namespace {

// Max |out - ref| over outputs (|v| <= 1). Measured maxima on AMD EPYC (Zen 5): scalar 2.3e-7 (float dot products
// and accumulation), AVX2 and AVX-512 1.2e-7; masked encoder rows 1.2e-7 at most. The tests print "[ accuracy ]".
constexpr double kAttentionTol = 6e-7;

bool isa_runs_here(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return f.avx2 && f.fma;
    case Isa::Avx512: return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  }
  return false;
}

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// softmax(scale * q.k_j over allowed j) . v, all in double; zeros when nothing is allowed.
void naive_attend(const float* q, const float* k, const float* v, int64_t kv_stride, int64_t n_keys,
                  const std::vector<bool>& allowed, int hd, double scale, double* out) {
  std::vector<double> s(n_keys);
  double m = -INFINITY;
  for (int64_t j = 0; j < n_keys; ++j) {
    if (!allowed[j]) continue;
    double dot = 0;
    for (int d = 0; d < hd; ++d) dot += static_cast<double>(q[d]) * k[j * kv_stride + d];
    s[j] = dot * scale;
    m = std::max(m, s[j]);
  }
  double sum = 0;
  for (int64_t j = 0; j < n_keys; ++j) sum += allowed[j] ? std::exp(s[j] - m) : 0.0;
  for (int d = 0; d < hd; ++d) {
    double acc = 0;
    for (int64_t j = 0; j < n_keys; ++j)
      if (allowed[j]) acc += std::exp(s[j] - m) * v[j * kv_stride + d];
    out[d] = sum > 0 ? acc / sum : 0.0;
  }
}

// Max |out - naive| of causal attention over `n_tokens` queries from position `start_pos`: q [token][n_heads * hd],
// the keys / values the kernel saw as rows of `kv_stride` floats (the KV8 test passes the dequantized rows), out
// [token][n_heads * hd]. Fails on NaN and on a write past the output (its 5 guard values must still be 7).
double causal_error(const std::vector<float>& out, const std::vector<float>& q, const float* k, const float* v,
                    int64_t kv_stride, int64_t n_tokens, int64_t start_pos, int n_heads, int n_kv_heads, int hd,
                    float scale) {
  const int64_t q_row = int64_t{n_heads} * hd;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(out[n_tokens * q_row + i], 7.0f) << "wrote past the output";
  const int group = n_heads / n_kv_heads;
  double worst = 0;
  std::vector<double> ref(hd);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int64_t keys = start_pos + t + 1;
    const std::vector<bool> allowed(keys, true);
    for (int h = 0; h < n_heads; ++h) {
      const int64_t g = h / group;
      naive_attend(q.data() + t * q_row + h * hd, k + g * hd, v + g * hd, kv_stride, keys, allowed, hd, scale,
                   ref.data());
      for (int d = 0; d < hd; ++d) {
        const float y = out[t * q_row + h * hd + d];
        EXPECT_FALSE(std::isnan(y));
        worst = std::max(worst, std::abs(y - ref[d]));
      }
    }
  }
  return worst;
}

class AttentionIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_runs_here(GetParam())) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  }

  // Causal attention through the threaded driver vs naive, returning the max error.
  double run_causal(int64_t n_tokens, int64_t start_pos, int n_heads, int n_kv_heads, int hd) {
    const int64_t kv_stride = int64_t{n_kv_heads} * hd + 3;  // padded rows: the stride is honoured
    const int64_t positions = start_pos + n_tokens;
    const int64_t q_row = int64_t{n_heads} * hd;
    const auto q = random_vector(n_tokens * q_row, 1 + hd);
    const auto k = random_vector(positions * kv_stride, 2 + hd);
    const auto v = random_vector(positions * kv_stride, 3 + hd);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    std::vector<float> out(n_tokens * q_row + 5, 7.0f);
    kernels::attention_causal(GetParam(), q.data(), n_tokens, start_pos, k.data(), v.data(), kv_stride, n_heads,
                              n_kv_heads, hd, scale, out.data());
    const double worst =
        causal_error(out, q, k.data(), v.data(), kv_stride, n_tokens, start_pos, n_heads, n_kv_heads, hd, scale);
    std::printf("[ accuracy ] causal %s tokens %lld start %lld heads %d/%d hd %d: max err %.3g\n", isa_name(GetParam()),
                static_cast<long long>(n_tokens), static_cast<long long>(start_pos), n_heads, n_kv_heads, hd, worst);
    return worst;
  }

  // The INT8 KV cache driver: K/V quantized per (position, KV head) by the KV8 reference into a padded cache
  // (row stride and scale stride longer than needed), compared with the naive attention over the dequantized rows.
  double run_causal_kv8(int64_t n_tokens, int64_t start_pos, int n_heads, int n_kv_heads, int hd) {
    const int64_t kv_dim = int64_t{n_kv_heads} * hd, kv_stride = kv_dim + 5;
    const int64_t positions = start_pos + n_tokens, scale_stride = positions + 3;
    const int64_t q_row = int64_t{n_heads} * hd;
    const auto q = random_vector(n_tokens * q_row, 11 + hd);
    const auto k = random_vector(positions * kv_dim, 12 + hd);
    const auto v = random_vector(positions * kv_dim, 13 + hd);
    std::vector<int8_t> k8(positions * kv_stride, 99), v8(positions * kv_stride, 99);
    std::vector<float> ks(n_kv_heads * scale_stride, -1.0f), vs(n_kv_heads * scale_stride, -1.0f);
    std::vector<float> kd(positions * kv_dim), vd(positions * kv_dim);  // dequantized, [pos][kv_dim]
    for (int64_t p = 0; p < positions; ++p)
      for (int g = 0; g < n_kv_heads; ++g) {
        const int64_t src = p * kv_dim + g * hd, dst = p * kv_stride + g * hd, sc = g * scale_stride + p;
        kernels::quantize_row_s8_ref(k.data() + src, hd, k8.data() + dst, &ks[sc]);
        kernels::quantize_row_s8_ref(v.data() + src, hd, v8.data() + dst, &vs[sc]);
        kernels::dequantize_row_s8_ref(k8.data() + dst, ks[sc], hd, kd.data() + src);
        kernels::dequantize_row_s8_ref(v8.data() + dst, vs[sc], hd, vd.data() + src);
      }
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    std::vector<float> out(n_tokens * q_row + 5, 7.0f);
    kernels::attention_causal_kv8(GetParam(), q.data(), n_tokens, start_pos, k8.data(), v8.data(), kv_stride, ks.data(),
                                  vs.data(), scale_stride, n_heads, n_kv_heads, hd, scale, out.data());
    const double worst =
        causal_error(out, q, kd.data(), vd.data(), kv_dim, n_tokens, start_pos, n_heads, n_kv_heads, hd, scale);
    std::printf("[ accuracy ] kv8 causal %s tokens %lld start %lld heads %d/%d hd %d: max err %.3g\n",
                isa_name(GetParam()), static_cast<long long>(n_tokens), static_cast<long long>(start_pos), n_heads,
                n_kv_heads, hd, worst);
    return worst;
  }

  // Encoder attention over a fused [T][3 * H * hd] QKV buffer with a key padding mask.
  double run_masked(int64_t T, int n_heads, int hd, const std::vector<int32_t>& mask, bool expect_zero = false) {
    const int64_t row = int64_t{n_heads} * hd, ld = 3 * row;
    const auto qkv = random_vector(T * ld, 4 + hd);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    std::vector<float> out(T * row, 7.0f);
    kernels::attention_masked(GetParam(), qkv.data(), qkv.data() + row, qkv.data() + 2 * row, ld, T, mask.data(),
                              n_heads, hd, scale, out.data());
    std::vector<bool> allowed(T);
    for (int64_t j = 0; j < T; ++j) allowed[j] = mask[j] != 0;
    double worst = 0;
    std::vector<double> ref(hd);
    for (int64_t t = 0; t < T; ++t) {
      for (int h = 0; h < n_heads; ++h) {
        naive_attend(qkv.data() + t * ld + h * hd, qkv.data() + row + h * hd, qkv.data() + 2 * row + h * hd, ld, T,
                     allowed, hd, scale, ref.data());
        for (int d = 0; d < hd; ++d) {
          const float y = out[t * row + h * hd + d];
          EXPECT_FALSE(std::isnan(y));
          if (expect_zero) {
            EXPECT_EQ(y, 0.0f);
          }
          worst = std::max(worst, std::abs(y - ref[d]));
        }
      }
    }
    std::printf("[ accuracy ] masked %s T %lld heads %d hd %d: max err %.3g\n", isa_name(GetParam()),
                static_cast<long long>(T), n_heads, hd, worst);
    return worst;
  }
};

TEST_P(AttentionIsa, CausalPrefillGqa) {
  for (int hd : {8, 64, 80, 128}) {
    EXPECT_LT(run_causal(13, 0, 8, 4, hd), kAttentionTol) << "hd=" << hd;  // 2 query heads per KV head
    EXPECT_LT(run_causal(9, 0, 4, 4, hd), kAttentionTol) << "hd=" << hd;   // multi-head
  }
}

TEST_P(AttentionIsa, CausalPrefillAfterCachedPrefix) {
  for (int hd : {7, 16, 64}) EXPECT_LT(run_causal(7, 21, 6, 2, hd), kAttentionTol) << "hd=" << hd;
}

TEST_P(AttentionIsa, CausalDecode) {
  for (int hd : {8, 64, 80}) {
    for (int64_t pos : {0, 1, 15, 16, 17, 600}) {
      EXPECT_LT(run_causal(1, pos, 8, 4, hd), kAttentionTol) << "hd=" << hd << " pos=" << pos;
      EXPECT_LT(run_causal(1, pos, 8, 1, hd), kAttentionTol) << "hd=" << hd << " pos=" << pos;  // 8 heads share 1
    }
  }
}

TEST_P(AttentionIsa, ChunkedDecodeMergesExactly) {
  // Decode walks the cache in key chunks over all heads and merges them (log-sum-exp); the chunk size follows the
  // thread count, so run it with 1, 2 and 4 threads, short appends of 2-4 tokens, and rows that end inside a chunk.
  const int before = num_threads();
  for (int threads : {1, 2, 4}) {
    set_num_threads(threads);
    EXPECT_LT(run_causal(1, 2047, 4, 1, 64), kAttentionTol) << threads;
    EXPECT_LT(run_causal(1, 1100, 2, 2, 80), kAttentionTol) << threads;
    EXPECT_LT(run_causal(3, 254, 8, 4, 16), kAttentionTol) << threads;
    EXPECT_LT(run_causal(4, 509, 4, 2, 8), kAttentionTol) << threads;
    EXPECT_LT(run_causal(2, 127, 3, 1, 7), kAttentionTol) << threads;
  }
  set_num_threads(before);
}

// The int8 kernels dequantize exactly as the reference does, so the fp32 bound holds against the naive attention
// over the dequantized cache.
TEST_P(AttentionIsa, Kv8PrefillGqaOddHeadDims) {
  for (int hd : {7, 8, 13, 64, 80, 128}) {
    EXPECT_LT(run_causal_kv8(13, 0, 8, 4, hd), kAttentionTol) << "hd=" << hd;
    EXPECT_LT(run_causal_kv8(6, 21, 6, 2, hd), kAttentionTol) << "hd=" << hd;
    EXPECT_LT(run_causal_kv8(9, 0, 4, 4, hd), kAttentionTol) << "hd=" << hd;
  }
}

TEST_P(AttentionIsa, Kv8DecodeContextsAndThreads) {
  const int before = num_threads();
  for (int threads : {1, 2, 4}) {
    set_num_threads(threads);
    for (int hd : {8, 17, 64}) {
      for (int64_t pos : {0, 1, 15, 16, 17, 127, 600}) {
        EXPECT_LT(run_causal_kv8(1, pos, 8, 4, hd), kAttentionTol) << "hd=" << hd << " pos=" << pos;
        EXPECT_LT(run_causal_kv8(1, pos, 8, 1, hd), kAttentionTol) << "hd=" << hd << " pos=" << pos;
      }
    }
    EXPECT_LT(run_causal_kv8(1, 2047, 32, 4, 64), kAttentionTol) << threads;  // TinyLlama's heads at full context
    EXPECT_LT(run_causal_kv8(3, 254, 8, 4, 16), kAttentionTol) << threads;
    EXPECT_LT(run_causal_kv8(4, 509, 4, 2, 9), kAttentionTol) << threads;
  }
  set_num_threads(before);
}

TEST_P(AttentionIsa, Kv8KernelNames) {
  const auto& k = kernels::attention_kernels(GetParam());
  ASSERT_NE(k.attend_kv8, nullptr);
  EXPECT_EQ(std::string(k.kv8_name), std::string("kv8-attend-") + isa_name(GetParam()));
}

TEST_P(AttentionIsa, MaskedEncoderWithPadding) {
  for (int hd : {7, 8, 64, 80}) {
    std::vector<int32_t> mask(37, 1);
    for (int j = 28; j < 37; ++j) mask[j] = 0;  // right padding
    mask[3] = 0;                                // and a hole
    EXPECT_LT(run_masked(37, 3, hd, mask), kAttentionTol) << "hd=" << hd;
    std::vector<int32_t> left(20, 1);
    for (int j = 0; j < 6; ++j) left[j] = 0;  // left padding
    EXPECT_LT(run_masked(20, 2, hd, left), kAttentionTol) << "hd=" << hd;
  }
}

TEST_P(AttentionIsa, MaskedEncoderNoPaddingBertShape) {
  const std::vector<int32_t> mask(128, 1);
  EXPECT_LT(run_masked(128, 12, 64, mask), kAttentionTol);
}

TEST_P(AttentionIsa, NullMaskMeansNoPaddingAndWideHeads) {
  // mask == nullptr must equal an all-ones mask; head_dim 256 takes several 64-float chunks of V.
  for (int hd : {64, 256}) {
    const int64_t T = 21, heads = 2, row = heads * hd;
    const auto qkv = random_vector(T * 3 * row, 9);
    const std::vector<int32_t> ones(T, 1);
    std::vector<float> a(T * row), b(T * row);
    kernels::attention_masked(GetParam(), qkv.data(), qkv.data() + row, qkv.data() + 2 * row, 3 * row, T, nullptr,
                              heads, hd, 0.1f, a.data());
    kernels::attention_masked(GetParam(), qkv.data(), qkv.data() + row, qkv.data() + 2 * row, 3 * row, T, ones.data(),
                              heads, hd, 0.1f, b.data());
    EXPECT_EQ(a, b) << "hd=" << hd;
    EXPECT_LT(run_masked(T, heads, hd, ones), kAttentionTol) << "hd=" << hd;
  }
  EXPECT_LT(run_causal(5, 300, 4, 2, 256), kAttentionTol);
}

TEST_P(AttentionIsa, AllKeysMaskedGivesZerosNotNan) {
  const std::vector<int32_t> mask(19, 0);
  EXPECT_EQ(run_masked(19, 2, 16, mask, /*expect_zero=*/true), 0.0);
}

TEST_P(AttentionIsa, KernelAllMaskedRowStatsAreMinusInfAndZero) {
  // Partial mode (used by the key splits): a query with no allowed key reports max -inf and sum 0.
  const int hd = 16;
  const auto q = random_vector(hd, 1), k = random_vector(5 * hd, 2), v = random_vector(5 * hd, 3);
  const std::vector<int32_t> mask(5, 0);
  std::vector<float> out(hd, 7.0f), scratch(kernels::attend_scratch_floats(1, 5));
  float m = 0, s = 1;
  kernels::AttendArgs a{};
  a.q = q.data();
  a.n_q = 1;
  a.k = k.data();
  a.v = v.data();
  a.kv_stride = hd;
  a.n_keys = 5;
  a.mask = mask.data();
  a.head_dim = hd;
  a.scale = 1.0f;
  a.out = out.data();
  a.row_max = &m;
  a.row_sum = &s;
  a.scratch = scratch.data();
  kernels::attention_kernels(GetParam()).attend(a);
  EXPECT_EQ(m, -INFINITY);
  EXPECT_EQ(s, 0.0f);
  for (float y : out) EXPECT_EQ(y, 0.0f);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, AttentionIsa, ::testing::Values(Isa::Scalar, Isa::Avx2, Isa::Avx512),
                         [](const ::testing::TestParamInfo<Isa>& i) { return std::string(isa_name(i.param)); });

}  // namespace
}  // namespace shrink
