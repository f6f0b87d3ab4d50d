// INT8 kernels (kernels/int8.h) on every kernel set this CPU has, against the scalar references of quant.h: the
// integer GEMM core must equal dot_u8s8_ref exactly; activation codes must equal the reference quantizers exactly;
// the dequantizing epilogues and W8A16 paths are held to the double-precision references by nmse.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/kernels/gemm.h>
#include <shrink/kernels/int8.h>
#include <shrink/kernels/quant.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "unit/test_util.h"

namespace shrink::kernels {
namespace {

class Int8Kernels : public ::testing::TestWithParam<Int8Isa> {
 protected:
  void SetUp() override {
    if (!int8_isa_available(GetParam())) GTEST_SKIP() << int8_isa_name(GetParam()) << " not on this CPU";
  }
};

const int64_t kM[] = {1, 2, 3, 4, 5, 7, 13, 128};
const int64_t kK[] = {1, 3, 17, 64, 65, 127, 768, 1000};
const int64_t kN[] = {1, 5, 16, 17, 33, 768};

int64_t round4(int64_t k) {
  return (k + 3) / 4 * 4;
}

std::vector<int8_t> random_s8(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(d(gen));
  return v;
}

std::vector<float> random_f32(size_t n, uint32_t seed, float lo = -2.f, float hi = 2.f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

struct Weights {
  std::vector<int8_t> q;
  std::vector<float> scale;
  PackedWeightsS8 packed;
};

Weights make_weights(int64_t n, int64_t k, uint32_t seed) {
  Weights w{random_s8(n * k, seed), random_f32(n, seed + 1, 0.001f, 0.05f), {}};
  w.packed = PackedWeightsS8::pack(w.q.data(), w.scale.data(), n, k, k);
  return w;
}

TEST(Int8Pack, UnpackGivesTheRowsBackAndSumsAreRowSums) {
  for (int64_t n : kN)
    for (int64_t k : kK) {
      Weights w = make_weights(n, k, 7);
      std::vector<int8_t> back(n * k, 99);
      w.packed.unpack(back.data(), k);
      ASSERT_EQ(back, w.q) << n << "x" << k;
      for (int64_t j = 0; j < n; ++j) {
        int32_t s = 0;
        for (int64_t p = 0; p < k; ++p) s += w.q[j * k + p];
        ASSERT_EQ(w.packed.wsum()[j], s);
        ASSERT_EQ(w.packed.scale()[j], w.scale[j]);
      }
    }
}

TEST(Int8Pack, RefusesMinus128) {
  std::vector<int8_t> q(8 * 5, 3);
  q[3 * 5 + 2] = -128;
  const std::vector<float> s(8, 1.f);
  try {
    PackedWeightsS8::pack(q.data(), s.data(), 8, 5, 5);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 3"), std::string::npos) << e.what();
  }
}

TEST_P(Int8Kernels, DynamicQuantizationMatchesReferenceExactly) {
  const Int8Isa isa = GetParam();
  for (int64_t k : kK) {
    const int64_t m = 5, ldq = round4(k) + 4;
    std::vector<float> x = random_f32(m * k, static_cast<uint32_t>(k));
    for (int64_t j = 0; j < k; ++j) x[1 * k + j] = 0.f;                        // zero row
    for (int64_t j = 0; j < k; ++j) x[2 * k + j] *= 1e30f;                     // huge values
    for (int64_t j = 0; j < k; ++j) x[3 * k + j] *= 1e-30f;                    // tiny values
    for (int64_t j = 0; j < k; j += 2) x[4 * k + j] = (j % 4 ? 0.5f : -0.5f);  // exact halves
    std::vector<uint8_t> q(m * ldq, 7);
    std::vector<float> scales(m);
    quantize_a8_dynamic(isa, x.data(), m, k, k, q.data(), ldq, scales.data());
    for (int64_t i = 0; i < m; ++i) {
      std::vector<uint8_t> ref(k);
      float s;
      int32_t zp;
      quantize_row_a8_dynamic_ref(&x[i * k], k, ref.data(), &s, &zp);
      ASSERT_EQ(scales[i], s) << "row " << i << " k " << k;
      for (int64_t j = 0; j < k; ++j) ASSERT_EQ(q[i * ldq + j], ref[j]) << "row " << i << " k " << k << " j " << j;
      for (int64_t j = k; j < round4(k); ++j) ASSERT_EQ(q[i * ldq + j], 128) << "padding";
    }
  }
}

TEST_P(Int8Kernels, StaticQuantizationMatchesReferenceExactly) {
  const Int8Isa isa = GetParam();
  for (int64_t k : kK) {
    // Values from far below to far above the range, and exact half steps of the scale.
    std::vector<float> x = random_f32(k, static_cast<uint32_t>(k) + 3, -300.f, 300.f);
    const float scale = 0.5f;
    for (int64_t j = 0; j < k; j += 3) x[j] = 0.25f * static_cast<float>(j % 64 - 32);
    for (int32_t zp : {0, 37, 128, 255}) {
      std::vector<uint8_t> q(round4(k), 7), ref(k);
      quantize_a8_static(isa, x.data(), 1, k, k, scale, zp, q.data(), round4(k));
      quantize_row_u8_ref(x.data(), k, scale, zp, ref.data());
      for (int64_t j = 0; j < k; ++j) ASSERT_EQ(q[j], ref[j]) << "k " << k << " zp " << zp << " x " << x[j];
      for (int64_t j = k; j < round4(k); ++j) ASSERT_EQ(q[j], zp);
    }
  }
}

TEST_P(Int8Kernels, IntegerGemmEqualsDotU8S8RefExactly) {
  const Int8Isa isa = GetParam();
  uint32_t seed = 1;
  for (int64_t m : kM)
    for (int64_t k : kK)
      for (int64_t n : kN) {
        if (m * n * k > 30'000'000) continue;  // the largest cases are covered by the m = 128 x n = 33 ones
        const int64_t lda = round4(k) + 8;
        Weights w = make_weights(n, k, ++seed);
        std::mt19937 gen(seed);
        std::uniform_int_distribution<int> d(0, 255);
        std::vector<uint8_t> a(m * lda);
        for (auto& v : a) v = static_cast<uint8_t>(d(gen));
        std::vector<int32_t> c(m * (n + 3), -7);
        gemm_u8s8s32(isa, w.packed, a.data(), m, lda, c.data(), n + 3);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j)
            ASSERT_EQ(c[i * (n + 3) + j], dot_u8s8_ref(&a[i * lda], &w.q[j * k], k))
                << "m " << m << " k " << k << " n " << n << " at " << i << "," << j;
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = n; j < n + 3; ++j) ASSERT_EQ(c[i * (n + 3) + j], -7) << "wrote past n";
      }
}

// a = 255 against +-127 everywhere: every vpmaddubsw pair at its extreme (saturates without the sign trick).
TEST_P(Int8Kernels, IntegerGemmAtExtremesDoesNotSaturate) {
  const Int8Isa isa = GetParam();
  const int64_t m = 7, k = 1000, n = 70;
  std::vector<int8_t> q(n * k);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t p = 0; p < k; ++p)
      q[j * k + p] = static_cast<int8_t>(j % 3 == 0 ? 127 : j % 3 == 1 ? -127 : (p % 2 ? 127 : -127));
  const std::vector<float> s(n, 1.f);
  const PackedWeightsS8 w = PackedWeightsS8::pack(q.data(), s.data(), n, k, k);
  std::vector<uint8_t> a(m * k);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p)
      a[i * k + p] = static_cast<uint8_t>(i == 0 ? 255 : i == 1 ? 0 : i == 2 ? 128 : (p * 37 + i) % 256);
  std::vector<int32_t> c(m * n);
  gemm_u8s8s32(isa, w, a.data(), m, k, c.data(), n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(c[i * n + j], dot_u8s8_ref(&a[i * k], &q[j * k], k)) << i << "," << j;
  EXPECT_EQ(c[0], 255 * 127 * 1000);  // hand-computed
}

// y = a_scale w_scale (sum a w - zp wsum) + bias, in double from the references.
std::vector<double> w8a8_expected(const Weights& w, const std::vector<uint8_t>& a, int64_t lda, const float* a_scale,
                                  int64_t stride, int32_t zp, const std::vector<float>& bias, int64_t m, int64_t n,
                                  int64_t k) {
  std::vector<double> y(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      int64_t wsum = 0;
      for (int64_t p = 0; p < k; ++p) wsum += w.q[j * k + p];
      const int64_t acc = dot_u8s8_ref(&a[i * lda], &w.q[j * k], k) - int64_t{zp} * wsum;
      y[i * n + j] = static_cast<double>(acc) * a_scale[i * stride] * w.scale[j] + bias[j];
    }
  return y;
}

double nmse_d(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return den == 0 ? num : num / den;
}

// Epilogue error: one int32 -> float rounding, two float products and the bias add per output (~1e-7 relative,
// more where the bias cancels the product); one dropped or wrong product out of k <= 1000 costs ~1e-6.
constexpr double kW8A8EpilogueNmse = 1e-10;
// W8A16: fp32 accumulation over k <= 1000 products (relative error ~ k eps / sqrt(k)).
constexpr double kW8A16Nmse = 1e-11;

TEST_P(Int8Kernels, W8A8EpilogueMatchesReference) {
  const Int8Isa isa = GetParam();
  uint32_t seed = 100;
  for (int64_t m : kM)
    for (int64_t k : kK)
      for (int64_t n : kN) {
        if (m * n * k > 30'000'000) continue;
        Weights w = make_weights(n, k, ++seed);
        const std::vector<float> x = random_f32(m * k, seed + 5);
        const std::vector<float> bias = random_f32(n, seed + 6);
        const int64_t ldq = round4(k);
        std::vector<uint8_t> q(m * ldq);
        std::vector<float> scales(m);
        quantize_a8_dynamic(isa, x.data(), m, k, k, q.data(), ldq, scales.data());
        const bool static_act = seed % 2;
        const float st_scale = 0.02f;
        const int32_t st_zp = 101;
        if (static_act) quantize_a8_static(isa, x.data(), m, k, k, st_scale, st_zp, q.data(), ldq);
        const A8Rows a =
            static_act ? A8Rows{q.data(), ldq, &st_scale, 0, st_zp} : A8Rows{q.data(), ldq, scales.data(), 1, 128};
        std::vector<float> y(m * n);
        gemm_u8s8_f32(isa, w.packed, a, m, bias.data(), y.data(), n);
        const auto want = w8a8_expected(w, q, ldq, a.scale, a.scale_stride, a.zero_point, bias, m, n, k);
        ASSERT_LT(nmse_d(y, want), kW8A8EpilogueNmse) << "m " << m << " k " << k << " n " << n;
      }
}

// The rounding by hand: block max 2 -> d = 2/127, x * 63.5 rounded to nearest even; an all-zero block has d = 0;
// a short last block uses its own max.
TEST(Q8Rounding, HandComputed) {
  std::vector<float> x(40, 0.f);
  x[0] = -2.f;      // -127
  x[1] = 0.5f;      // 31.75 -> 32
  x[2] = 1.f;       // 63.5 -> 64 (even)
  x[3] = 0.3f;      // 19.05 -> 19
  x[34] = 0.25f;    // block 1: max 0.25 -> 127
  x[35] = -0.125f;  // -63.5 -> -64 (even)
  std::vector<int8_t> q(40);
  float d[2];
  quantize_row_q8_32_ref(x.data(), 40, q.data(), d);
  EXPECT_FLOAT_EQ(d[0], 2.f / 127.f);
  EXPECT_FLOAT_EQ(d[1], 0.25f / 127.f);
  EXPECT_EQ(q[0], -127);
  EXPECT_EQ(q[1], 32);
  EXPECT_EQ(q[2], 64);
  EXPECT_EQ(q[3], 19);
  EXPECT_EQ(q[4], 0);
  EXPECT_EQ(q[34], 127);
  EXPECT_EQ(q[35], -64);
  std::vector<float> zero(32, 0.f);
  quantize_row_q8_32_ref(zero.data(), 32, q.data(), d);
  EXPECT_EQ(d[0], 0.f);
  EXPECT_EQ(q[0], 0);
}

TEST_P(Int8Kernels, W8A16MatchesReference) {
  const Int8Isa isa = GetParam();
  uint32_t seed = 200;
  for (int64_t m : kM)
    for (int64_t k : kK)
      for (int64_t n : kN) {
        if (m * n * k > 30'000'000) continue;
        Weights w = make_weights(n, k, ++seed);
        const std::vector<float> x = random_f32(m * k, seed + 5);
        const std::vector<float> bias = random_f32(n, seed + 6);
        std::vector<float> y(m * n);
        gemm_w8a16(isa, w.packed, x.data(), m, k, seed % 2 ? bias.data() : nullptr, y.data(), n);
        // The q8 GEMV's product is defined on x rounded to int8 per 32 values.
        const std::vector<float> xs =
            m <= kGemvMaxRows && w8a16_gemv_rounds_x(isa) ? shrink::testing::round_x_q8(x, m, k, k) : x;
        std::vector<double> want(m * n);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j)
            want[i * n + j] = dot_w8_f32_ref(&w.q[j * k], w.scale[j], &xs[i * k], k) + (seed % 2 ? bias[j] : 0.f);
        ASSERT_LT(nmse_d(y, want), kW8A16Nmse) << "m " << m << " k " << k << " n " << n;
      }
}

// Column slices (forward_rows): only [c0, c1) written, each equal to the full call.
TEST_P(Int8Kernels, ColumnSlicesMatchTheFullCall) {
  const Int8Isa isa = GetParam();
  const int64_t k = 65, n = 200;
  Weights w = make_weights(n, k, 5);
  const std::vector<float> bias = random_f32(n, 9);
  for (int64_t m = 1; m <= 4; ++m) {
    const std::vector<float> x = random_f32(m * k, 11 + m);
    std::vector<uint8_t> q(m * round4(k));
    std::vector<float> scales(m);
    quantize_a8_dynamic(isa, x.data(), m, k, k, q.data(), round4(k), scales.data());
    const A8Rows a{q.data(), round4(k), scales.data(), 1, 128};
    std::vector<float> full8(m * n), full16(m * n);
    gemm_u8s8_f32(isa, w.packed, a, m, bias.data(), full8.data(), n);
    gemm_w8a16(isa, w.packed, x.data(), m, k, bias.data(), full16.data(), n);
    for (auto [c0, c1] : {std::pair<int64_t, int64_t>{0, 200}, {3, 70}, {64, 128}, {127, 129}, {150, 151}}) {
      const float sentinel = -12345.f;
      std::vector<float> y8(m * n, sentinel), y16(m * n, sentinel);
      gemm_u8s8_f32_cols(isa, w.packed, a, m, bias.data(), y8.data(), n, c0, c1);
      gemv_w8a16_cols(isa, w.packed, x.data(), m, k, bias.data(), y16.data(), n, c0, c1);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          const bool in = j >= c0 && j < c1;
          ASSERT_EQ(y8[i * n + j], in ? full8[i * n + j] : sentinel) << m << " [" << c0 << "," << c1 << ") " << j;
          ASSERT_EQ(y16[i * n + j], in ? full16[i * n + j] : sentinel) << m << " [" << c0 << "," << c1 << ") " << j;
        }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, Int8Kernels,
                         ::testing::Values(Int8Isa::Scalar, Int8Isa::Avx2, Int8Isa::AvxVnni, Int8Isa::Avx512,
                                           Int8Isa::Avx512Vnni),
                         [](const ::testing::TestParamInfo<Int8Isa>& i) {
                           return std::string(int8_isa_name(i.param));
                         });

}  // namespace
}  // namespace shrink::kernels
