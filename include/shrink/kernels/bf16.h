// BF16-weight kernels: bfloat16 weights [n][k] (read in place: the one weight copy) times fp32 activations.
// GEMV widens bf16 to fp32 in registers (a 16-bit shift) and accumulates in fp32; GEMM converts one weight panel
// at a time into the fp32 packed layout of kernels/gemm and runs that micro-kernel on it.
#pragma once

#include <shrink/core/cpu.h>

#include <cstdint>

namespace shrink::kernels {

// A BF16 weight matrix [n][k] with row stride ld (elements). A view.
struct Bf16Matrix {
  const uint16_t* w = nullptr;
  int64_t n = 0, k = 0, ld = 0;
};

// y = x W^T + bias for output features [o0, o1) only, m <= kGemvMaxRows, on the calling thread.
void bf16_gemv_rows(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                    int64_t ldy, int64_t o0, int64_t o1, Isa isa);
// All outputs, threaded over output rows.
void bf16_gemv(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
               Isa isa);
// Any m: panels converted once per call into the fp32 GEMM's packed layout, threaded over panels.
void bf16_gemm(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
               Isa isa);
// GEMV for m <= kGemvMaxRows, GEMM otherwise.
void bf16_matmul(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
                 Isa isa);

const char* bf16_gemv_name(Isa isa);
const char* bf16_gemm_name(Isa isa);

}  // namespace shrink::kernels
