// BF16-weight kernels in plain C++ (baseline x86-64): the fallback for CPUs without AVX2.
#include <shrink/core/dtype.h>

#include "kernels/bf16/bf16_kernels.h"
#include "kernels/gemm/sgemm_kernels.h"

namespace shrink::kernels::detail {

void bf16_gemv_rows_scalar(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                           int64_t ldy, int64_t o0, int64_t o1) {
  for (int64_t o = o0; o < o1; ++o) {
    const uint16_t* row = w.w + o * w.ld;
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = x + r * ldx;
      float acc = 0.f;
      for (int64_t p = 0; p < w.k; ++p) acc += bf16_to_f32(row[p]) * xr[p];
      y[r * ldy + o] = acc + (bias ? bias[o] : 0.f);
    }
  }
}

void bf16_panel_scalar(const Bf16Matrix& w, int64_t row0, float* panel) {
  constexpr int kNr = kNrScalar;
  const int64_t kp = bf16_panel_k(w.k);
  for (int j = 0; j < kNr; ++j) {
    const int64_t o = row0 + j;
    for (int64_t p = 0; p < kp; ++p) panel[p * kNr + j] = o < w.n && p < w.k ? bf16_to_f32(w.w[o * w.ld + p]) : 0.f;
  }
}

}  // namespace shrink::kernels::detail
