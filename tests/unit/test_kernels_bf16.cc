// BF16-weight kernels (scalar / AVX2 / AVX-512 GEMV, GEMV rows, converted-panel GEMM) and the BF16 Linear against
// the scalar references of kernels/quant.h (dot_bf16_f32_ref, the reference packed Linear).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <shrink/core/dtype.h>
#include <shrink/core/parallel.h>
#include <shrink/kernels/bf16.h>
#include <shrink/kernels/gemm.h>
#include <shrink/kernels/quant.h>
#include <shrink/ops/qlinear.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "ops/qlinear_impl.h"

namespace shrink::kernels {
namespace {

// bf16 -> fp32 is exact; the kernels differ from the double reference only in fp32 summation: nmse ~1e-14.
// One wrong element in 1000 already gives ~1e-4.
constexpr double kBf16KernelNmse = 1e-9;

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(gen);
  return v;
}

TEST(Bf16Convert, HandComputed) {
  // 1 + 2^-8 is a tie between bf16 neighbours 1 and 1 + 2^-7: round to even keeps 1; 1 + 3 * 2^-8 rounds up.
  uint16_t q[3];
  const float x[3] = {1.f + 1.f / 256, 1.f + 3.f / 256, -2.5f};
  quantize_row_bf16_ref(x, 3, q);
  EXPECT_EQ(q[0], 0x3f80);
  EXPECT_EQ(q[1], 0x3f82);
  EXPECT_EQ(q[2], 0xc020);
}

struct Bf16Case {
  std::vector<uint16_t> w;
  Bf16Matrix m;
  std::vector<float> bias;
};

Bf16Case make_case(int64_t n, int64_t k, int64_t ld, uint32_t seed) {
  Bf16Case c;
  const auto wf = random_vector(n * ld, seed);
  c.w.resize(n * ld);
  quantize_row_bf16_ref(wf.data(), n * ld, c.w.data());
  c.m = {c.w.data(), n, k, ld};
  c.bias = random_vector(n, seed + 3);
  return c;
}

std::vector<float> reference(const Bf16Matrix& w, const std::vector<float>& x, int64_t m, int64_t ldx,
                             const float* bias, int64_t ldy) {
  std::vector<float> y(m * ldy, 0.f);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < w.n; ++j)
      y[i * ldy + j] = dot_bf16_f32_ref(w.w + j * w.ld, x.data() + i * ldx, w.k) + (bias ? bias[j] : 0.f);
  return y;
}

void expect_matches(const std::vector<float>& y, const std::vector<float>& ref, int64_t m, int64_t n, int64_t ldy,
                    const std::string& what) {
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
  EXPECT_LE(nmse(a.data(), b.data(), static_cast<int64_t>(a.size())), kBf16KernelNmse) << what;
}

std::string fmt_case(Isa isa, int64_t m, int64_t n, int64_t k) {
  return fmt::format("{} m{} n{} k{}", isa_name(isa), m, n, k);
}

class Bf16Kernels : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_available(GetParam())) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  }
  void TearDown() override { set_num_threads(0); }
};

TEST_P(Bf16Kernels, GemvMatchesReference) {
  const Isa isa = GetParam();
  uint32_t seed = 1;
  for (int64_t k : {1, 7, 15, 16, 17, 31, 33, 65, 127, 1000})
    for (int64_t n : {1, 5, 17, 33}) {
      const Bf16Case c = make_case(n, k, k + 2, ++seed);  // strided weight rows
      for (int64_t m = 1; m <= kGemvMaxRows; ++m) {
        const int64_t ldx = k + 1, ldy = n + 3;
        const auto x = random_vector(m * ldx, seed * 17 + m);
        const float* bias = m % 2 ? c.bias.data() : nullptr;
        const auto ref = reference(c.m, x, m, ldx, bias, ldy);
        std::vector<float> y(m * ldy, NAN);
        set_num_threads(m % 2 ? 1 : 2);
        bf16_gemv(c.m, x.data(), m, ldx, bias, y.data(), ldy, isa);
        expect_matches(y, ref, m, n, ldy, fmt::format("gemv {}", fmt_case(isa, m, n, k)));
        std::vector<float> yr(m * ldy, NAN);
        bf16_gemv_rows(c.m, x.data(), m, ldx, bias, yr.data(), ldy, 0, n / 3, isa);
        bf16_gemv_rows(c.m, x.data(), m, ldx, bias, yr.data(), ldy, n / 3, n, isa);
        expect_matches(yr, ref, m, n, ldy, fmt::format("gemv_rows {}", fmt_case(isa, m, n, k)));
      }
    }
}

TEST_P(Bf16Kernels, GemmMatchesReference) {
  const Isa isa = GetParam();
  uint32_t seed = 200;
  for (int64_t k : {1, 7, 17, 33, 127, 1000})
    for (int64_t n : {1, 17, 65, 130})
      for (int64_t m : {1, 3, 5, 7, 13, 128}) {
        const Bf16Case c = make_case(n, k, k, ++seed);
        const int64_t ldx = k + 2, ldy = n + 1;
        const auto x = random_vector(m * ldx, seed);
        const float* bias = seed % 2 ? c.bias.data() : nullptr;
        const auto ref = reference(c.m, x, m, ldx, bias, ldy);
        std::vector<float> y(m * ldy, NAN);
        set_num_threads(seed % 3 ? 2 : 1);
        bf16_gemm(c.m, x.data(), m, ldx, bias, y.data(), ldy, isa);
        expect_matches(y, ref, m, n, ldy, fmt::format("gemm {}", fmt_case(isa, m, n, k)));
      }
}

INSTANTIATE_TEST_SUITE_P(Isa, Bf16Kernels, ::testing::Values(Isa::Scalar, Isa::Avx2, Isa::Avx512),
                         [](const ::testing::TestParamInfo<Isa>& i) { return std::string(isa_name(i.param)); });

TEST(Bf16Linear, MatchesReferenceLinear) {
  uint32_t seed = 900;
  for (int64_t k : {17, 1000})
    for (int64_t n : {5, 33}) {
      const auto wf = random_vector(n * k, ++seed);
      const Tensor bias = Tensor::from_f32(random_vector(n, seed + 1), {n});
      PackedLinear p = quantize_linear_weights(Tensor::from_f32(wf, {n, k}), &bias, parse_quant_spec("bf16"));
      const auto fast = make_packed_linear(p);
      const auto ref = detail::make_reference_packed_linear(p);
      EXPECT_EQ(fast->scheme(), "bf16");
      ASSERT_NE(fast->packed(), nullptr);
      EXPECT_EQ(fast->packed()->find("weight")->raw(), p.find("weight")->raw());  // the one weight copy
      EXPECT_EQ(fast->weight_bytes(), static_cast<size_t>(n * k * 2 + n * 4));
      for (int64_t m : {1, 2, 4, 5, 13, 128}) {
        const auto x = random_vector(m * k, seed + m);
        std::vector<float> y(m * n), yr(m * n);
        fast->forward(x.data(), m, y.data());
        ref->forward(x.data(), m, yr.data());
        const std::string what = fmt::format("m{} n{} k{}", m, n, k);
        EXPECT_LE(nmse(y.data(), yr.data(), m * n), kBf16KernelNmse) << what;
        if (m <= kGemvMaxRows) {
          std::vector<float> ys(m * n, NAN);
          ASSERT_TRUE(fast->forward_rows(x.data(), m, ys.data(), 0, 3));
          ASSERT_TRUE(fast->forward_rows(x.data(), m, ys.data(), 3, n));
          EXPECT_LE(nmse(ys.data(), yr.data(), m * n), kBf16KernelNmse) << "forward_rows " << what;
        }
      }
    }
}

}  // namespace
}  // namespace shrink::kernels
