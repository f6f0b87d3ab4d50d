// W4A16 kernels in plain C++ (baseline x86-64): the fallback for CPUs without AVX2, and the simplest statement of
// what the SIMD kernels compute. sum (q - z) s x = s (sum q x - z sum x) per group.
#include <shrink/core/dtype.h>

#include <algorithm>

#include "kernels/gemm/sgemm_kernels.h"
#include "kernels/int4/w4_kernels.h"

namespace shrink::kernels::detail {

void w4_gemv_rows_scalar(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                         int64_t ldy, int64_t o0, int64_t o1) {
  const int64_t groups = w.groups(), rb = w.row_bytes();
  const int half = w.group / 2;
  for (int64_t o = o0; o < o1; ++o) {
    const uint8_t* codes = w.codes + o * rb;
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = x + r * ldx;
      float acc = 0.f;
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t base = g * w.group;
        const int64_t pairs = std::min<int64_t>(half, (w.k - base + 1) / 2);
        const float z = w.zero_points ? w.zero_points[o * groups + g] : 8.f;
        float qx = 0.f, xs = 0.f;
        for (int64_t i = 0; i < pairs; ++i) {
          const uint8_t b = codes[base / 2 + i];
          const int64_t e = base + 2 * i;
          const float x0 = xr[e], x1 = e + 1 < w.k ? xr[e + 1] : 0.f;
          qx += static_cast<float>(b & 15) * x0 + static_cast<float>(b >> 4) * x1;
          xs += x0 + x1;
        }
        acc += f16_to_f32(w.scales_f16[o * groups + g]) * (qx - z * xs);
      }
      y[r * ldy + o] = acc + (bias ? bias[o] : 0.f);
    }
  }
}

void w4_panel_scalar(const W4Matrix& w, int64_t row0, float* panel) {
  constexpr int kNr = kNrScalar;
  const int64_t groups = w.groups(), rb = w.row_bytes(), kp = groups * w.group;
  for (int j = 0; j < kNr; ++j) {
    const int64_t o = row0 + j;
    if (o >= w.n) {
      for (int64_t p = 0; p < kp; ++p) panel[p * kNr + j] = 0.f;
      continue;
    }
    const uint8_t* codes = w.codes + o * rb;
    for (int64_t g = 0; g < groups; ++g) {
      const float s = f16_to_f32(w.scales_f16[o * groups + g]);
      const float zs = (w.zero_points ? w.zero_points[o * groups + g] : 8.f) * s;
      for (int i = 0; i < w.group / 2; ++i) {
        const int64_t e = g * w.group + 2 * i;
        const uint8_t b = codes[e / 2];
        panel[e * kNr + j] = static_cast<float>(b & 15) * s - zs;
        panel[(e + 1) * kNr + j] = static_cast<float>(b >> 4) * s - zs;
      }
    }
  }
}

}  // namespace shrink::kernels::detail
