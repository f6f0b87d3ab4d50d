// Plain C++ INT8 kernels over the VNNI panel layout: the fallback for CPUs without AVX2, and the layout's own
// readable statement (every SIMD kernel computes what these loops compute).
#include <shrink/kernels/quant.h>

#include "kernels/int8/int8_kernels.h"

namespace shrink::kernels::detail {

void gemm_u8s8_panels_scalar(const Int8GemmArgs& g, int64_t p0, int64_t p1) {
  const int64_t groups = g.kpad / kInt8Kg;
  for (int64_t p = p0; p < p1; ++p) {
    int lo, hi;
    panel_cols(p, g.n, g.col0, g.col1, &lo, &hi);
    const int8_t* b = g.packed + p * g.kpad * kInt8Nr;
    for (int64_t i = 0; i < g.m; ++i) {
      const uint8_t* a = g.a + i * g.lda;
      for (int c = lo; c < hi; ++c) {
        int32_t acc = 0;
        for (int64_t q = 0; q < groups; ++q)
          for (int t = 0; t < kInt8Kg; ++t) acc += int32_t{a[q * kInt8Kg + t]} * b[(q * kInt8Nr + c) * kInt8Kg + t];
        const int64_t col = p * kInt8Nr + c;
        if (g.c)
          g.c[i * g.ldc + col] = acc;
        else
          g.y[i * g.ldy + col] = w8a8_epilogue(acc, g, i, col);
      }
    }
  }
}

void w8a16_gemv_panels_scalar(const W8A16Args& g, int64_t p0, int64_t p1) {
  const int64_t groups = g.kpad / kInt8Kg;
  for (int64_t p = p0; p < p1; ++p) {
    int lo, hi;
    panel_cols(p, g.n, g.col0, g.col1, &lo, &hi);
    const int8_t* b = g.packed + p * g.kpad * kInt8Nr;
    for (int64_t i = 0; i < g.m; ++i) {
      const float* x = g.x + i * g.ldx;
      for (int c = lo; c < hi; ++c) {
        float acc = 0.f;
        for (int64_t q = 0; q < groups; ++q)
          for (int t = 0; t < kInt8Kg; ++t)
            acc += static_cast<float>(b[(q * kInt8Nr + c) * kInt8Kg + t]) * x[q * kInt8Kg + t];
        const int64_t col = p * kInt8Nr + c;
        g.y[i * g.ldy + col] = acc * g.w_scale[col] + (g.bias ? g.bias[col] : 0.f);
      }
    }
  }
}

void dequant_panel_scalar(const int8_t* panel, int64_t k, const float* scale, int nr, float* out) {
  for (int c = 0; c < kInt8Nr; ++c) {
    float* dst = out + (c / nr) * k * nr + c % nr;
    for (int64_t kk = 0; kk < k; ++kk)
      dst[kk * nr] = static_cast<float>(panel[((kk / kInt8Kg) * kInt8Nr + c) * kInt8Kg + kk % kInt8Kg]) * scale[c];
  }
}

void quant_dynamic_scalar(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq, float* scales) {
  const int64_t kpad = (k + kInt8Kg - 1) / kInt8Kg * kInt8Kg;
  for (int64_t i = 0; i < m; ++i) {
    int32_t zp = 0;
    quantize_row_a8_dynamic_ref(x + i * ldx, k, q + i * ldq, scales + i, &zp);
    for (int64_t j = k; j < kpad; ++j) q[i * ldq + j] = static_cast<uint8_t>(zp);
  }
}

void quant_static_scalar(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* q,
                         int64_t ldq) {
  const int64_t kpad = (k + kInt8Kg - 1) / kInt8Kg * kInt8Kg;
  for (int64_t i = 0; i < m; ++i) {
    quantize_row_u8_ref(x + i * ldx, k, scale, zp, q + i * ldq);
    for (int64_t j = k; j < kpad; ++j) q[i * ldq + j] = static_cast<uint8_t>(zp);
  }
}

}  // namespace shrink::kernels::detail
