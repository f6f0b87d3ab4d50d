// BF16-weight kernels for AVX2 + FMA: the AVX-512 design (bf16_avx512.cc) at 8 lanes; 16-row panels for the fp32
// 6x16 GEMM converted with 8x8 register transposes.
#include <immintrin.h>

#include <algorithm>

#include "kernels/bf16/bf16_kernels.h"
#include "kernels/gemm/sgemm_kernels.h"
#include "kernels/gemv_row_blocks.h"
#include "kernels/int4/transpose_simd.h"

namespace shrink::kernels::detail {
namespace {

inline __m256 widen(__m128i h) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// The last partial step of a row (k % 8 values), widened through a zero-padded copy.
inline __m128i load_tail_u16(const uint16_t* p, int64_t valid) {
  alignas(16) uint16_t buf[8] = {};
  for (int64_t i = 0; i < valid; ++i) buf[i] = p[i];
  return _mm_load_si128(reinterpret_cast<const __m128i*>(buf));
}

inline __m256 load_tail_f32(const float* p, int64_t valid) {
  alignas(32) float buf[8] = {};
  for (int64_t i = 0; i < valid; ++i) buf[i] = p[i];
  return _mm256_load_ps(buf);
}

template <int R, int NR>
void gemv_block(const Bf16Matrix& w, const float* x, int64_t ldx, int64_t o, float out[NR][R]) {
  const uint16_t* row[NR];
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j) row[j] = w.w + (o + j) * w.ld;
  __m256 acc[NR][R];
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[j][r] = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p + 8 <= w.k; p += 8) {
    __m256 xv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) xv[r] = _mm256_loadu_ps(x + r * ldx + p);
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      if (p % 32 == 0) _mm_prefetch(reinterpret_cast<const char*>(row[j] + NR * w.ld + p), _MM_HINT_T0);
      const __m256 wv = widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row[j] + p)));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[j][r] = _mm256_fmadd_ps(wv, xv[r], acc[j][r]);
    }
  }
  if (p < w.k) {
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      const __m256 wv = widen(load_tail_u16(row[j] + p, w.k - p));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[j][r] = _mm256_fmadd_ps(wv, load_tail_f32(x + r * ldx + p, w.k - p), acc[j][r]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[j][r]), _mm256_extractf128_ps(acc[j][r], 1));
      const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
      out[j][r] = _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
    }
}

template <int R>
void gemv_rows(const Bf16Matrix& w, const float* x, int64_t ldx, const float* bias, float* y, int64_t ldy, int64_t o0,
               int64_t o1) {
  constexpr int NR = R == 1 ? 4 : R == 2 ? 2 : 1;
  gemv_row_blocks<R, NR>(bias, y, ldy, o0, o1,
                         [&]<int N>(int64_t o, float out[N][R]) { gemv_block<R, N>(w, x, ldx, o, out); });
}

}  // namespace

void bf16_gemv_rows_avx2(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                         int64_t ldy, int64_t o0, int64_t o1) {
  switch (m) {
    case 1: return gemv_rows<1>(w, x, ldx, bias, y, ldy, o0, o1);
    case 2: return gemv_rows<2>(w, x, ldx, bias, y, ldy, o0, o1);
    case 3: return gemv_rows<3>(w, x, ldx, bias, y, ldy, o0, o1);
    default: return gemv_rows<4>(w, x, ldx, bias, y, ldy, o0, o1);
  }
}

void bf16_panel_avx2(const Bf16Matrix& w, int64_t row0, float* panel) {
  constexpr int kNr = kNrAvx2;
  const int64_t kp = bf16_panel_k(w.k);
  for (int jb = 0; jb < kNr / 8; ++jb) {
    const int64_t r0 = row0 + 8 * jb;
    const int rows = static_cast<int>(std::clamp<int64_t>(w.n - r0, 0, 8));
    float* dst = panel + 8 * jb;
    for (int64_t p = 0; p < kp; p += 8) {
      const int64_t valid = std::min<int64_t>(8, w.k - p);
      __m256 t[8];
      for (int j = 0; j < 8; ++j) {
        if (j >= rows || valid <= 0) {
          t[j] = _mm256_setzero_ps();
        } else {
          const uint16_t* src = w.w + (r0 + j) * w.ld + p;
          t[j] = widen(valid == 8 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(src)) : load_tail_u16(src, valid));
        }
      }
      transpose8x8(t);
      for (int i = 0; i < 8; ++i) _mm256_store_ps(dst + (p + i) * kNr, t[i]);
    }
  }
}

}  // namespace shrink::kernels::detail
