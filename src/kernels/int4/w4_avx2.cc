// W4A16 kernels for AVX2 + FMA + F16C: the AVX-512 design (w4_avx512.cc) at 8 lanes. GEMV with x re-ordered per
// group (even elements, then odd) so 8 bytes unpack into two 8-lane vectors; 16-row panels for the 6x16 GEMM.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/gemm/sgemm_kernels.h"
#include "kernels/gemv_row_blocks.h"
#include "kernels/int4/transpose_simd.h"
#include "kernels/int4/w4_kernels.h"

namespace shrink::kernels::detail {
namespace {

constexpr int kLanes = 8;

// As in w4_avx512.cc: xp per group (even, odd), zero-padded; xs = lane-wise group sums times -8 (sym) or -1 (asym).
struct PreparedX {
  std::vector<float> xp, xs;
  int64_t kp = 0, groups = 0;
};

void prepare_x(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, PreparedX& p) {
  const int G = w.group;
  p.groups = w.groups();
  p.kp = p.groups * G;
  p.xp.assign(static_cast<size_t>(m * p.kp), 0.f);
  p.xs.resize(static_cast<size_t>(m * p.groups * kLanes));
  const float zmul = w.zero_points ? -1.f : -8.f;
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * ldx;
    float* xp = p.xp.data() + r * p.kp;
    for (int64_t g = 0; g < p.groups; ++g) {
      const int64_t base = g * G;
      const int64_t end = std::min<int64_t>(G, w.k - base);
      for (int64_t i = 0; i < end; ++i) xp[base + (i & 1) * (G / 2) + i / 2] = xr[base + i];
      __m256 sum = _mm256_setzero_ps();
      for (int i = 0; i < G; i += kLanes) sum = _mm256_add_ps(sum, _mm256_loadu_ps(xp + base + i));
      _mm256_storeu_ps(p.xs.data() + (r * p.groups + g) * kLanes, _mm256_mul_ps(sum, _mm256_set1_ps(zmul)));
    }
  }
}

template <int NR>
void row_params(const W4Matrix& w, int64_t o, int64_t groups, float* sf, float* zf) {
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j) {
    const uint16_t* s = w.scales_f16 + (o + j) * groups;
    int64_t g = 0;
    for (; g + 8 <= groups; g += 8)
      _mm256_storeu_ps(sf + j * groups + g, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + g))));
    for (; g < groups; ++g) sf[j * groups + g] = _cvtsh_ss(s[g]);
    if (w.zero_points)
      for (g = 0; g < groups; ++g) zf[j * groups + g] = w.zero_points[(o + j) * groups + g];
  }
}

template <int G, int R, int NR, bool Asym>
void gemv_block(const W4Matrix& w, const PreparedX& px, int64_t o, const float* sf, const float* zf, float out[NR][R]) {
  const int64_t groups = px.groups, rb = w.row_bytes(), kp = px.kp;
  const uint8_t* codes[NR];
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j) codes[j] = w.codes + (o + j) * rb;
  const __m256i low4 = _mm256_set1_epi32(15);
  __m256 acc[NR][R];
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[j][r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    // Short row streams read NR at a time: fetch the same line of the next block of rows (README).
    if ((g * G / 2) % 64 == 0)
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j)
        _mm_prefetch(reinterpret_cast<const char*>(codes[j] + NR * rb + g * G / 2), _MM_HINT_T0);
    __m256 gacc[NR][R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 xs = _mm256_loadu_ps(px.xs.data() + (r * groups + g) * kLanes);
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) gacc[j][r] = Asym ? _mm256_mul_ps(xs, _mm256_set1_ps(zf[j * groups + g])) : xs;
    }
#pragma GCC unroll 8
    for (int c = 0; c < G / 16; ++c) {
      const float* xb = px.xp.data() + g * G + 8 * c;
      __m256 xe[R], xo[R];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        xe[r] = _mm256_loadu_ps(xb + r * kp);
        xo[r] = _mm256_loadu_ps(xb + r * kp + G / 2);
      }
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) {
        const __m256i v =
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes[j] + g * G / 2 + 8 * c)));
        const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(v, low4));
        const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          gacc[j][r] = _mm256_fmadd_ps(lo, xe[r], gacc[j][r]);
          gacc[j][r] = _mm256_fmadd_ps(hi, xo[r], gacc[j][r]);
        }
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      const __m256 s = _mm256_set1_ps(sf[j * groups + g]);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[j][r] = _mm256_fmadd_ps(gacc[j][r], s, acc[j][r]);
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

template <int G, int R, bool Asym>
void gemv_rows(const W4Matrix& w, const PreparedX& px, const float* bias, float* y, int64_t ldy, int64_t o0,
               int64_t o1) {
  // 16 ymm registers: four rows at m = 1, two at m = 2, one beyond.
  constexpr int NR = R == 1 ? 4 : R == 2 ? 2 : 1;
  thread_local std::vector<float> params;
  const int64_t groups = px.groups;
  params.resize(static_cast<size_t>(2 * NR * groups));
  float* sf = params.data();
  float* zf = sf + NR * groups;
  gemv_row_blocks<R, NR>(bias, y, ldy, o0, o1, [&]<int N>(int64_t o, float out[N][R]) {
    row_params<N>(w, o, groups, sf, zf);
    gemv_block<G, R, N, Asym>(w, px, o, sf, zf, out);
  });
}

template <int G, bool Asym>
void gemv_rows_m(const W4Matrix& w, const PreparedX& px, int64_t m, const float* bias, float* y, int64_t ldy,
                 int64_t o0, int64_t o1) {
  switch (m) {
    case 1: return gemv_rows<G, 1, Asym>(w, px, bias, y, ldy, o0, o1);
    case 2: return gemv_rows<G, 2, Asym>(w, px, bias, y, ldy, o0, o1);
    case 3: return gemv_rows<G, 3, Asym>(w, px, bias, y, ldy, o0, o1);
    default: return gemv_rows<G, 4, Asym>(w, px, bias, y, ldy, o0, o1);
  }
}

// 8 rows x 16 elements (8 bytes a row) per step: low and high nibbles each transposed into 8 panel rows.
void panel_rows(const W4Matrix& w, int64_t r0, int rows, float* dst) {
  constexpr int kNr = kNrAvx2;
  const int G = w.group;
  const int64_t groups = w.groups(), rb = w.row_bytes();
  const __m256i low4 = _mm256_set1_epi32(15);
  for (int64_t g = 0; g < groups; ++g) {
    float s[8], zs[8];
    for (int j = 0; j < 8; ++j) {
      s[j] = j < rows ? _cvtsh_ss(w.scales_f16[(r0 + j) * groups + g]) : 0.f;
      zs[j] = j < rows ? s[j] * (w.zero_points ? w.zero_points[(r0 + j) * groups + g] : 8.f) : 0.f;
    }
    for (int c = 0; c < G / 16; ++c) {
      const int64_t byte = g * G / 2 + 8 * c, e0 = g * G + 16 * c;
      for (int half = 0; half < 2; ++half) {
        __m256 t[8];
        for (int j = 0; j < 8; ++j) {
          if (j < rows) {
            const __m256i v =
                _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.codes + (r0 + j) * rb + byte)));
            const __m256i q = half ? _mm256_srli_epi32(v, 4) : _mm256_and_si256(v, low4);
            t[j] = _mm256_fmsub_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(s[j]), _mm256_set1_ps(zs[j]));
          } else {
            t[j] = _mm256_setzero_ps();
          }
        }
        transpose8x8(t);
        for (int i = 0; i < 8; ++i) _mm256_store_ps(dst + (e0 + 2 * i + half) * kNr, t[i]);
      }
    }
  }
}

}  // namespace

void w4_gemv_rows_avx2(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                       int64_t ldy, int64_t o0, int64_t o1) {
  thread_local PreparedX px;
  prepare_x(w, x, m, ldx, px);
  const bool asym = w.zero_points != nullptr;
  switch (w.group) {
    case 32:
      return asym ? gemv_rows_m<32, true>(w, px, m, bias, y, ldy, o0, o1)
                  : gemv_rows_m<32, false>(w, px, m, bias, y, ldy, o0, o1);
    case 64:
      return asym ? gemv_rows_m<64, true>(w, px, m, bias, y, ldy, o0, o1)
                  : gemv_rows_m<64, false>(w, px, m, bias, y, ldy, o0, o1);
    default:
      return asym ? gemv_rows_m<128, true>(w, px, m, bias, y, ldy, o0, o1)
                  : gemv_rows_m<128, false>(w, px, m, bias, y, ldy, o0, o1);
  }
}

void w4_panel_avx2(const W4Matrix& w, int64_t row0, float* panel) {
  constexpr int kNr = kNrAvx2;
  const int64_t kp = w.groups() * w.group;
  for (int jb = 0; jb < kNr / 8; ++jb) {
    const int64_t r0 = row0 + 8 * jb;
    const int rows = static_cast<int>(std::clamp<int64_t>(w.n - r0, 0, 8));
    float* dst = panel + 8 * jb;
    if (rows == 0) {
      for (int64_t p = 0; p < kp; ++p) _mm256_store_ps(dst + p * kNr, _mm256_setzero_ps());
      continue;
    }
    panel_rows(w, r0, rows, dst);
  }
}

}  // namespace shrink::kernels::detail
