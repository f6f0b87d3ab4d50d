// The W8A16 / W8A8 (dynamic, static) Linear of src/ops/linear_int8.cc on every INT8 kernel set this CPU has, against
// the scalar reference Linear (detail::make_reference_packed_linear) by nmse, over odd shapes; packed() gives the
// tensors it was built from back byte for byte; forward_rows equals forward; bad inputs give clear errors.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/kernels/gemm.h>
#include <shrink/kernels/int8.h>
#include <shrink/kernels/quant.h>
#include <shrink/ops/qlinear.h>

#include <cstring>
#include <random>
#include <vector>

#include "ops/qlinear_impl.h"
#include "unit/test_util.h"

namespace shrink {
namespace {

using kernels::Int8Isa;

// The fast and reference layers quantize activations to identical codes and differ only in float rounding
// (fp32 vs double accumulation, epilogue order), ~1e-7 relative per output.
constexpr double kW8A16Nmse = 1e-10;
constexpr double kW8A8Nmse = 1e-10;

class Int8Linear : public ::testing::TestWithParam<Int8Isa> {
 protected:
  void SetUp() override {
    if (!kernels::int8_isa_available(GetParam())) GTEST_SKIP() << kernels::int8_isa_name(GetParam()) << " not here";
  }
};

Tensor random_tensor(Shape shape, uint32_t seed, float scale = 1.f) {
  Tensor t = Tensor::empty(DType::F32, shape);
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(gen);
  return t;
}

QuantSpec spec_of(const char* name) {
  QuantSpec s = parse_quant_spec(name);
  if (s.static_act) {
    s.act_scale = 4.f / 255.f;  // calibrated range [-2, 2]
    s.act_zero_point = 128;
  }
  return s;
}

const char* kSchemes[] = {"w8a16", "w8a8", "w8a8-static"};

TEST_P(Int8Linear, MatchesReferenceLinear) {
  const int64_t kMs[] = {1, 2, 3, 4, 5, 7, 13, 128};
  const int64_t kKs[] = {1, 3, 17, 64, 65, 127, 768, 1000};
  const int64_t kNs[] = {1, 5, 16, 17, 33, 768};
  uint32_t seed = 1;
  for (const char* scheme : kSchemes)
    for (int64_t k : kKs)
      for (int64_t n : kNs) {
        const Tensor w = random_tensor({n, k}, ++seed, 0.05f);
        const Tensor b = random_tensor({n}, ++seed);
        const PackedLinear p = quantize_linear_weights(w, seed % 3 ? &b : nullptr, spec_of(scheme));
        const auto fast = detail::make_w8_linear(p, GetParam());
        const auto ref = detail::make_reference_packed_linear(p);
        EXPECT_EQ(fast->scheme(), scheme);
        for (int64_t m : kMs) {
          if (m * n * k > 20'000'000) continue;
          Tensor x = random_tensor({m, k}, ++seed);
          if (m > 2) std::memset(x.data<float>() + k, 0, k * sizeof(float));  // a zero row
          std::vector<float> y(m * n), want(m * n);
          fast->forward(x.data<float>(), m, y.data());
          // The W8A16 GEMV of sets that round x (AVX2) is defined on x rounded per 32 values.
          std::vector<float> xs(x.data<float>(), x.data<float>() + m * k);
          if (std::string(scheme) == "w8a16" && m <= kernels::kGemvMaxRows && kernels::w8a16_gemv_rounds_x(GetParam()))
            xs = testing::round_x_q8(xs, m, k, k);
          ref->forward(xs.data(), m, want.data());
          const double e = kernels::nmse(y.data(), want.data(), m * n);
          ASSERT_LT(e, std::string(scheme) == "w8a16" ? kW8A16Nmse : kW8A8Nmse)
              << scheme << " m " << m << " k " << k << " n " << n;
        }
      }
}

TEST_P(Int8Linear, ForwardRowsEqualsForward) {
  const int64_t k = 130, n = 150;
  for (const char* scheme : kSchemes) {
    const Tensor w = random_tensor({n, k}, 3, 0.05f);
    const Tensor b = random_tensor({n}, 4);
    const auto lin = detail::make_w8_linear(quantize_linear_weights(w, &b, spec_of(scheme)), GetParam());
    for (int64_t m = 1; m <= 4; ++m) {
      const Tensor x = random_tensor({m, k}, 5 + static_cast<uint32_t>(m));
      std::vector<float> full(m * n), rows(m * n, 0.f);
      lin->forward(x.data<float>(), m, full.data());
      for (auto [o0, o1] : {std::pair<int64_t, int64_t>{0, 37}, {37, 64}, {64, 150}})
        ASSERT_TRUE(lin->forward_rows(x.data<float>(), m, rows.data(), o0, o1));
      for (int64_t i = 0; i < m * n; ++i) ASSERT_EQ(rows[i], full[i]) << scheme << " m " << m << " at " << i;
    }
    std::vector<float> x(5 * k), y(5 * n);
    EXPECT_FALSE(lin->forward_rows(x.data(), 5, y.data(), 0, n)) << "m > 4 is forward()'s";
  }
}

TEST_P(Int8Linear, PackedGivesTheFileTensorsBack) {
  const Tensor w = random_tensor({70, 33}, 8, 0.1f);
  const Tensor b = random_tensor({70}, 9);
  for (const char* scheme : kSchemes) {
    const PackedLinear p = quantize_linear_weights(w, &b, spec_of(scheme));
    const auto lin = detail::make_w8_linear(p, GetParam());
    const size_t before = lin->weight_bytes();
    EXPECT_GE(before, size_t{70 * 33});
    EXPECT_LT(before, size_t{70 * 36 * 2 + 70 * 12 + 64 * 12});  // one weight copy (panels padded to 64 x 36)
    const PackedLinear* back = lin->packed();
    ASSERT_NE(back, nullptr);
    EXPECT_EQ(back->spec, p.spec);
    ASSERT_EQ(back->tensors.size(), p.tensors.size());
    for (auto& [name, t] : p.tensors) {
      const Tensor* got = back->find(name);
      ASSERT_NE(got, nullptr) << name;
      ASSERT_EQ(got->dtype(), t.dtype()) << name;
      ASSERT_EQ(got->shape(), t.shape()) << name;
      EXPECT_EQ(std::memcmp(got->raw(), t.raw(), t.nbytes()), 0) << name;
    }
    EXPECT_GT(lin->weight_bytes(), before) << "the regenerated tensors are counted once they exist";
  }
}

TEST_P(Int8Linear, HugeAndZeroInputs) {
  const int64_t k = 96, n = 40, m = 6;
  const Tensor w = random_tensor({n, k}, 11, 0.05f);
  const Tensor b = random_tensor({n}, 12);
  for (const char* scheme : {"w8a16", "w8a8"}) {
    const PackedLinear p = quantize_linear_weights(w, &b, spec_of(scheme));
    const auto fast = detail::make_w8_linear(p, GetParam());
    const auto ref = detail::make_reference_packed_linear(p);
    Tensor x = random_tensor({m, k}, 13);
    for (int64_t j = 0; j < k; ++j) x.data<float>()[j] *= 1e30f;   // row 0 huge
    for (int64_t j = 0; j < k; ++j) x.data<float>()[k + j] = 0.f;  // row 1 zero
    std::vector<float> y(m * n), want(m * n);
    fast->forward(x.data<float>(), m, y.data());
    ref->forward(x.data<float>(), m, want.data());
    EXPECT_LT(kernels::nmse(y.data(), want.data(), m * n), 1e-10) << scheme;
    for (int64_t j = 0; j < n; ++j) EXPECT_EQ(y[n + j], b.data<float>()[j]) << scheme << ": zero row gives the bias";
  }
}

TEST(Int8LinearErrors, BadStaticParametersAndMinus128) {
  const Tensor w = random_tensor({8, 8}, 1);
  PackedLinear p = quantize_linear_weights(w, nullptr, spec_of("w8a8-static"));
  for (auto& [name, t] : p.tensors)
    if (name == "input_zero_point") t.data<int32_t>()[0] = 300;
  EXPECT_THROW(make_packed_linear(p), Error);
  PackedLinear q = quantize_linear_weights(w, nullptr, spec_of("w8a8"));
  for (auto& [name, t] : q.tensors)
    if (name == "weight") t.data<int8_t>()[5] = -128;
  try {
    make_packed_linear(q);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("-128"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, Int8Linear,
                         ::testing::Values(Int8Isa::Scalar, Int8Isa::Avx2, Int8Isa::AvxVnni, Int8Isa::Avx512,
                                           Int8Isa::Avx512Vnni),
                         [](const ::testing::TestParamInfo<Int8Isa>& i) {
                           return std::string(kernels::int8_isa_name(i.param));
                         });

}  // namespace
}  // namespace shrink
