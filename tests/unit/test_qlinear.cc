// The quantized-format references (kernels/quant.h) on hand-computed cases, scheme spellings, the PackedLinear
// contract (validate names what is wrong), and the reference quantized Linear against a double loop over the
// dequantized weights.
#include <gtest/gtest.h>
#include <shrink/core/dtype.h>
#include <shrink/core/error.h>
#include <shrink/kernels/quant.h>
#include <shrink/ops/qlinear.h>

#include <cmath>
#include <random>
#include <vector>

#include "ops/qlinear_impl.h"

namespace shrink {
namespace {

using kernels::QFormat;

TEST(QuantRef, S8RowHandComputed) {
  const float x[4] = {0.5f, -1.27f, 0.f, 0.0049f};
  int8_t q[4];
  float s = 0;
  kernels::quantize_row_s8_ref(x, 4, q, &s);
  EXPECT_FLOAT_EQ(s, 0.01f);  // max |x| / 127
  EXPECT_EQ(q[0], 50);
  EXPECT_EQ(q[1], -127);
  EXPECT_EQ(q[2], 0);
  EXPECT_EQ(q[3], 0);  // 0.49 rounds to 0
  const float z[3] = {0, 0, 0};
  kernels::quantize_row_s8_ref(z, 3, q, &s);
  EXPECT_EQ(s, 1.f);  // an all-zero row keeps a usable scale
}

TEST(QuantRef, U8ParamsHandComputed) {
  float s;
  int32_t zp;
  kernels::choose_u8_params(-1.f, 3.f, &s, &zp);  // 4 / 255 per step; 0 lands on 63.75 -> 64
  EXPECT_FLOAT_EQ(s, 4.f / 255.f);
  EXPECT_EQ(zp, 64);
  kernels::choose_u8_params(0.5f, 2.f, &s, &zp);  // range widened to include 0
  EXPECT_FLOAT_EQ(s, 2.f / 255.f);
  EXPECT_EQ(zp, 0);
  const float x[3] = {-1.f, 0.f, 3.f};
  uint8_t q[3];
  kernels::choose_u8_params(-1.f, 3.f, &s, &zp);
  kernels::quantize_row_u8_ref(x, 3, s, zp, q);
  EXPECT_EQ(q[0], 0);  // -63.75 + 64 rounds to 0
  EXPECT_EQ(q[1], 64);
  EXPECT_EQ(q[2], 255);
}

TEST(QuantRef, W4SymmetricGroupHandComputed) {
  // One group of 32: values -8..7 step 1 then zeros -> the largest magnitude (-8) maps to code 0, scale 1.
  std::vector<float> x(32, 0.f);
  for (int i = 0; i < 16; ++i) x[i] = static_cast<float>(i - 8);
  std::vector<uint8_t> codes(16);
  uint16_t scale;
  kernels::quantize_row_w4_ref(x.data(), 32, 32, false, codes.data(), &scale, nullptr);
  EXPECT_EQ(f16_to_f32(scale), 1.f);
  EXPECT_EQ(codes[0], 0x10);  // element 0 -> code 0 (low nibble), element 1 -> code 1 (high nibble)
  EXPECT_EQ(codes[7], 0xfe);  // elements 14, 15 = 6, 7 -> codes 14, 15
  EXPECT_EQ(codes[8], 0x88);  // zeros -> 8
  std::vector<float> back(32);
  kernels::dequantize_row_w4_ref(codes.data(), &scale, nullptr, 32, 32, back.data());
  for (int i = 0; i < 32; ++i) EXPECT_EQ(back[i], x[i]) << i;
}

TEST(QuantRef, W4AsymmetricAndPaddedRow) {
  // 40 values with group 32: two groups, the second padded with zeros. Asymmetric range [0, 15] -> scale 1, z 0.
  std::vector<float> x(40);
  for (int i = 0; i < 40; ++i) x[i] = static_cast<float>(i % 16);
  EXPECT_EQ(kernels::w4_groups(40, 32), 2);
  EXPECT_EQ(kernels::w4_row_bytes(40, 32), 32);
  std::vector<uint8_t> codes(32, 0xaa);
  uint16_t scales[2];
  uint8_t zps[2];
  kernels::quantize_row_w4_ref(x.data(), 40, 32, true, codes.data(), scales, zps);
  EXPECT_EQ(f16_to_f32(scales[0]), 1.f);
  EXPECT_EQ(zps[0], 0);
  std::vector<float> back(40);
  kernels::dequantize_row_w4_ref(codes.data(), scales, zps, 40, 32, back.data());
  for (int i = 0; i < 32; ++i) EXPECT_EQ(back[i], x[i]) << i;
  // Second group: [0, 7] over 15 steps; every value within half a step.
  EXPECT_NEAR(f16_to_f32(scales[1]), 7.f / 15.f, 1e-3);
  for (int i = 32; i < 40; ++i) EXPECT_NEAR(back[i], x[i], 0.5 * f16_to_f32(scales[1]) + 1e-6) << i;
  EXPECT_EQ(codes[31], zps[1] | (zps[1] << 4));  // padding encodes exact zeros
}

TEST(QuantRef, TableRowsRoundTrip) {
  std::mt19937 gen(7);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> x(128), back(128);
  for (auto& v : x) v = d(gen);
  // Per-format bounds: relative error of one row round trip (bits: 8 -> ~1e-4, 4 -> ~1e-2, bf16 -> ~1e-5).
  const double bound[kernels::kQFormatCount] = {2e-4, 2e-4, 2.5e-2, 2e-5, 2e-4};
  for (int f = 0; f < kernels::kQFormatCount; ++f) {
    const auto& t = kernels::qformat_table()[f];
    EXPECT_EQ(static_cast<int>(t.format), f);
    std::vector<uint8_t> codes(t.row_code_bytes(128, 32));
    float scales_f32[8];
    uint8_t zps[8];
    const bool asym = t.format == QFormat::W4;
    t.quantize_row(x.data(), 128, 32, asym, codes.data(), scales_f32, zps);
    t.dequantize_row(codes.data(), scales_f32, asym || t.format == QFormat::A8 ? zps : nullptr, 128, 32, back.data());
    EXPECT_LT(kernels::nmse(back.data(), x.data(), 128), bound[f]) << t.name;
  }
}

TEST(QuantSpec, SpellingsRoundTripAndErrors) {
  for (const char* s : {"f32", "bf16", "w8a16", "w8a8", "w8a8-static", "w4a16-g32", "w4a16-g64", "w4a16-g128",
                        "w4a16-g128-asym", "w4a16-g32-asym"})
    EXPECT_EQ(parse_quant_spec(s).name(), s);
  EXPECT_EQ(parse_quant_spec("w4a16").group, 32);
  try {
    parse_quant_spec("w3a16");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("w3a16"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("w4a16-g128"), std::string::npos);  // lists the valid ones
  }
  EXPECT_THROW(parse_quant_spec("w4a16-g48"), Error);
}

Tensor random_weight(int64_t out, int64_t in, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.f, 0.05f);
  Tensor w = Tensor::empty(DType::F32, {out, in});
  for (int64_t i = 0; i < out * in; ++i) w.data<float>()[i] = d(gen);
  return w;
}

TEST(PackedLinear, ValidateNamesTheTensor) {
  const Tensor w = random_weight(5, 40, 1);
  PackedLinear p = quantize_linear_weights(w, nullptr, parse_quant_spec("w4a16-g32"));
  p.validate("layer x");  // a fresh one is valid
  auto broken = p;
  broken.tensors.erase(broken.tensors.begin() + 1);  // weight_scale
  try {
    broken.validate("layer x");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight_scale"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("layer x"), std::string::npos) << e.what();
  }
  auto wrong = p;
  wrong.tensors[0].second = Tensor::zeros(DType::I8, {5, 32});
  EXPECT_THROW(wrong.validate("layer x"), Error);
}

// y = x W^T + b with W dequantized by hand from the packed tensors, in double.
TEST(PackedLinear, ReferenceLinearMatchesDequantizedWeights) {
  const int64_t out = 7, in = 72, m = 3;
  const Tensor w = random_weight(out, in, 2);
  std::vector<float> bias(out);
  for (int64_t o = 0; o < out; ++o) bias[o] = 0.1f * static_cast<float>(o);
  const Tensor b = Tensor::from_f32(bias, {out});
  std::vector<float> x(m * in);
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (auto& v : x) v = d(gen);
  for (const char* name : {"w8a16", "w4a16-g32", "w4a16-g64-asym", "bf16", "w8a8"}) {
    const QuantSpec spec = parse_quant_spec(name);
    PackedLinear p = quantize_linear_weights(w, &b, spec);
    // Dequantize by the format definitions.
    std::vector<float> wd(out * in);
    if (spec.scheme == WeightScheme::W4A16) {
      const int64_t rb = kernels::w4_row_bytes(in, spec.group), g = kernels::w4_groups(in, spec.group);
      const Tensor* z = p.find("weight_zero_point");
      for (int64_t o = 0; o < out; ++o)
        for (int64_t k = 0; k < in; ++k) {
          const uint8_t byte = p.find("weight_packed")->data<uint8_t>()[o * rb + k / 2];
          const int q = (k % 2) ? byte >> 4 : byte & 15;
          const int zp = z ? z->data<uint8_t>()[o * g + k / spec.group] : 8;
          wd[o * in + k] = static_cast<float>(q - zp) * f16_to_f32(p.find("weight_scale")->data<uint16_t>()[o * g + k / spec.group]);
        }
    } else if (spec.scheme == WeightScheme::BF16) {
      for (int64_t i = 0; i < out * in; ++i) wd[i] = bf16_to_f32(p.find("weight")->data<uint16_t>()[i]);
    } else {
      for (int64_t i = 0; i < out * in; ++i)
        wd[i] = static_cast<float>(p.find("weight")->data<int8_t>()[i]) * p.find("weight_scale")->data<float>()[i / in];
    }
    // The quantized weights stay close to the originals.
    EXPECT_LT(kernels::nmse(wd.data(), w.data<float>(), out * in), spec.scheme == WeightScheme::W4A16 ? 3e-2 : 1e-4)
        << name;
    auto lin = detail::make_reference_packed_linear(p);
    ASSERT_EQ(lin->scheme(), name);
    ASSERT_NE(lin->packed(), nullptr);
    std::vector<float> y(m * out);
    lin->forward(x.data(), m, y.data());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t o = 0; o < out; ++o) {
        double ref = bias[o];
        for (int64_t k = 0; k < in; ++k) ref += static_cast<double>(wd[o * in + k]) * x[i * in + k];
        // W8A8 also rounds the activations to 8 bits per token: a looser bound.
        const double tol = spec.scheme == WeightScheme::W8A8 ? 2e-2 : 1e-5;
        EXPECT_NEAR(y[i * out + o], ref, tol) << name << " row " << i << " out " << o;
      }
  }
}

}  // namespace
}  // namespace shrink
