// Scalar references of the quantized formats and the format table (include/shrink/kernels/quant.h).
#include <shrink/core/dtype.h>
#include <shrink/core/error.h>
#include <shrink/kernels/quant.h>

#include <algorithm>
#include <cmath>

namespace shrink::kernels {

namespace {

inline int32_t round_away(float v) {
  return static_cast<int32_t>(std::lround(v));
}

// ---- uniform row adapters for the traits table ----
void w8_quantize(const float* x, int64_t n, int, bool, void* codes, void* scales, uint8_t*) {
  quantize_row_s8_ref(x, n, static_cast<int8_t*>(codes), static_cast<float*>(scales));
}
void w8_dequantize(const void* codes, const void* scales, const uint8_t*, int64_t n, int, float* out) {
  dequantize_row_s8_ref(static_cast<const int8_t*>(codes), *static_cast<const float*>(scales), n, out);
}
size_t bytes_1(int64_t n, int) {
  return static_cast<size_t>(n);
}
size_t bytes_2(int64_t n, int) {
  return static_cast<size_t>(n) * 2;
}
size_t bytes_w4(int64_t n, int group) {
  return static_cast<size_t>(w4_row_bytes(n, group));
}

void a8_quantize(const float* x, int64_t n, int, bool, void* codes, void* scales, uint8_t* zero_points) {
  int32_t zp = 0;
  quantize_row_a8_dynamic_ref(x, n, static_cast<uint8_t*>(codes), static_cast<float*>(scales), &zp);
  if (zero_points) zero_points[0] = static_cast<uint8_t>(zp);
}
void a8_dequantize(const void* codes, const void* scales, const uint8_t* zero_points, int64_t n, int, float* out) {
  const auto* q = static_cast<const uint8_t*>(codes);
  const float s = *static_cast<const float*>(scales);
  const int32_t zp = zero_points ? zero_points[0] : 128;
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<int32_t>(q[i]) - zp) * s;
}
void w4_quantize(const float* x, int64_t n, int group, bool asym, void* codes, void* scales, uint8_t* zero_points) {
  quantize_row_w4_ref(x, n, group, asym, static_cast<uint8_t*>(codes), static_cast<uint16_t*>(scales),
                      asym ? zero_points : nullptr);
}
void w4_dequantize(const void* codes, const void* scales, const uint8_t* zero_points, int64_t n, int group,
                   float* out) {
  dequantize_row_w4_ref(static_cast<const uint8_t*>(codes), static_cast<const uint16_t*>(scales), zero_points, n, group,
                        out);
}
void bf16_quantize(const float* x, int64_t n, int, bool, void* codes, void*, uint8_t*) {
  quantize_row_bf16_ref(x, n, static_cast<uint16_t*>(codes));
}
void bf16_dequantize(const void* codes, const void*, const uint8_t*, int64_t n, int, float* out) {
  dequantize_row_bf16_ref(static_cast<const uint16_t*>(codes), n, out);
}

const QFormatTraits kTable[kQFormatCount] = {
    {QFormat::W8, "w8", 8, "output row", "f32", false, w8_quantize, w8_dequantize, bytes_1},
    {QFormat::A8, "a8", 8, "token", "f32", true, a8_quantize, a8_dequantize, bytes_1},
    {QFormat::W4, "w4", 4, "group", "f16", true, w4_quantize, w4_dequantize, bytes_w4},
    {QFormat::BF16, "bf16", 16, "-", "-", false, bf16_quantize, bf16_dequantize, bytes_2},
    {QFormat::KV8, "kv8", 8, "token x head", "f32", false, w8_quantize, w8_dequantize, bytes_1},
};

}  // namespace

const QFormatTraits* qformat_table() {
  return kTable;
}

const QFormatTraits& qformat_traits(QFormat f) {
  const auto i = static_cast<int>(f);
  check(i >= 0 && i < kQFormatCount, "quantized format {} is not in the format table", i);
  return kTable[i];
}

void quantize_row_s8_ref(const float* x, int64_t n, int8_t* q, float* scale) {
  float amax = 0.f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float s = amax > 0.f ? amax / 127.f : 1.f;
  const float inv = 1.f / s;
  for (int64_t i = 0; i < n; ++i) q[i] = static_cast<int8_t>(std::clamp(round_away(x[i] * inv), -127, 127));
  *scale = s;
}

void quantize_row_q8_32_ref(const float* x, int64_t n, int8_t* q, float* d) {
  for (int64_t b = 0; b < n; b += 32) {
    const int64_t e = std::min<int64_t>(n, b + 32);
    float amax = 0.f;
    for (int64_t i = b; i < e; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float inv = amax > 0.f ? 127.f / amax : 0.f;
    d[b / 32] = amax / 127.f;
    for (int64_t i = b; i < e; ++i) q[i] = static_cast<int8_t>(std::nearbyint(x[i] * inv));
  }
}

void dequantize_row_s8_ref(const int8_t* q, float scale, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]) * scale;
}

void quantize_row_u8_ref(const float* x, int64_t n, float scale, int32_t zero_point, uint8_t* q) {
  const float inv = 1.f / scale;
  for (int64_t i = 0; i < n; ++i) q[i] = static_cast<uint8_t>(std::clamp(round_away(x[i] * inv) + zero_point, 0, 255));
}

void choose_u8_params(float lo, float hi, float* scale, int32_t* zero_point) {
  lo = std::min(lo, 0.f);
  hi = std::max(hi, 0.f);
  const float s = hi > lo ? (hi - lo) / 255.f : 1.f;
  *scale = s;
  *zero_point = std::clamp(round_away(-lo / s), 0, 255);
}

void quantize_row_a8_dynamic_ref(const float* x, int64_t n, uint8_t* q, float* scale, int32_t* zero_point) {
  float amax = 0.f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float s = amax > 0.f ? amax / 127.f : 1.f;
  *scale = s;
  *zero_point = 128;
  quantize_row_u8_ref(x, n, s, 128, q);
}

void quantize_row_w4_ref(const float* x, int64_t n, int group, bool asym, uint8_t* codes, uint16_t* scales_f16,
                         uint8_t* zero_points) {
  check(group > 0 && group % 2 == 0, "W4 quantization: group {} must be a positive even number", group);
  const int64_t groups = w4_groups(n, group);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t b = g * group;
    float v[512];
    check(group <= 512, "W4 quantization: group {} is larger than 512", group);
    for (int i = 0; i < group; ++i) v[i] = b + i < n ? x[b + i] : 0.f;
    float s, z = 8.f;
    if (asym) {
      float lo = 0.f, hi = 0.f;
      for (int i = 0; i < group; ++i) lo = std::min(lo, v[i]), hi = std::max(hi, v[i]);
      s = hi > lo ? (hi - lo) / 15.f : 1.f;
      s = f16_to_f32(f32_to_f16(s));  // quantize with the scale the kernels will see
      if (s == 0.f) s = 1.f;
      z = static_cast<float>(std::clamp(round_away(-lo / s), 0, 15));
      zero_points[g] = static_cast<uint8_t>(z);
    } else {
      // Symmetric: the value of largest magnitude maps to -8 (llama.cpp Q4_0), using the whole [-8, 7] range.
      float amax = 0.f, mx = 0.f;
      for (int i = 0; i < group; ++i)
        if (std::fabs(v[i]) > amax) amax = std::fabs(v[i]), mx = v[i];
      s = amax > 0.f ? mx / -8.f : 1.f;
      s = f16_to_f32(f32_to_f16(s));
      if (s == 0.f) s = 1.f;
    }
    scales_f16[g] = f32_to_f16(s);
    const float inv = 1.f / s;
    uint8_t* c = codes + b / 2;
    for (int i = 0; i < group; i += 2) {
      const int lo = std::clamp(round_away(v[i] * inv + z), 0, 15);
      const int hi = std::clamp(round_away(v[i + 1] * inv + z), 0, 15);
      c[i / 2] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void dequantize_row_w4_ref(const uint8_t* codes, const uint16_t* scales_f16, const uint8_t* zero_points, int64_t n,
                           int group, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t g = i / group;
    const int q = (i & 1) ? codes[i / 2] >> 4 : codes[i / 2] & 15;
    const int z = zero_points ? zero_points[g] : 8;
    out[i] = static_cast<float>(q - z) * f16_to_f32(scales_f16[g]);
  }
}

void quantize_row_bf16_ref(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16(x[i]);
}

void dequantize_row_bf16_ref(const uint16_t* w, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(w[i]);
}

float dot_w8_f32_ref(const int8_t* w, float w_scale, const float* x, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(w[i]) * x[i];
  return static_cast<float>(acc * w_scale);
}

int32_t dot_u8s8_ref(const uint8_t* a, const int8_t* w, int64_t n) {
  int64_t acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<int32_t>(a[i]) * w[i];
  return static_cast<int32_t>(acc);
}

float dot_w4_f32_ref(const uint8_t* codes, const uint16_t* scales_f16, const uint8_t* zero_points, int64_t n, int group,
                     const float* x) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t g = i / group;
    const int q = (i & 1) ? codes[i / 2] >> 4 : codes[i / 2] & 15;
    const int z = zero_points ? zero_points[g] : 8;
    acc += static_cast<double>(q - z) * f16_to_f32(scales_f16[g]) * x[i];
  }
  return static_cast<float>(acc);
}

float dot_bf16_f32_ref(const uint16_t* w, const float* x, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(bf16_to_f32(w[i])) * x[i];
  return static_cast<float>(acc);
}

double nmse(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return num / den;
}

}  // namespace shrink::kernels
