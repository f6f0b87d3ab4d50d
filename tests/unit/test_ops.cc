// Elementwise ops: hand-computed cases for the scalar references, then every kernel of every ISA this CPU runs
// against its reference over odd lengths and tails, and dense accuracy sweeps of the SIMD exp / GELU / SiLU.
#include <gtest/gtest.h>
#include <shrink/core/cpu.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/kernels/elementwise.h>
#include <shrink/ops/ops.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

namespace shrink {
namespace {

using kernels::ElementwiseKernels;

// Bounds on the relative error |y - ref| / max(|ref|, floor) of each SIMD kernel against its double reference, with
// the maximum measured on AMD EPYC (Zen 5; AVX2 and AVX-512 give the same figures) beside each: about 2x headroom.
// The tests print what they measure ("[ accuracy ]" lines).
constexpr double kRmsnormTol = 4e-7;    // measured 1.56e-7
constexpr double kLayernormTol = 4e-7;  // measured 1.62e-7, relative to |(x - mean) * inv * w| + |b|
constexpr double kSoftmaxTol = 4e-7;    // measured 1.72e-7, every probability (down to 1e-17) keeps its digits
constexpr double kExpTol = 3e-7;        // measured 1.19e-7 (~1 ulp) over [-87, 88.7]
constexpr double kGeluErfTol = 8e-7;    // measured 3.95e-7 (at x = -3.53) over [-13, 13], outputs >= 1e-37
constexpr double kGeluTanhTol = 5e-7;   // measured 2.07e-7 over [-10, 10], outputs >= 1e-37
constexpr double kSiluTol = 4e-7;       // measured 1.67e-7 over [-87, 87]
constexpr double kRopeTol = 3e-7;       // measured 1.14e-7, relative to |x_a| + |x_b| of the pair
constexpr float kNormEps = 1e-5f;

const int64_t kLengths[] = {1, 3, 7, 15, 16, 17, 63, 64, 65, 768, 1000};

bool isa_runs_here(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return f.avx2 && f.fma;
    case Isa::Avx512: return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  }
  return false;
}

std::vector<float> random_vector(int64_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Prints the measured maximum beside the test's name, so the bounds below can be checked against real figures.
void report(const char* what, double worst) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::printf("[ accuracy ] %-10s %-24s max rel err %.3g\n", what, info ? info->name() : "", worst);
}

double rel_err(float y, float ref, double floor) {
  return std::abs(static_cast<double>(y) - ref) / std::max<double>(std::abs(static_cast<double>(ref)), floor);
}

// Buffers with guard floats after the end: kernels must never write past n.
constexpr int kGuard = 16;
constexpr float kGuardValue = 12345.0f;
std::vector<float> guarded(const std::vector<float>& v) {
  std::vector<float> g(v);
  g.resize(v.size() + kGuard, kGuardValue);
  return g;
}
void expect_guard_intact(const std::vector<float>& g, int64_t n, const char* what) {
  for (int i = 0; i < kGuard; ++i) ASSERT_EQ(g[n + i], kGuardValue) << what << ": wrote past the end, n=" << n;
}

// ---------------- Hand-computed cases: the references against the published equations ----------------

TEST(OpsReference, SoftmaxOfZeroAndLn2IsOneThirdTwoThirds) {
  float x[2] = {0.0f, static_cast<float>(std::log(2.0))};
  kernels::softmax_ref(x, 2);
  EXPECT_NEAR(x[0], 1.0 / 3.0, 1e-7);
  EXPECT_NEAR(x[1], 2.0 / 3.0, 1e-7);
}

TEST(OpsReference, SoftmaxIgnoresMinusInfinityAndAllMinusInfinityIsZeros) {
  const float ninf = -std::numeric_limits<float>::infinity();
  float x[3] = {1.0f, ninf, 1.0f};
  kernels::softmax_ref(x, 3);
  EXPECT_FLOAT_EQ(x[0], 0.5f);
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_FLOAT_EQ(x[2], 0.5f);
  float y[2] = {ninf, ninf};
  kernels::softmax_ref(y, 2);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 0.0f);
}

TEST(OpsReference, RmsnormOfConstantVector) {
  // mean(x^2) = c^2, so y = c / sqrt(c^2 + eps) * w.
  const float c = 3.0f;
  std::vector<float> x(5, c), w(5, 2.0f), y(5);
  kernels::rmsnorm_ref(x.data(), w.data(), kNormEps, 5, y.data());
  for (float v : y) EXPECT_NEAR(v, 2.0 * 3.0 / std::sqrt(9.0 + 1e-5), 1e-7);
}

TEST(OpsReference, LayernormByHand) {
  // x = 1..4: mean 2.5, biased variance 1.25.
  const float x[4] = {1, 2, 3, 4}, w[4] = {1, 2, 1, 1}, b[4] = {0.5f, 0, 0, -1};
  float y[4];
  kernels::layernorm_ref(x, w, b, kNormEps, 4, y);
  const double inv = 1.0 / std::sqrt(1.25 + 1e-5);
  EXPECT_NEAR(y[0], -1.5 * inv + 0.5, 1e-6);
  EXPECT_NEAR(y[1], -0.5 * inv * 2, 1e-6);
  EXPECT_NEAR(y[2], 0.5 * inv, 1e-6);
  EXPECT_NEAR(y[3], 1.5 * inv - 1, 1e-6);
}

TEST(OpsReference, ActivationsAtOne) {
  float g = 1.0f, gt = 1.0f, s = 1.0f, gm = -1.0f, gate = 1.0f;
  const float up = 2.0f;
  kernels::gelu_erf_ref(&g, 1);
  kernels::gelu_tanh_ref(&gt, 1);
  kernels::silu_ref(&s, 1);
  kernels::gelu_erf_ref(&gm, 1);
  kernels::swiglu_ref(&gate, &up, 1);
  EXPECT_NEAR(g, 0.8413447460685429, 1e-7);     // Phi(1)
  EXPECT_NEAR(gt, 0.8411919906082768, 1e-7);    // GPT-2 gelu_new(1)
  EXPECT_NEAR(s, 0.7310585786300049, 1e-7);     // sigmoid(1)
  EXPECT_NEAR(gm, -0.15865525393145707, 1e-7);  // -Phi(-1)
  EXPECT_NEAR(gate, 2 * 0.7310585786300049, 2e-7);
}

TEST(OpsReference, ExpOfZeroAndOne) {
  const float x[2] = {0.0f, 1.0f};
  float y[2];
  kernels::exp_ref(x, y, 2);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_NEAR(y[1], 2.718281828459045, 2e-7);
}

TEST(OpsReference, RopeAtPositionZeroIsIdentity) {
  for (bool interleaved : {false, true}) {
    std::vector<float> x = random_vector(3 * 16, -1, 1, 5), y = x;
    kernels::rope_ref(y.data(), 3, 16, 0, 10000.0f, interleaved);
    EXPECT_EQ(x, y) << "interleaved=" << interleaved;
  }
}

TEST(OpsReference, RopeRotatesUnitVectorByPosTimesFrequency) {
  // A unit vector on the first element of pair i comes out as (cos a, sin a), a = pos * theta^(-2i/d).
  const int64_t d = 8, pos = 3;
  for (bool interleaved : {false, true}) {
    for (int64_t i = 0; i < d / 2; ++i) {
      std::vector<float> x(d, 0.0f);
      const int64_t ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + d / 2;
      x[ia] = 1.0f;
      kernels::rope_ref(x.data(), 1, d, pos, 10000.0f, interleaved);
      const double a = pos * std::pow(10000.0, -2.0 * i / d);
      EXPECT_NEAR(x[ia], std::cos(a), 1e-6) << "pair " << i << " interleaved=" << interleaved;
      EXPECT_NEAR(x[ib], std::sin(a), 1e-6) << "pair " << i << " interleaved=" << interleaved;
      for (int64_t j = 0; j < d; ++j) {
        if (j != ia && j != ib) {
          EXPECT_EQ(x[j], 0.0f);
        }
      }
    }
  }
}

TEST(OpsReference, RopeAnglesAreRunCFloatAngles) {
  // llama2.c: freq = 1.0f / powf(10000.0f, head_dim / (float)head_size); val = pos * freq; cosf(val), sinf(val).
  const int64_t d = 64, pos = 511;
  std::vector<float> c(d / 2), s(d / 2);
  kernels::rope_cos_sin(pos, d, 10000.0f, c.data(), s.data());
  for (int64_t i = 0; i < d / 2; ++i) {
    const float freq = 1.0f / powf(10000.0f, static_cast<float>(2 * i) / static_cast<float>(d));
    const float val = static_cast<float>(pos) * freq;
    EXPECT_EQ(c[i], cosf(val));
    EXPECT_EQ(s[i], sinf(val));
  }
}

// ---------------- Every ISA against the references ----------------

class OpsIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_runs_here(GetParam())) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
  }
  const ElementwiseKernels& k() const { return kernels::elementwise_kernels(GetParam()); }
};

TEST_P(OpsIsa, Rmsnorm) {
  double worst = 0;
  for (int64_t n : kLengths) {
    const auto x = random_vector(n, -3, 3, 1 + n), w = random_vector(n, -2, 2, 2 + n);
    std::vector<float> ref(n), y = guarded(std::vector<float>(n));
    kernels::rmsnorm_ref(x.data(), w.data(), kNormEps, n, ref.data());
    k().rmsnorm(x.data(), w.data(), kNormEps, n, y.data());
    expect_guard_intact(y, n, "rmsnorm");
    for (int64_t i = 0; i < n; ++i) worst = std::max(worst, rel_err(y[i], ref[i], 1e-30));
  }
  EXPECT_LT(worst, kRmsnormTol);
  report("rmsnorm", worst);
}

TEST_P(OpsIsa, Layernorm) {
  double worst = 0;
  for (int64_t n : kLengths) {
    // An offset mean checks that x - mean keeps its digits.
    const auto x = random_vector(n, 5, 9, 3 + n), w = random_vector(n, -2, 2, 4 + n), b = random_vector(n, -1, 1, 5);
    std::vector<float> ref(n), y = guarded(std::vector<float>(n));
    kernels::layernorm_ref(x.data(), w.data(), b.data(), kNormEps, n, ref.data());
    k().layernorm(x.data(), w.data(), b.data(), kNormEps, n, y.data());
    expect_guard_intact(y, n, "layernorm");
    double mean = 0, var = 0;
    for (float v : x) mean += v;
    mean /= n;
    for (float v : x) var += (v - mean) * (v - mean);
    const double inv = 1.0 / std::sqrt(var / n + kNormEps);
    for (int64_t i = 0; i < n; ++i) {
      const double scale = std::abs((x[i] - mean) * inv * w[i]) + std::abs(b[i]);
      worst = std::max(worst, std::abs(static_cast<double>(y[i]) - ref[i]) / scale);
    }
  }
  EXPECT_LT(worst, kLayernormTol);
  report("layernorm", worst);
}

TEST_P(OpsIsa, Softmax) {
  double worst = 0;
  for (int64_t n : kLengths) {
    // Spread of 40 so probabilities span ~17 decades.
    const auto x = random_vector(n, -20, 20, 6 + n);
    std::vector<float> ref(x), y = guarded(x);
    kernels::softmax_ref(ref.data(), n);
    k().softmax(y.data(), n);
    expect_guard_intact(y, n, "softmax");
    for (int64_t i = 0; i < n; ++i) worst = std::max(worst, rel_err(y[i], ref[i], 1e-30));
  }
  EXPECT_LT(worst, kSoftmaxTol);
  report("softmax", worst);
}

TEST_P(OpsIsa, SoftmaxMinusInfinityEntries) {
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> x = {ninf, 0.0f, ninf, static_cast<float>(std::log(2.0)), ninf};
  k().softmax(x.data(), 5);
  EXPECT_EQ(x[0], 0.0f);
  EXPECT_NEAR(x[1], 1.0 / 3.0, 1e-7);
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_NEAR(x[3], 2.0 / 3.0, 1e-7);
  std::vector<float> all(17, ninf);
  k().softmax(all.data(), 17);
  for (float v : all) EXPECT_EQ(v, 0.0f);
}

// Unary activations over random inputs of every length, in place.
void check_unary(void (*fast)(float*, int64_t), void (*ref)(float*, int64_t), float lo, float hi, double tol,
                 const char* what) {
  double worst = 0;
  for (int64_t n : kLengths) {
    const auto x = random_vector(n, lo, hi, 7 + n);
    std::vector<float> r(x), y = guarded(x);
    ref(r.data(), n);
    fast(y.data(), n);
    expect_guard_intact(y, n, what);
    for (int64_t i = 0; i < n; ++i) worst = std::max(worst, rel_err(y[i], r[i], 1e-37));
  }
  EXPECT_LT(worst, tol) << what;
  report(what, worst);
}

TEST_P(OpsIsa, GeluErf) {
  check_unary(k().gelu_erf, kernels::gelu_erf_ref, -8, 8, kGeluErfTol, "gelu_erf");
}
TEST_P(OpsIsa, GeluTanh) {
  check_unary(k().gelu_tanh, kernels::gelu_tanh_ref, -8, 8, kGeluTanhTol, "gelu_tanh");
}
TEST_P(OpsIsa, Silu) {
  check_unary(k().silu, kernels::silu_ref, -30, 30, kSiluTol, "silu");
}

TEST_P(OpsIsa, Swiglu) {
  double worst = 0;
  for (int64_t n : kLengths) {
    const auto gate = random_vector(n, -8, 8, 8 + n), up = random_vector(n, -2, 2, 9 + n);
    std::vector<float> r(gate), y = guarded(gate);
    kernels::swiglu_ref(r.data(), up.data(), n);
    k().swiglu(y.data(), up.data(), n);
    expect_guard_intact(y, n, "swiglu");
    for (int64_t i = 0; i < n; ++i) worst = std::max(worst, rel_err(y[i], r[i], 1e-37));
  }
  EXPECT_LT(worst, kSiluTol + 1.2e-7);  // one more rounding (the product with up)
  report("swiglu", worst);
}

TEST_P(OpsIsa, AddIsExact) {
  for (int64_t n : kLengths) {
    const auto x = random_vector(n, -5, 5, 10 + n), y0 = random_vector(n, -5, 5, 11 + n);
    std::vector<float> r(y0), y = guarded(y0);
    kernels::add_ref(r.data(), x.data(), n);
    k().add(y.data(), x.data(), n);
    expect_guard_intact(y, n, "add");
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], r[i]) << "n=" << n << " i=" << i;
  }
}

TEST_P(OpsIsa, Exp) {
  double worst = 0;
  for (int64_t n : kLengths) {
    const auto x = random_vector(n, -87, 88, 12 + n);
    std::vector<float> r(n), y = guarded(std::vector<float>(n));
    kernels::exp_ref(x.data(), r.data(), n);
    k().exp(x.data(), y.data(), n);
    expect_guard_intact(y, n, "exp");
    for (int64_t i = 0; i < n; ++i) worst = std::max(worst, rel_err(y[i], r[i], 1e-37));
  }
  EXPECT_LT(worst, kExpTol);
  report("exp", worst);
}

TEST_P(OpsIsa, ExpSpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  const float x[6] = {-inf, -200.0f, 0.0f, 89.0f, inf, std::numeric_limits<float>::quiet_NaN()};
  float y[6];
  k().exp(x, y, 6);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 1.0f);
  EXPECT_EQ(y[3], inf);
  EXPECT_EQ(y[4], inf);
  EXPECT_TRUE(std::isnan(y[5]));
}

TEST_P(OpsIsa, Rope) {
  const int64_t dims[] = {2, 6, 8, 14, 16, 30, 32, 34, 64, 80, 128};
  double worst = 0;
  for (bool interleaved : {false, true}) {
    for (int64_t d : dims) {
      for (int64_t pos : {0, 1, 17, 1000}) {
        const int64_t heads = 3, n = heads * d;
        const auto x = random_vector(n, -2, 2, static_cast<uint32_t>(13 + d + pos));
        std::vector<float> r(x), y = guarded(x), c(d / 2), s(d / 2);
        kernels::rope_ref(r.data(), heads, d, pos, 10000.0f, interleaved);
        kernels::rope_cos_sin(pos, d, 10000.0f, c.data(), s.data());
        k().rope(y.data(), heads, d, c.data(), s.data(), interleaved);
        expect_guard_intact(y, n, "rope");
        for (int64_t h = 0; h < heads; ++h) {
          for (int64_t i = 0; i < d / 2; ++i) {
            const int64_t a = h * d + (interleaved ? 2 * i : i), b = h * d + (interleaved ? 2 * i + 1 : i + d / 2);
            const double scale = std::abs(x[a]) + std::abs(x[b]);
            worst = std::max(worst, std::abs(static_cast<double>(y[a]) - r[a]) / scale);
            worst = std::max(worst, std::abs(static_cast<double>(y[b]) - r[b]) / scale);
          }
        }
      }
    }
  }
  EXPECT_LT(worst, kRopeTol);
  report("rope", worst);
}

// Dense sweeps: the SIMD approximations over their whole useful range (these are what the bounds above measure).
void sweep_unary(void (*fast)(float*, int64_t), void (*ref)(float*, int64_t), float lo, float hi, double tol,
                 const char* what, Isa isa) {
  const int64_t n = 1 << 21;
  std::vector<float> x(n), r(n);
  for (int64_t i = 0; i < n; ++i) x[i] = lo + (hi - lo) * static_cast<float>(i) / static_cast<float>(n - 1);
  r = x;
  ref(r.data(), n);
  fast(x.data(), n);
  double worst = 0;
  float at = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::abs(r[i]) < 1e-37f) continue;  // denormal results carry fewer digits by definition
    const double e = rel_err(x[i], r[i], 1e-37);
    if (e > worst) {
      worst = e;
      at = lo + (hi - lo) * static_cast<float>(i) / static_cast<float>(n - 1);
    }
  }
  std::printf("[ accuracy ] %-10s %-7s max rel err %.3g at x=%g\n", what, isa_name(isa), worst, at);
  EXPECT_LT(worst, tol) << what << " at x=" << at;
}

void exp_inplace_ref(float* x, int64_t n) {
  kernels::exp_ref(x, x, n);
}
const ElementwiseKernels* g_sweep_table = nullptr;
void exp_inplace_fast(float* x, int64_t n) {
  g_sweep_table->exp(x, x, n);
}

TEST_P(OpsIsa, AccuracySweep) {
  g_sweep_table = &k();
  sweep_unary(exp_inplace_fast, exp_inplace_ref, -87.0f, 88.7f, kExpTol, "exp", GetParam());
  sweep_unary(k().gelu_erf, kernels::gelu_erf_ref, -13.0f, 13.0f, kGeluErfTol, "gelu_erf", GetParam());
  sweep_unary(k().gelu_tanh, kernels::gelu_tanh_ref, -10.0f, 10.0f, kGeluTanhTol, "gelu_tanh", GetParam());
  sweep_unary(k().silu, kernels::silu_ref, -87.0f, 87.0f, kSiluTol, "silu", GetParam());
}

// The threaded drivers (rows and spans split across the pool) against the references.
TEST_P(OpsIsa, ThreadedDriversMatchReferences) {
  const Isa isa = GetParam();
  const int64_t rows = 67, dim = 768;
  const auto x = random_vector(rows * dim, -3, 3, 20), w = random_vector(dim, -1, 1, 21),
             b = random_vector(dim, -1, 1, 22);
  std::vector<float> y(rows * dim), r(rows * dim);
  kernels::rmsnorm(isa, x.data(), w.data(), kNormEps, rows, dim, y.data());
  for (int64_t i = 0; i < rows; ++i)
    kernels::rmsnorm_ref(x.data() + i * dim, w.data(), kNormEps, dim, r.data() + i * dim);
  for (int64_t i = 0; i < rows * dim; ++i) ASSERT_LT(rel_err(y[i], r[i], 1e-30), kRmsnormTol) << i;
  // In place (y aliases x), as the models call it.
  std::vector<float> inplace(x);
  kernels::layernorm(isa, inplace.data(), w.data(), b.data(), kNormEps, rows, dim, inplace.data());
  for (int64_t i = 0; i < rows; ++i)
    kernels::layernorm_ref(x.data() + i * dim, w.data(), b.data(), kNormEps, dim, r.data() + i * dim);
  for (int64_t i = 0; i < rows * dim; ++i) ASSERT_NEAR(inplace[i], r[i], 1e-5) << i;

  const int64_t n = 300001;
  const auto a = random_vector(n, -6, 6, 23);
  std::vector<float> g(a), gr(a);
  kernels::gelu_erf(isa, g.data(), n);
  kernels::gelu_erf_ref(gr.data(), n);
  for (int64_t i = 0; i < n; ++i) ASSERT_LT(rel_err(g[i], gr[i], 1e-37), kGeluErfTol) << i;
  std::vector<float> s(a), sr(a), up = random_vector(n, -1, 1, 24);
  kernels::swiglu(isa, s.data(), up.data(), n);
  kernels::swiglu_ref(sr.data(), up.data(), n);
  for (int64_t i = 0; i < n; ++i) ASSERT_LT(rel_err(s[i], sr[i], 1e-37), kSiluTol + 1.2e-7) << i;
  std::vector<float> q = random_vector(4 * 64, -1, 1, 25), qr(q);
  kernels::rope(isa, q.data(), 4, 64, 77, 10000.0f, false);
  kernels::rope_ref(qr.data(), 4, 64, 77, 10000.0f, false);
  for (int64_t i = 0; i < 4 * 64; ++i) ASSERT_NEAR(q[i], qr[i], 1e-6) << i;
}

INSTANTIATE_TEST_SUITE_P(AllIsas, OpsIsa, ::testing::Values(Isa::Scalar, Isa::Avx2, Isa::Avx512),
                         [](const ::testing::TestParamInfo<Isa>& i) { return std::string(isa_name(i.param)); });

// ---------------- ops:: (active_isa) and argument errors ----------------

TEST(Ops, DispatchMatchesReference) {
  std::vector<float> x = {0.0f, static_cast<float>(std::log(2.0))};
  ops::softmax(x.data(), 2);
  EXPECT_NEAR(x[0], 1.0 / 3.0, 1e-7);
  EXPECT_NEAR(x[1], 2.0 / 3.0, 1e-7);
  float g = 1.0f;
  ops::gelu_tanh(&g, 1);
  EXPECT_NEAR(g, 0.8411919906082768, 2e-7);
}

TEST(Ops, BadArgumentsThrowShrinkError) {
  float x[4] = {};
  EXPECT_THROW(ops::rmsnorm(x, x, 1e-5f, 1, 0, x), Error);
  EXPECT_THROW(ops::rope(x, 1, 3, 0, 10000.0f, true), Error);
  EXPECT_THROW(ops::softmax(x, -1), Error);
  EXPECT_THROW(ops::attention_causal(x, 1, 0, x, x, 4, 3, 2, 2, 1.0f, x), Error);
}

}  // namespace
}  // namespace shrink

// parallel_for_dynamic (the packed GEMM's panel loop): every index exactly once, in ranges of at most `chunk`,
// for item counts that do and do not divide into chunks, and any number of threads.
namespace shrink {
namespace {

TEST(ParallelForDynamic, VisitsEveryIndexOnceInChunks) {
  const int saved = num_threads();
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (int64_t n : {0, 1, 7, 100, 1001}) {
      for (int64_t chunk : {0, 1, 3, 64, 5000}) {
        std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
        std::atomic<int64_t> longest{0};
        parallel_for_dynamic(n, chunk, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) seen[static_cast<size_t>(i)].fetch_add(1);
          int64_t cur = longest.load();
          while (e - b > cur && !longest.compare_exchange_weak(cur, e - b)) {
          }
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[static_cast<size_t>(i)].load(), 1) << "n " << n << " i " << i;
        // One thread runs the whole range in one call; more threads take at most `chunk` (at least 1) at a time.
        const int64_t expect_max = threads == 1 || n <= std::max<int64_t>(1, chunk) ? n : std::max<int64_t>(1, chunk);
        EXPECT_EQ(longest.load(), expect_max) << "threads " << threads << " n " << n << " chunk " << chunk;
      }
    }
  }
  set_num_threads(saved);
}

}  // namespace
}  // namespace shrink
