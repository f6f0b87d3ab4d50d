// W4A16 kernels (scalar / AVX2 / AVX-512 GEMV, GEMV rows, dequantized-panel GEMM) and the W4 Linear against the
// scalar references of kernels/quant.h (dot_w4_f32_ref, the reference packed Linear), plus the RTN quantizer on
// hand-computed groups.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <shrink/core/cpu.h>
#include <shrink/core/dtype.h>
#include <shrink/core/parallel.h>
#include <shrink/kernels/gemm.h>
#include <shrink/kernels/int4.h>
#include <shrink/kernels/quant.h>
#include <shrink/ops/qlinear.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/int4/w4_kernels.h"
#include "ops/qlinear_impl.h"
#include "unit/test_util.h"

namespace shrink::kernels {
namespace {

// The kernels dequantize exactly (q - z) * s in fp32 and differ from the double-accumulating reference only in
// summation order and fp32 rounding: nmse ~1e-14 here. A wrong nibble, group or zero point gives >= 1e-4.
constexpr double kW4KernelNmse = 1e-9;

// The VNNI GEMV defines its product as W4 times x rounded to int8 per 32 values: d = max|x| / 127 per block,
// q = round-to-nearest-even(x * (127 / max|x|)), x' = q * d. Its reference is the W4 reference on x', at the same
// kW4KernelNmse (against the exact x it is ~1e-5 on average, but unbounded for an output that cancels to ~0).
// x as the GEMV of `isa` sees it.
std::vector<float> gemv_input(Isa isa, const std::vector<float>& x, int64_t m, int64_t ldx, int64_t k) {
  return w4_gemv_rounds_x(isa) ? shrink::testing::round_x_q8(x, m, ldx, k) : x;
}

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(gen);
  return v;
}

TEST(W4Rtn, SymmetricGroupHandComputed) {
  // Largest magnitude -2 maps to code 0: s = -2 / -8 = 0.25 (exact in f16); x / s + 8 rounds half away from zero.
  std::vector<float> x(32, 0.f);
  x[0] = -2.f;    // -8 + 8 = 0
  x[1] = 0.5f;    // 2 + 8 = 10
  x[2] = 1.75f;   // 7 + 8 = 15
  x[3] = -0.3f;   // -1.2 + 8 = 6.8 -> 7
  x[4] = 0.125f;  // 0.5 + 8 = 8.5 -> 9 (half away from zero)
  x[5] = 1.9f;    // 7.6 + 8 = 15.6 -> clamped to 15
  std::vector<uint8_t> codes(16);
  uint16_t s16 = 0;
  quantize_row_w4_ref(x.data(), 32, 32, false, codes.data(), &s16, nullptr);
  EXPECT_EQ(f16_to_f32(s16), 0.25f);
  EXPECT_EQ(codes[0], 0x00 | (10 << 4));
  EXPECT_EQ(codes[1], 15 | (7 << 4));
  EXPECT_EQ(codes[2], 9 | (15 << 4));
  EXPECT_EQ(codes[3], 0x88);  // zeros -> code 8
}

TEST(W4Rtn, AsymmetricGroupHandComputed) {
  // Range [-1, 2]: s = 3 / 15 = 0.2 -> f16 0.199951171875; z = round(1 / s) = round(5.0012) = 5.
  std::vector<float> x(64, 0.f);
  x[0] = -1.f;  // -5.0012 + 5 -> 0
  x[1] = 2.f;   // 10.0024 + 5 -> 15
  x[2] = 0.5f;  // 2.5006 + 5 = 7.5006 -> 8
  x[3] = 0.f;   // -> 5
  std::vector<uint8_t> codes(32);
  uint16_t s16[2];
  uint8_t z[2];
  quantize_row_w4_ref(x.data(), 40, 32, true, codes.data(), s16, z);  // 40 values: second group padded
  EXPECT_EQ(f16_to_f32(s16[0]), 0.199951171875f);
  EXPECT_EQ(z[0], 5);
  EXPECT_EQ(codes[0], 0 | (15 << 4));
  EXPECT_EQ(codes[1], 8 | (5 << 4));
  EXPECT_EQ(codes[2], 5 | (5 << 4));
  // The second group is all zeros (8 real, 24 padding): range [0, 0] -> s = 1, z = 0, codes 0.
  EXPECT_EQ(f16_to_f32(s16[1]), 1.f);
  EXPECT_EQ(z[1], 0);
  EXPECT_EQ(codes[16], 0);
}

struct W4Case {
  PackedLinear packed;
  W4Matrix w;
  std::vector<float> bias;
};

W4Case make_case(int64_t n, int64_t k, int group, bool asym, uint32_t seed) {
  W4Case c;
  const auto wf = random_vector(n * k, seed);
  QuantSpec spec;
  spec.scheme = WeightScheme::W4A16;
  spec.group = group;
  spec.asym = asym;
  c.packed = quantize_linear_weights(Tensor::from_f32(wf, {n, k}), nullptr, spec);
  c.w.codes = c.packed.find("weight_packed")->data<uint8_t>();
  c.w.scales_f16 = c.packed.find("weight_scale")->data<uint16_t>();
  c.w.zero_points = asym ? c.packed.find("weight_zero_point")->data<uint8_t>() : nullptr;
  c.w.n = n;
  c.w.k = k;
  c.w.group = group;
  c.bias = random_vector(n, seed + 7);
  return c;
}

// y[i][j] from dot_w4_f32_ref, in the layout [m][ldy].
std::vector<float> reference(const W4Matrix& w, const std::vector<float>& x, int64_t m, int64_t ldx, const float* bias,
                             int64_t ldy) {
  std::vector<float> y(m * ldy, 0.f);
  const int64_t g = w.groups(), rb = w.row_bytes();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < w.n; ++j)
      y[i * ldy + j] =
          dot_w4_f32_ref(w.codes + j * rb, w.scales_f16 + j * g, w.zero_points ? w.zero_points + j * g : nullptr, w.k,
                         w.group, x.data() + i * ldx) +
          (bias ? bias[j] : 0.f);
  return y;
}

// nmse over the m x n outputs (strided rows); the pad columns of y must stay untouched (NaN sentinels).
void expect_matches(const std::vector<float>& y, const std::vector<float>& ref, int64_t m, int64_t n, int64_t ldy,
                    double bound, const std::string& what) {
  std::vector<float> a, b;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < ldy; ++j) {
      if (j < n) {
        a.push_back(y[i * ldy + j]);
        b.push_back(ref[i * ldy + j]);
      } else {
        ASSERT_TRUE(std::isnan(y[i * ldy + j])) << what << ": wrote past n at [" << i << "][" << j << "]";
      }
    }
  const double e = nmse(a.data(), b.data(), static_cast<int64_t>(a.size()));
  EXPECT_LE(e, bound) << what;
}

std::string fmt_case(Isa isa, int group, bool asym, int64_t m, int64_t n, int64_t k) {
  return fmt::format("{} g{} {} m{} n{} k{}", isa_name(isa), group, asym ? "asym" : "sym", m, n, k);
}

class W4Kernels : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_available(GetParam())) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  }
  void TearDown() override { set_num_threads(0); }
};

const std::vector<int64_t> kIns = {1, 31, 33, 65, 127, 172, 1000};
const std::vector<int64_t> kOuts = {1, 5, 17, 33};

TEST_P(W4Kernels, GemvMatchesReference) {
  const Isa isa = GetParam();
  uint32_t seed = 1;
  for (int group : {32, 64, 128})
    for (bool asym : {false, true})
      for (int64_t k : kIns)
        for (int64_t n : kOuts) {
          const W4Case c = make_case(n, k, group, asym, ++seed);
          for (int64_t m = 1; m <= kGemvMaxRows; ++m) {
            const int64_t ldx = k + 3, ldy = n + 2;  // strided rows
            const auto x = random_vector(m * ldx, seed * 31 + m);
            const float* bias = m % 2 ? c.bias.data() : nullptr;
            const auto ref = reference(c.w, gemv_input(isa, x, m, ldx, k), m, ldx, bias, ldy);
            const std::string what = fmt_case(isa, group, asym, m, n, k);
            std::vector<float> y(m * ldy, NAN);
            set_num_threads(m % 2 ? 1 : 2);
            w4_gemv(c.w, x.data(), m, ldx, bias, y.data(), ldy, isa);
            expect_matches(y, ref, m, n, ldy, kW4KernelNmse, fmt::format("gemv {}", what));
            // Rows in two slices on the calling thread fill the same outputs.
            std::vector<float> yr(m * ldy, NAN);
            w4_gemv_rows(c.w, x.data(), m, ldx, bias, yr.data(), ldy, 0, n / 2, isa);
            w4_gemv_rows(c.w, x.data(), m, ldx, bias, yr.data(), ldy, n / 2, n, isa);
            expect_matches(yr, ref, m, n, ldy, kW4KernelNmse, fmt::format("gemv_rows {}", what));
            // On AVX2 both GEMVs by name: the exact fp32 one and the q8 one (vpmaddubsw) the dispatch picks.
            if (isa == Isa::Avx2) {
              std::vector<float> ye(m * ldy, NAN), yq(m * ldy, NAN);
              detail::w4_gemv_rows_avx2(c.w, x.data(), m, ldx, bias, ye.data(), ldy, 0, n);
              expect_matches(ye, reference(c.w, x, m, ldx, bias, ldy), m, n, ldy, kW4KernelNmse,
                             fmt::format("gemv_rows f32 {}", what));
              detail::w4_gemv_rows_q8_avx2(c.w, x.data(), m, ldx, bias, yq.data(), ldy, 0, n);
              expect_matches(yq, reference(c.w, shrink::testing::round_x_q8(x, m, ldx, k), m, ldx, bias, ldy), m, n,
                             ldy, kW4KernelNmse, fmt::format("gemv_rows q8 {}", what));
            }
            // On AVX-512 both GEMVs by name: the exact fp32 one and the VNNI one (when the CPU has VNNI).
            if (isa == Isa::Avx512) {
              std::vector<float> ye(m * ldy, NAN);
              detail::w4_gemv_rows_avx512(c.w, x.data(), m, ldx, bias, ye.data(), ldy, 0, n);
              expect_matches(ye, reference(c.w, x, m, ldx, bias, ldy), m, n, ldy, kW4KernelNmse,
                             fmt::format("gemv_rows f32 {}", what));
              if (cpu_features().avx512vnni) {
                std::vector<float> yq(m * ldy, NAN);
                detail::w4_gemv_rows_avx512vnni(c.w, x.data(), m, ldx, bias, yq.data(), ldy, 0, n);
                expect_matches(yq, reference(c.w, shrink::testing::round_x_q8(x, m, ldx, k), m, ldx, bias, ldy), m, n,
                               ldy, kW4KernelNmse, fmt::format("gemv_rows q8 {}", what));
              }
            }
          }
        }
}

TEST_P(W4Kernels, GemmMatchesReference) {
  const Isa isa = GetParam();
  uint32_t seed = 100;
  for (int group : {32, 64, 128})
    for (bool asym : {false, true})
      for (int64_t k : {int64_t{1}, int64_t{33}, int64_t{172}, int64_t{1000}})
        for (int64_t n : {int64_t{1}, int64_t{17}, int64_t{65}, int64_t{130}})
          for (int64_t m : {1, 2, 5, 7, 13, 128}) {
            const W4Case c = make_case(n, k, group, asym, ++seed);
            const int64_t ldx = k + 1, ldy = n + 1;
            const auto x = random_vector(m * ldx, seed);
            const float* bias = seed % 2 ? c.bias.data() : nullptr;
            const auto ref = reference(c.w, x, m, ldx, bias, ldy);
            std::vector<float> y(m * ldy, NAN);
            set_num_threads(seed % 3 ? 2 : 1);
            w4_gemm(c.w, x.data(), m, ldx, bias, y.data(), ldy, isa);
            expect_matches(y, ref, m, n, ldy, kW4KernelNmse,
                           fmt::format("gemm {}", fmt_case(isa, group, asym, m, n, k)));
          }
}

// A file written elsewhere may hold anything in the padding nibbles of the last group; they must not count.
TEST_P(W4Kernels, PaddingNibblesAreIgnored) {
  const Isa isa = GetParam();
  for (int group : {32, 128}) {
    W4Case c = make_case(9, 172, group, true, 5);
    std::vector<uint8_t> codes(c.w.codes, c.w.codes + 9 * c.w.row_bytes());
    for (int64_t j = 0; j < 9; ++j)
      for (int64_t b = 172 / 2; b < c.w.row_bytes(); ++b) codes[j * c.w.row_bytes() + b] = 0xff;
    const auto x = random_vector(17 * 172, 9);
    const W4Matrix clean = c.w;
    c.w.codes = codes.data();
    for (int64_t m : {1, 6, 17}) {
      const auto ref =
          reference(clean, m <= kW4GemvPassMaxRows ? gemv_input(isa, x, 17, 172, 172) : x, m, 172, nullptr, 9);
      std::vector<float> y(m * 9, NAN);
      w4_matmul(c.w, x.data(), m, 172, nullptr, y.data(), 9, isa);
      expect_matches(y, ref, m, 9, 9, kW4KernelNmse, fmt::format("padding g{} m{}", group, m));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, W4Kernels, ::testing::Values(Isa::Scalar, Isa::Avx2, Isa::Avx512),
                         [](const ::testing::TestParamInfo<Isa>& i) { return std::string(isa_name(i.param)); });

// The W4 Linear (make_packed_linear, the active ISA) against the reference packed Linear on the same tensors:
// forward for every m, forward_rows for GEMV sizes, packed() is the layer given, weight_bytes counts every tensor.
TEST(W4Linear, MatchesReferenceLinear) {
  uint32_t seed = 500;
  for (const char* scheme : {"w4a16-g32", "w4a16-g64-asym", "w4a16-g128", "w4a16-g128-asym"})
    for (int64_t k : {33, 172, 1000})
      for (int64_t n : {5, 33}) {
        const auto wf = random_vector(n * k, ++seed);
        const auto bf = random_vector(n, seed + 1);
        const Tensor bias = Tensor::from_f32(bf, {n});
        PackedLinear p = quantize_linear_weights(Tensor::from_f32(wf, {n, k}), &bias, parse_quant_spec(scheme));
        const auto fast = make_packed_linear(p);
        const auto ref = shrink::detail::make_reference_packed_linear(p);
        EXPECT_EQ(fast->scheme(), scheme);
        ASSERT_NE(fast->packed(), nullptr);
        EXPECT_EQ(fast->packed()->find("weight_packed")->raw(), p.find("weight_packed")->raw());  // no copy
        size_t bytes = 0;
        for (const auto& [name, t] : p.tensors) bytes += t.nbytes();
        EXPECT_EQ(fast->weight_bytes(), bytes);
        for (int64_t m : {1, 2, 3, 4, 5, 7, 13, 17, 128}) {
          const auto x = random_vector(m * k, seed + m);
          std::vector<float> y(m * n), yr(m * n);
          fast->forward(x.data(), m, y.data());
          // Up to kW4GemvPassMaxRows rows run as GEMV passes (which may round x), beyond as the exact GEMM.
          const auto xr = m <= kW4GemvPassMaxRows ? gemv_input(active_isa(), x, m, k, k) : x;
          ref->forward(xr.data(), m, yr.data());
          const std::string what = fmt::format("{} m{} n{} k{}", scheme, m, n, k);
          EXPECT_LE(nmse(y.data(), yr.data(), m * n), kW4KernelNmse) << what;
          std::vector<float> ys(m * n, NAN);
          if (m <= kGemvMaxRows) {
            ASSERT_TRUE(fast->forward_rows(x.data(), m, ys.data(), 0, 2)) << what;
            ASSERT_TRUE(fast->forward_rows(x.data(), m, ys.data(), 2, n)) << what;
            EXPECT_LE(nmse(ys.data(), yr.data(), m * n), kW4KernelNmse) << "forward_rows " << what;
          } else {
            EXPECT_FALSE(fast->forward_rows(x.data(), m, ys.data(), 0, n)) << what;
          }
        }
      }
}

}  // namespace
}  // namespace shrink::kernels
