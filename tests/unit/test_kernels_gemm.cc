// fp32 GEMM/GEMV kernels (packed scalar/AVX2/AVX-512, oneDNN) against the scalar reference sgemm_ref.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/kernels/gemm.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace shrink::kernels {
namespace {

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(gen);
  return v;
}

// fp32 accumulation of k products differs from the double reference by at most ~k * eps * sum|x w| (worst case);
// random signs make it ~sqrt(k) * eps. 8 * sqrt(k+1) * eps * sum|x w| leaves room for blocked summation orders
// and still catches a single dropped or duplicated product (>= 1e-3 of the sum for these magnitudes).
void expect_close_to_ref(int64_t m, int64_t n, int64_t k, const std::vector<float>& x, int64_t ldx,
                         const std::vector<float>& w, const float* bias, const std::vector<float>& y, int64_t ldy,
                         const std::string& what) {
  std::vector<float> ref(m * ldy, 0.0f);
  sgemm_ref(m, n, k, x.data(), ldx, w.data(), k, bias, ref.data(), ldy);
  const double tol_scale = 8.0 * std::sqrt(static_cast<double>(k + 1)) * 1.1920929e-07;
  int failures = 0;
  for (int64_t i = 0; i < m && failures < 5; ++i)
    for (int64_t j = 0; j < n && failures < 5; ++j) {
      double abs_sum = bias ? std::fabs(bias[j]) : 0.0;
      for (int64_t p = 0; p < k; ++p) abs_sum += std::fabs(static_cast<double>(x[i * ldx + p]) * w[j * k + p]);
      const double tol = tol_scale * abs_sum + 1e-30;
      const double err = std::fabs(static_cast<double>(y[i * ldy + j]) - ref[i * ldy + j]);
      if (!(err <= tol)) {
        ADD_FAILURE() << what << " m=" << m << " n=" << n << " k=" << k << " y[" << i << "][" << j
                      << "] = " << y[i * ldy + j] << ", reference " << ref[i * ldy + j] << " (|err| " << err
                      << " > tol " << tol << ")";
        ++failures;
      }
    }
}

TEST(SgemmRef, HandComputed) {
  // x = [[1, 2, 3], [4, 5, 6]], W = [[1, 0, -1], [2, 1, 0]], b = [0.5, -1]
  const float x[] = {1, 2, 3, 4, 5, 6}, w[] = {1, 0, -1, 2, 1, 0}, b[] = {0.5f, -1};
  float y[4];
  sgemm_ref(2, 2, 3, x, 3, w, 3, b, y, 2);
  EXPECT_FLOAT_EQ(y[0], 1 - 3 + 0.5f);
  EXPECT_FLOAT_EQ(y[1], 2 + 2 - 1);
  EXPECT_FLOAT_EQ(y[2], 4 - 6 + 0.5f);
  EXPECT_FLOAT_EQ(y[3], 8 + 5 - 1);
}

class PackedGemm : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_available(GetParam())) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  }
  void TearDown() override { set_num_threads(0); }
};

struct Shape3 {
  int64_t m, n, k;
};

// Tails in every direction: n and k below, at and past the vector widths (8/16/64) and the k blocks (256 scalar,
// 768 AVX2/AVX-512), so later k blocks accumulate onto earlier ones.
const std::vector<int64_t> kMs = {1, 2, 3, 4, 5, 6, 7, 13, 129};
const std::vector<int64_t> kNs = {1, 15, 17, 64, 65, 130};
const std::vector<int64_t> kKs = {1, 7, 16, 33, 300, 800};

TEST_P(PackedGemm, AllShapesMatchReference) {
  const Isa isa = GetParam();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int64_t n : kNs)
      for (int64_t k : kKs) {
        const auto w = random_vector(n * k, static_cast<uint32_t>(n * 1000 + k));
        const auto bias = random_vector(n, static_cast<uint32_t>(n + 7));
        const auto packed = PackedWeightsF32::pack(w.data(), DType::F32, n, k, k, isa);
        ASSERT_EQ(packed.nr(), sgemm_panel_width(isa));
        for (int64_t m : kMs) {
          if (threads == 2 && m > 13 && n * k < 4000) continue;  // the large-m path is covered at 1 thread
          const int64_t ldx = k + 3, ldy = n + 5;                // strides past the logical width
          const auto x = random_vector(m * ldx, static_cast<uint32_t>(m * 31 + k));
          for (bool with_bias : {false, true}) {
            std::vector<float> y(m * ldy, 12345.0f);
            const float* b = with_bias ? bias.data() : nullptr;
            sgemm_packed(packed, x.data(), m, ldx, b, y.data(), ldy);
            expect_close_to_ref(m, n, k, x, ldx, w, b, y, ldy,
                                std::string(isa_name(isa)) + " threads=" + std::to_string(threads));
            // Columns past n in each row are not written.
            for (int64_t i = 0; i < m; ++i)
              for (int64_t j = n; j < ldy; ++j) ASSERT_EQ(y[i * ldy + j], 12345.0f);
          }
        }
      }
  }
}

TEST_P(PackedGemm, GemmPathAlsoHandlesSmallM) {
  // sgemm_packed routes m <= 4 to the GEMV; the GEMM micro-kernel must be right for those rows too.
  const Isa isa = GetParam();
  for (int64_t m : {1, 2, 3, 4}) {
    const int64_t n = 70, k = 45;
    const auto w = random_vector(n * k, 3), x = random_vector(m * k, 4), bias = random_vector(n, 5);
    const auto packed = PackedWeightsF32::pack(w.data(), DType::F32, n, k, k, isa);
    std::vector<float> y(m * n);
    sgemm_packed_gemm(packed, x.data(), m, k, bias.data(), y.data(), n);
    expect_close_to_ref(m, n, k, x, k, w, bias.data(), y, n, "gemm path");
  }
}

TEST_P(PackedGemm, LargeShapesMatchReference) {
  const Isa isa = GetParam();
  set_num_threads(2);
  for (Shape3 s : {Shape3{128, 200, 768}, Shape3{13, 100, 1600}, Shape3{1, 1000, 2048}, Shape3{3, 257, 1500}}) {
    const auto w = random_vector(s.n * s.k, 11), x = random_vector(s.m * s.k, 12), bias = random_vector(s.n, 13);
    const auto packed = PackedWeightsF32::pack(w.data(), DType::F32, s.n, s.k, s.k, isa);
    std::vector<float> y(s.m * s.n);
    sgemm_packed(packed, x.data(), s.m, s.k, bias.data(), y.data(), s.n);
    expect_close_to_ref(s.m, s.n, s.k, x, s.k, w, bias.data(), y, s.n, "large");
  }
}

TEST_P(PackedGemm, EmptyKGivesBias) {
  const float bias[3] = {1, -2, 3};
  const auto packed = PackedWeightsF32::pack(bias, DType::F32, 3, 0, 0, GetParam());
  float y[6] = {};
  sgemm_packed(packed, nullptr, 2, 0, bias, y, 3);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(y[i], bias[i % 3]);
}

INSTANTIATE_TEST_SUITE_P(Isa, PackedGemm, ::testing::Values(Isa::Scalar, Isa::Avx2, Isa::Avx512),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

TEST(PackedWeights, RejectsUnsupportedDtypeAndBadShape) {
  const int8_t q[4] = {};
  EXPECT_THROW(PackedWeightsF32::pack(q, DType::I8, 2, 2, 2, Isa::Scalar), Error);
  const float w[4] = {};
  EXPECT_THROW(PackedWeightsF32::pack(w, DType::F32, 2, 2, 1, Isa::Scalar), Error);
  EXPECT_THROW(sgemv_packed(PackedWeightsF32::pack(w, DType::F32, 2, 2, 2, Isa::Scalar), w, 5, 2, nullptr, nullptr, 2),
               Error);
}

TEST(DnnlMatmul, MatchesReference) {
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (Shape3 s : {Shape3{5, 64, 32}, Shape3{13, 65, 33}, Shape3{129, 130, 300}, Shape3{128, 256, 768},
                     Shape3{1, 17, 7}, Shape3{7, 1, 520}}) {
      const auto w = random_vector(s.n * s.k, 21), x = random_vector(s.m * s.k, 22), bias = random_vector(s.n, 23);
      for (bool with_bias : {false, true}) {
        const float* b = with_bias ? bias.data() : nullptr;
        DnnlMatmulF32 mm(w.data(), s.n, s.k, s.k, b);
        std::vector<float> y(s.m * s.n);
        mm.run(x.data(), s.m, y.data());
        expect_close_to_ref(s.m, s.n, s.k, x, s.k, w, b, y, s.n, "oneDNN " + mm.impl_name(s.m));
      }
    }
  }
  set_num_threads(0);
}

}  // namespace
}  // namespace shrink::kernels
