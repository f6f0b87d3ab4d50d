// W4A16 kernels: group-wise 4-bit weights (kernels/quant.h layout, read in place, e.g. from a mapped file) times
// fp32 activations. GEMV (m <= kGemvMaxRows) unpacks nibbles in registers; GEMM dequantizes one weight panel at a
// time into the fp32 packed layout of kernels/gemm and runs that micro-kernel on it.
#pragma once

#include <shrink/core/cpu.h>

#include <cstdint>

namespace shrink::kernels {

// A W4 weight matrix [n][k] as stored: rows of w4_row_bytes(k, group) bytes (zero-padded to whole groups), f16
// scales and optional zero points [n][w4_groups(k, group)]. Views; nothing is owned or copied.
struct W4Matrix {
  const uint8_t* codes = nullptr;
  const uint16_t* scales_f16 = nullptr;
  const uint8_t* zero_points = nullptr;  // null: symmetric (z = 8)
  int64_t n = 0, k = 0;
  int group = 32;  // 32, 64 or 128

  int64_t groups() const { return (k + group - 1) / group; }
  int64_t row_bytes() const { return groups() * group / 2; }
};

// y[i][j] = sum_p x[i][p] * w[j][p] + (bias ? bias[j] : 0) for output features [o0, o1) only, m <= kGemvMaxRows,
// on the calling thread (Linear::forward_rows). isa must be available (isa_available in kernels/gemm.h).
void w4_gemv_rows(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
                  int64_t o0, int64_t o1, Isa isa);
// The same over all n outputs, threaded over output rows on the process pool.
void w4_gemv(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
             Isa isa);
// Any m: weight panels dequantized once per call into the fp32 GEMM's packed layout (cost amortized over m rows),
// threaded over panels.
void w4_gemm(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
             Isa isa);
// Up to this many rows w4_matmul runs GEMV passes of kGemvMaxRows rows: cheaper than dequantizing every panel.
constexpr int64_t kW4GemvPassMaxRows = 16;
// GEMV passes for m <= kW4GemvPassMaxRows, GEMM otherwise.
void w4_matmul(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
               Isa isa);

// True when the GEMV of `isa` rounds x to int8 per 32 values (AVX-512 VNNI: x q8 times the nibbles in integers,
// then scaled; nmse ~1e-5 against the exact product). SHRINK_W4_GEMV=f32 selects the exact fp32 GEMV instead.
bool w4_gemv_rounds_x(Isa isa);

// XNNPACK-style names of the kernels an ISA runs, for benchmarks and reports.
const char* w4_gemv_name(Isa isa);
const char* w4_gemm_name(Isa isa);

}  // namespace shrink::kernels
