// make_dense_linear: F32/F16/BF16 weights, bias, m = 1 and batches, 1 and 2 threads, both batch backends, against
// a double-precision loop over weights converted with core/dtype.h's scalar converters.
#include <gtest/gtest.h>
#include <shrink/core/dtype.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/ops/linear.h>

#include <cmath>
#include <random>
#include <vector>

namespace shrink {
namespace {

struct Weights {
  Tensor tensor;               // as given to make_dense_linear
  std::vector<double> as_f32;  // what the Linear must compute with: the dtype's values, exactly
};

Weights make_weights(DType dtype, int64_t out, int64_t in, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Weights w;
  w.tensor = Tensor::empty(dtype, {out, in});
  w.as_f32.resize(out * in);
  for (int64_t i = 0; i < out * in; ++i) {
    const float f = dist(gen);
    if (dtype == DType::F32) {
      w.tensor.data<float>()[i] = f;
      w.as_f32[i] = f;
    } else if (dtype == DType::BF16) {
      w.tensor.data<uint16_t>()[i] = f32_to_bf16(f);
      w.as_f32[i] = bf16_to_f32(f32_to_bf16(f));
    } else {
      w.tensor.data<uint16_t>()[i] = f32_to_f16(f);
      w.as_f32[i] = f16_to_f32(f32_to_f16(f));
    }
  }
  return w;
}

class DenseLinear : public ::testing::TestWithParam<DenseGemm> {
 protected:
  void TearDown() override { set_num_threads(0); }
};

TEST_P(DenseLinear, MatchesDoubleReference) {
  const int64_t out = 45, in = 70;  // neither a multiple of a vector width
  std::mt19937 gen(99);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> bias_values(out);
  for (float& b : bias_values) b = dist(gen);
  const Tensor bias = Tensor::from_f32(bias_values, {out});
  for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    const Weights w = make_weights(dtype, out, in, 7 + static_cast<uint32_t>(dtype));
    for (bool with_bias : {false, true}) {
      const auto linear = make_dense_linear(w.tensor, with_bias ? &bias : nullptr, GetParam());
      ASSERT_EQ(linear->in_features(), in);
      ASSERT_EQ(linear->out_features(), out);
      EXPECT_EQ(linear->scheme(), "f32");
      EXPECT_GE(linear->weight_bytes(), static_cast<size_t>(out * in * 4));
      for (int threads : {1, 2}) {
        set_num_threads(threads);
        for (int64_t m : {1, 2, 4, 5, 33, 129}) {
          std::vector<float> x(m * in), y(m * out, NAN);
          for (float& v : x) v = dist(gen);
          linear->forward(x.data(), m, y.data());
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < out; ++j) {
              double ref = with_bias ? bias_values[j] : 0.0, abs_sum = std::fabs(ref);
              for (int64_t p = 0; p < in; ++p) {
                ref += x[i * in + p] * w.as_f32[j * in + p];
                abs_sum += std::fabs(x[i * in + p] * w.as_f32[j * in + p]);
              }
              // fp32 accumulation over 70 products: a few ulps of the absolute sum.
              ASSERT_NEAR(y[i * out + j], ref, 1e-6 * abs_sum + 1e-30)
                  << dtype_name(dtype) << " bias=" << with_bias << " threads=" << threads << " m=" << m << " y[" << i
                  << "][" << j << "]";
            }
        }
      }
    }
  }
}

TEST_P(DenseLinear, HandComputed) {
  // W = [[1, 2], [-1, 0.5], [0, 3]] in BF16 (all exact), b = [1, 0, -2], x = [2, 4]: y = [11, 0, 10].
  Tensor w = Tensor::empty(DType::BF16, {3, 2});
  const float wf[] = {1, 2, -1, 0.5f, 0, 3};
  for (int i = 0; i < 6; ++i) w.data<uint16_t>()[i] = f32_to_bf16(wf[i]);
  const Tensor b = Tensor::from_f32({1, 0, -2}, {3});
  const auto linear = make_dense_linear(w, &b, GetParam());
  const float x[] = {2, 4};
  float y[3];
  linear->forward(x, 1, y);
  EXPECT_EQ(y[0], 11.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 10.0f);
}

INSTANTIATE_TEST_SUITE_P(Gemm, DenseLinear, ::testing::Values(DenseGemm::Auto, DenseGemm::Packed, DenseGemm::OneDnn),
                         [](const auto& info) {
                           switch (info.param) {
                             case DenseGemm::Auto: return "auto";
                             case DenseGemm::Packed: return "packed";
                             case DenseGemm::OneDnn: return "onednn";
                           }
                           return "unknown";
                         });

TEST(DenseLinearErrors, RejectsBadWeightsAndBias) {
  EXPECT_THROW(make_dense_linear(Tensor::zeros(DType::F32, {2, 3, 4})), Error);
  EXPECT_THROW(make_dense_linear(Tensor::zeros(DType::I8, {2, 3})), Error);
  const Tensor wrong_bias = Tensor::zeros(DType::F32, {3});
  EXPECT_THROW(make_dense_linear(Tensor::zeros(DType::F32, {2, 3}), &wrong_bias), Error);
  try {
    make_dense_linear(Tensor::zeros(DType::I8, {2, 3}));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("I8"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace shrink
