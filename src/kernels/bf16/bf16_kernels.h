// Internal table of the BF16-weight micro-kernels, one row per ISA (bf16_gemm.cc dispatches and threads on it).
#pragma once

#include <shrink/core/cpu.h>
#include <shrink/kernels/bf16.h>

#include <cstdint>

namespace shrink::kernels::detail {

using Bf16GemvRowsFn = void (*)(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias,
                                float* y, int64_t ldy, int64_t o0, int64_t o1);
// Rows [row0, row0 + nr) (rows past n give zero columns) as an fp32 packed panel [k rounded up to 16][nr].
using Bf16PanelFn = void (*)(const Bf16Matrix& w, int64_t row0, float* panel);

struct Bf16Kernels {
  Isa isa;
  int nr;
  Bf16GemvRowsFn gemv_rows;
  Bf16PanelFn panel;
  const char* gemv_name;
  const char* gemm_name;
};

void bf16_gemv_rows_scalar(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                           int64_t ldy, int64_t o0, int64_t o1);
void bf16_panel_scalar(const Bf16Matrix& w, int64_t row0, float* panel);
void bf16_gemv_rows_avx2(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                         int64_t ldy, int64_t o0, int64_t o1);
void bf16_panel_avx2(const Bf16Matrix& w, int64_t row0, float* panel);
void bf16_gemv_rows_avx512(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                           int64_t ldy, int64_t o0, int64_t o1);
void bf16_panel_avx512(const Bf16Matrix& w, int64_t row0, float* panel);

const Bf16Kernels& bf16_kernels(Isa isa);

// k rounded up to whole 16-element steps: the panel height the converters write.
inline int64_t bf16_panel_k(int64_t k) {
  return (k + 15) / 16 * 16;
}

}  // namespace shrink::kernels::detail
