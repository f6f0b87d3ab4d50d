// Internal table of the INT8 kernels, one row per Int8Isa (int8.cc dispatches and threads; the per-ISA TUs
// implement), and the argument blocks they share.
#pragma once

#include <shrink/kernels/int8.h>

#include <algorithm>
#include <cstdint>

namespace shrink::kernels::detail {

// One call computes output panels [p0, p1) for all m rows, storing only columns [col0, col1).
struct Int8GemmArgs {
  const uint8_t* a;  // [m][lda] quantized activations, lda >= kpad
  int64_t lda, m;
  const int8_t* packed;  // panel p at packed + p * kpad * 64
  int64_t kpad, n;
  const int32_t* wsum;  // [panels * 64]
  const float* w_scale;
  int32_t* c;  // raw mode (c != null): c[i][j] = sum a w, no zero point, no scales
  int64_t ldc;
  float* y;  // else y[i][j] = a_scale[i] w_scale[j] (sum a w - zp wsum[j]) + bias[j]
  int64_t ldy;
  const float* a_scale;  // row i at a_scale[i * a_scale_stride]
  int64_t a_scale_stride;
  int32_t zp;
  const float* bias;  // [n] or null
  int64_t col0, col1;
};
using Int8PanelsFn = void (*)(const Int8GemmArgs& g, int64_t p0, int64_t p1);

// W8A16 GEMV (m <= 4): y = x (w scale)^T + bias over panels [p0, p1), columns [col0, col1) stored.
struct W8A16Args {
  const float* x;  // [m][ldx], readable up to kpad (zero past k)
  int64_t ldx, m;
  const int8_t* packed;
  int64_t kpad, n;
  const float* w_scale;
  const float* bias;
  float* y;
  int64_t ldy;
  int64_t col0, col1;
};
using W8A16PanelsFn = void (*)(const W8A16Args& g, int64_t p0, int64_t p1);

// The W8A16 GEMV with x rounded to int8 per 32 values (quantize_row_q8_32_ref): an integer dot per 32-value block,
// scaled by the block's d into fp32. The W8A16Args (their x and ldx are not read), plus x rounded: per x row r,
// xq + r * ldxq holds, per k group of 4, |q| (4 bytes) then q (4 bytes), zero past k up to kpad; dx + r * lddx the
// ceil(kpad / 32) block scales.
struct W8A16Q8Args : W8A16Args {
  const uint8_t* xq;
  int64_t ldxq;
  const float* dx;
  int64_t lddx;
};
using W8A16Q8PanelsFn = void (*)(const W8A16Q8Args& g, int64_t p0, int64_t p1);

// One panel (64 columns) to fp32 in the packed fp32 layout of kernels/gemm with panel width nr (64: [k][64];
// 16: four [k][16] panels one after the other), scales folded in: out = q * scale[col].
using DequantPanelFn = void (*)(const int8_t* panel, int64_t k, const float* scale, int nr, float* out);

using QuantDynamicFn = void (*)(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq,
                                float* scales);
using QuantStaticFn = void (*)(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* q,
                               int64_t ldq);

struct Int8Kernels {
  Int8Isa isa;
  Int8PanelsFn gemm;  // any m (m <= 4 is the W8A8 GEMV: the same tile streams each panel once)
  W8A16PanelsFn w8a16_gemv;
  // Null where the exact GEMV keeps up with memory (AVX-512); SHRINK_W8_GEMV=f32 keeps the exact one everywhere.
  W8A16Q8PanelsFn w8a16_gemv_q8;
  DequantPanelFn dequant_panel;
  Isa f32_isa;  // the fp32 GEMM micro-kernel the W8A16 GEMM feeds
  QuantDynamicFn quant_dynamic;
  QuantStaticFn quant_static;
  Int8KernelNames names;
};
const Int8Kernels& int8_kernels(Int8Isa isa);

// Per-ISA entry points.
void gemm_u8s8_panels_scalar(const Int8GemmArgs& g, int64_t p0, int64_t p1);
void gemm_u8s8_panels_avx2(const Int8GemmArgs& g, int64_t p0, int64_t p1);
void gemm_u8s8_panels_avxvnni(const Int8GemmArgs& g, int64_t p0, int64_t p1);
void gemm_u8s8_panels_avx512vnni(const Int8GemmArgs& g, int64_t p0, int64_t p1);
void w8a16_gemv_panels_scalar(const W8A16Args& g, int64_t p0, int64_t p1);
void w8a16_gemv_panels_avx2(const W8A16Args& g, int64_t p0, int64_t p1);
void w8a16_gemv_q8_panels_avx2(const W8A16Q8Args& g, int64_t p0, int64_t p1);
void w8a16_gemv_panels_avx512(const W8A16Args& g, int64_t p0, int64_t p1);
void dequant_panel_scalar(const int8_t* panel, int64_t k, const float* scale, int nr, float* out);
void dequant_panel_avx2(const int8_t* panel, int64_t k, const float* scale, int nr, float* out);
void dequant_panel_avx512(const int8_t* panel, int64_t k, const float* scale, int nr, float* out);
void quant_dynamic_scalar(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq, float* scales);
void quant_dynamic_avx2(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq, float* scales);
void quant_dynamic_avx512(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq, float* scales);
void quant_static_scalar(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* q,
                         int64_t ldq);
void quant_static_avx2(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* q,
                       int64_t ldq);
void quant_static_avx512(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* q,
                         int64_t ldq);

// Columns [lo, hi) of panel p that a call stores (hi <= lo: none).
inline void panel_cols(int64_t p, int64_t n, int64_t col0, int64_t col1, int* lo, int* hi) {
  const int64_t base = p * kInt8Nr;
  *lo = static_cast<int>(std::clamp<int64_t>(col0 - base, 0, kInt8Nr));
  *hi = static_cast<int>(std::clamp<int64_t>(std::min(col1, n) - base, 0, kInt8Nr));
}

// fn(panel, pcol, lo, hi) for each panel of [p0, p1) with columns to store: its packed bytes, its first column and
// the stored range [lo, hi) of panel_cols. The panel walk of the GEMVs and the one-row GEMM.
template <class Args, class Fn>
inline void for_each_panel(const Args& g, int64_t p0, int64_t p1, Fn&& fn) {
  for (int64_t p = p0; p < p1; ++p) {
    int lo, hi;
    panel_cols(p, g.n, g.col0, g.col1, &lo, &hi);
    if (hi > lo) fn(g.packed + p * g.kpad * kInt8Nr, p * kInt8Nr, lo, hi);
  }
}

// The W8A8 epilogue in scalar form (tails and the scalar kernels).
inline float w8a8_epilogue(int32_t acc, const Int8GemmArgs& g, int64_t row, int64_t col) {
  const int32_t v = acc - g.zp * g.wsum[col];
  return static_cast<float>(v) * (g.a_scale[row * g.a_scale_stride] * g.w_scale[col]) + (g.bias ? g.bias[col] : 0.f);
}

}  // namespace shrink::kernels::detail
