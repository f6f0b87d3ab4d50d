// Internal table of the W4A16 micro-kernels, one row per ISA (w4_gemm.cc dispatches and threads on it), and the
// panel-dequantizing GEMM driver shared with the BF16 kernels.
#pragma once

#include <shrink/core/cpu.h>
#include <shrink/kernels/int4.h>

#include <cstdint>

namespace shrink::kernels::detail {

// Output rows [o0, o1) of y = x W^T + bias for m <= kGemvMaxRows, on the calling thread.
using W4GemvRowsFn = void (*)(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                              int64_t ldy, int64_t o0, int64_t o1);
// Dequantizes weight rows [row0, row0 + nr) (rows past n give zero columns) into an fp32 packed panel
// [k rounded up to the group][nr], 64-byte aligned: the layout of the fp32 GEMM micro-kernel of the same ISA.
using W4PanelFn = void (*)(const W4Matrix& w, int64_t row0, float* panel);

struct W4Kernels {
  Isa isa;
  int nr;  // panel width (= the fp32 GEMM's of this ISA)
  W4GemvRowsFn gemv_rows;
  bool gemv_rounds_x;  // the GEMV rounds x to int8 (VNNI path)
  W4PanelFn panel;
  const char* gemv_name;
  const char* gemm_name;
};

void w4_gemv_rows_scalar(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                         int64_t ldy, int64_t o0, int64_t o1);
void w4_panel_scalar(const W4Matrix& w, int64_t row0, float* panel);
void w4_gemv_rows_avx2(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                       int64_t ldy, int64_t o0, int64_t o1);
void w4_panel_avx2(const W4Matrix& w, int64_t row0, float* panel);
void w4_gemv_rows_avx512(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                         int64_t ldy, int64_t o0, int64_t o1);
void w4_panel_avx512(const W4Matrix& w, int64_t row0, float* panel);
// x rounded to int8 per 32 values, vpdpbusd with the nibbles (w4_avx512vnni.cc).
void w4_gemv_rows_avx512vnni(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                             int64_t ldy, int64_t o0, int64_t o1);

// The same rounding of x on AVX2, vpmaddubsw + vpmaddwd instead of vpdpbusd (w4_q8_avx2.cc).
void w4_gemv_rows_q8_avx2(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                          int64_t ldy, int64_t o0, int64_t o1);

const W4Kernels& w4_kernels(Isa isa);

// y = x W^T + bias through the fp32 packed GEMM micro-kernel of `isa`, with each panel of nr weight rows produced
// by fill(panel_index, buffer) into a per-thread buffer of kpad x nr floats (kpad >= k), threaded over panels.
// The weights are thus converted once per call whatever m is.
using PanelFillFn = void (*)(const void* ctx, int64_t panel, float* buffer);
void gemm_on_filled_panels(Isa isa, int64_t n, int64_t k, int64_t kpad, const float* x, int64_t m, int64_t ldx,
                           const float* bias, float* y, int64_t ldy, PanelFillFn fill, const void* ctx);

}  // namespace shrink::kernels::detail
