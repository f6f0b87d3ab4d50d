// Quantized formats as data: one traits row per format (like ggml's type traits), the block layouts, and the
// scalar reference quantize / dequantize / dot of each format that every fast kernel is tested against.
#pragma once

#include <cstddef>
#include <cstdint>

namespace shrink::kernels {

// W8   int8 weights, symmetric, one fp32 scale per output row: w = q * scale, q in [-127, 127].
// A8   uint8 activations with a zero point: x = (q - zp) * scale, q in [0, 255]. Dynamic per token (range of the
//      row, symmetric: zp = 128) or static per tensor (range from calibration, asymmetric).
// W4   4-bit weights in groups of 32/64/128 along the input dimension, two per byte, the LOW nibble holding the even
//      element (compressed-tensors "pack-quantized" byte order). Symmetric: w = (q - 8) * s; asymmetric:
//      w = (q - z) * s with one uint8 zero point z in [0, 15] per group. Scales are fp16, one per group. A row whose
//      length is not a multiple of the group is padded with zeros to the next multiple.
// BF16 bfloat16 weights, no scale.
// KV8  INT8 KV cache: int8 symmetric, one fp32 scale per (token, head) row of head_dim values.
enum class QFormat : uint8_t { W8, A8, W4, BF16, KV8 };
constexpr int kQFormatCount = 5;

// The W4 block: `group` weights in group/2 bytes. Fixed-size structs for the supported groups.
template <int G>
struct BlockW4 {
  static constexpr int kGroup = G;
  uint8_t nibbles[G / 2];
};
static_assert(sizeof(BlockW4<32>) == 16 && sizeof(BlockW4<64>) == 32 && sizeof(BlockW4<128>) == 64);
// The W8 / KV8 block is a whole row; its 64-element chunk is what one AVX-512 VNNI step consumes.
struct BlockW8x64 {
  int8_t q[64];
};
static_assert(sizeof(BlockW8x64) == 64);

// Reference implementations over one row of n values. `group` = values per scale (n for per-row formats).
// scales/zero_points hold one entry per group; zero_points is null for symmetric formats.
struct QFormatTraits {
  QFormat format;
  const char* name;        // "w8", "a8", "w4", "bf16", "kv8"
  int bits;                // bits per stored value (before scales)
  const char* scale_of;    // what one scale covers: "output row", "token", "group", "-", "token x head"
  const char* scale_type;  // "f32", "f16", "-"
  bool zero_point;         // format can carry zero points
  // codes: int8 / uint8 / nibble-packed bytes / uint16 bf16; scales: float (f32 formats) or uint16 f16 bits (W4).
  void (*quantize_row)(const float* x, int64_t n, int group, bool asym, void* codes, void* scales,
                       uint8_t* zero_points);
  void (*dequantize_row)(const void* codes, const void* scales, const uint8_t* zero_points, int64_t n, int group,
                         float* out);
  size_t (*row_code_bytes)(int64_t n, int group);  // bytes of codes for n values (W4: padded to the group)
};

const QFormatTraits& qformat_traits(QFormat f);
const QFormatTraits* qformat_table();  // kQFormatCount rows, in enum order

// ---- scalar references (src/kernels/quant/quant_ref.cc) ----
// x rounded to int8 per 32 values (llama.cpp's Q8_0 activations; the W4 and W8A16 decode GEMVs that round x):
// per block of 32 (the last one may be shorter) d = max|x| / 127 and q = nearbyint(x * (127 / max|x|)) (0 for an
// all-zero block, d = 0 then). q holds n values, d ceil(n / 32) scales; x' = q * d.
void quantize_row_q8_32_ref(const float* x, int64_t n, int8_t* q, float* d);
// W8 / KV8: scale = max|x| / 127 (1 when the row is all zero), q = round-half-away(x / scale).
void quantize_row_s8_ref(const float* x, int64_t n, int8_t* q, float* scale);
void dequantize_row_s8_ref(const int8_t* q, float scale, int64_t n, float* out);
// A8 with a given scale and zero point (q = clamp(round(x / scale) + zp, 0, 255)).
void quantize_row_u8_ref(const float* x, int64_t n, float scale, int32_t zero_point, uint8_t* q);
// Scale and zero point that map [lo, hi] (widened to include 0) onto [0, 255].
void choose_u8_params(float lo, float hi, float* scale, int32_t* zero_point);
// Dynamic per-token A8: symmetric around zp = 128 with scale = max|x| / 127.
void quantize_row_a8_dynamic_ref(const float* x, int64_t n, uint8_t* q, float* scale, int32_t* zero_point);
// W4: codes gets w4_row_bytes(n, group) bytes, scales (f16 bits) and zero points w4_groups(n, group) entries.
inline int64_t w4_groups(int64_t n, int group) {
  return (n + group - 1) / group;
}
inline int64_t w4_row_bytes(int64_t n, int group) {
  return w4_groups(n, group) * group / 2;
}
void quantize_row_w4_ref(const float* x, int64_t n, int group, bool asym, uint8_t* codes, uint16_t* scales_f16,
                         uint8_t* zero_points);
void dequantize_row_w4_ref(const uint8_t* codes, const uint16_t* scales_f16, const uint8_t* zero_points, int64_t n,
                           int group, float* out);
void quantize_row_bf16_ref(const float* x, int64_t n, uint16_t* out);
void dequantize_row_bf16_ref(const uint16_t* w, int64_t n, float* out);

// Dots of one weight row with activations (double accumulation: the yardstick for the fast kernels).
float dot_w8_f32_ref(const int8_t* w, float w_scale, const float* x, int64_t n);
int32_t dot_u8s8_ref(const uint8_t* a, const int8_t* w, int64_t n);  // raw integer dot, no zero point
float dot_w4_f32_ref(const uint8_t* codes, const uint16_t* scales_f16, const uint8_t* zero_points, int64_t n, int group,
                     const float* x);
float dot_bf16_f32_ref(const uint16_t* w, const float* x, int64_t n);

// Normalized mean squared error sum((a-b)^2) / sum(b^2) (0 when both are zero): the tests' yardstick.
double nmse(const float* a, const float* b, int64_t n);

}  // namespace shrink::kernels
