// BF16-weight kernels for AVX-512: bf16 widened to fp32 in registers (zero-extend, shift left 16) with fp32 FMA;
// 64-row panels for the fp32 6x64 GEMM micro-kernel converted with 16x16 register transposes.
// GCC 12 flags its own `__Y = __Y` (_mm512_undefined_*) inside inlined AVX-512 intrinsics; the header's fault.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>

#include "kernels/bf16/bf16_kernels.h"
#include "kernels/gemm/sgemm_kernels.h"
#include "kernels/gemv_row_blocks.h"
#include "kernels/int4/transpose_simd.h"

namespace shrink::kernels::detail {
namespace {

inline __mmask16 lane_mask(int64_t valid) {
  return valid >= 16 ? __mmask16(0xffff) : valid <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << valid) - 1u);
}

inline __m512 widen(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

template <int R, int NR>
void gemv_block(const Bf16Matrix& w, const float* x, int64_t ldx, int64_t o, float out[NR][R]) {
  const uint16_t* row[NR];
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j) row[j] = w.w + (o + j) * w.ld;
  __m512 acc[NR][R];
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[j][r] = _mm512_setzero_ps();
  int64_t p = 0;
  for (; p < w.k; p += 16) {
    const __mmask16 mk = lane_mask(w.k - p);
    const bool full = mk == 0xffff;
    __m512 xv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
      xv[r] = full ? _mm512_loadu_ps(x + r * ldx + p) : _mm512_maskz_loadu_ps(mk, x + r * ldx + p);
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      // Short row streams read NR at a time: fetch the same place in the next block of rows (README).
      if (p % 32 == 0) _mm_prefetch(reinterpret_cast<const char*>(row[j] + NR * w.ld + p), _MM_HINT_T0);
      const __m256i h = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row[j] + p))
                             : _mm256_maskz_loadu_epi16(mk, row[j] + p);
      const __m512 wv = widen(h);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[j][r] = _mm512_fmadd_ps(wv, xv[r], acc[j][r]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) out[j][r] = _mm512_reduce_add_ps(acc[j][r]);
}

template <int R>
void gemv_rows(const Bf16Matrix& w, const float* x, int64_t ldx, const float* bias, float* y, int64_t ldy, int64_t o0,
               int64_t o1) {
  constexpr int NR = R <= 2 ? 4 : 2;
  gemv_row_blocks<R, NR>(bias, y, ldy, o0, o1,
                         [&]<int N>(int64_t o, float out[N][R]) { gemv_block<R, N>(w, x, ldx, o, out); });
}

}  // namespace

void bf16_gemv_rows_avx512(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                           int64_t ldy, int64_t o0, int64_t o1) {
  switch (m) {
    case 1: return gemv_rows<1>(w, x, ldx, bias, y, ldy, o0, o1);
    case 2: return gemv_rows<2>(w, x, ldx, bias, y, ldy, o0, o1);
    case 3: return gemv_rows<3>(w, x, ldx, bias, y, ldy, o0, o1);
    default: return gemv_rows<4>(w, x, ldx, bias, y, ldy, o0, o1);
  }
}

void bf16_panel_avx512(const Bf16Matrix& w, int64_t row0, float* panel) {
  constexpr int kNr = kNrAvx512;
  const int64_t kp = bf16_panel_k(w.k);
  for (int jb = 0; jb < kNr / 16; ++jb) {
    const int64_t r0 = row0 + 16 * jb;
    const int rows = static_cast<int>(std::clamp<int64_t>(w.n - r0, 0, 16));
    float* dst = panel + 16 * jb;
    if (rows == 0) {
      for (int64_t p = 0; p < kp; ++p) _mm512_store_ps(dst + p * kNr, _mm512_setzero_ps());
      continue;
    }
    for (int64_t p = 0; p < kp; p += 16) {
      const __mmask16 mk = lane_mask(w.k - p);
      __m512 t[16];
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j)
        t[j] = j < rows ? widen(_mm256_maskz_loadu_epi16(mk, w.w + (r0 + j) * w.ld + p)) : _mm512_setzero_ps();
      transpose16x16(t);
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) _mm512_store_ps(dst + (p + i) * kNr, t[i]);
    }
  }
}

}  // namespace shrink::kernels::detail
