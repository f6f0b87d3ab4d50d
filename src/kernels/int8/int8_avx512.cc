// AVX-512 (F/BW/VL/DQ) INT8 kernels that need no VNNI: the W8A16 GEMV, the panel dequantizer of the W8A16 GEMM,
// and A8 activation quantization. (The u8s8 GEMM of this set is the AVX2 one; see README.md.)
// GCC 12 flags the _mm512_undefined_* inside its own intrinsic headers as uninitialized (a false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#include <shrink/kernels/quant.h>

#include <cmath>

#include "kernels/int8/int8_kernels.h"

namespace shrink::kernels::detail {
namespace {

inline __mmask16 lane_mask(int lo, int hi, int j) {
  const int a = std::clamp(lo - 16 * j, 0, 16), b = std::clamp(hi - 16 * j, 0, 16);
  if (b <= a) return 0;
  return static_cast<__mmask16>(((1u << b) - 1u) & ~((1u << a) - 1u));
}

// Sums the 4 k-lanes of each column: acc[4j + i] holds columns 16j + 4i .. + 3, one per 128-bit lane, as
// (k0, k1, k2, k3). Returns the 16 sums of columns 16j .. 16j + 15 in order.
inline __m512 reduce_k_lanes(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));  // a02 b02 a13 b13
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512 s = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));  // lane L: a b c d
  // Element 4L + t is column 4t + L.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, s);
}

// W8A16 GEMV: a zmm holds 4 columns x 4 k-values of a group (16 bytes sign-extended), multiplied by x[4g .. 4g+3]
// broadcast to the four 128-bit lanes; 16 accumulators cover the 64 columns of a row. With one row the panel is
// one pass; with more, k runs in chunks of 64 groups (16 KiB, in L1) reused by each row, sums parked in acc_buf.
template <int R>
void w8a16_panel(const W8A16Args& g, const int8_t* b, int64_t groups, int64_t pcol, int lo, int hi) {
  constexpr int64_t kChunk = R == 1 ? (int64_t{1} << 62) : 64;
  alignas(64) float acc_buf[R][kInt8Nr * kInt8Kg] = {};
  __m512 acc[16];
  for (auto& v : acc) v = _mm512_setzero_ps();
  for (int64_t g0 = 0; g0 < groups; g0 += kChunk) {
    const int64_t g1 = std::min(groups, g0 + kChunk);
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) acc[i] = g0 ? _mm512_load_ps(acc_buf[r] + 16 * i) : _mm512_setzero_ps();
      const float* x = g.x + r * g.ldx;
      for (int64_t q = g0; q < g1; ++q) {
        const __m512 xv = _mm512_broadcast_f32x4(_mm_loadu_ps(x + q * kInt8Kg));
        const int8_t* bq = b + q * (kInt8Nr * kInt8Kg);
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) {
          const __m512i w = _mm512_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(bq + 16 * i)));
          acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(w), xv, acc[i]);
        }
      }
      if (g1 < groups || R > 1)
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) _mm512_store_ps(acc_buf[r] + 16 * i, acc[i]);
    }
  }
  for (int r = 0; r < R; ++r) {
    if (R > 1)
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) acc[i] = _mm512_load_ps(acc_buf[r] + 16 * i);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __mmask16 mask = lane_mask(lo, hi, j);
      if (!mask) continue;
      const int64_t col = pcol + 16 * j;
      const __m512 s = reduce_k_lanes(acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3]);
      const __m512 bias = g.bias ? _mm512_maskz_loadu_ps(mask, g.bias + col) : _mm512_setzero_ps();
      _mm512_mask_storeu_ps(g.y + r * g.ldy + col, mask, _mm512_fmadd_ps(s, _mm512_loadu_ps(g.w_scale + col), bias));
    }
  }
}

template <int R = 4>
void w8a16_panel_rows(int rows, const W8A16Args& g, const int8_t* b, int64_t groups, int64_t pcol, int lo, int hi) {
  if (rows == R) {
    w8a16_panel<R>(g, b, groups, pcol, lo, hi);
  } else if constexpr (R > 1) {
    w8a16_panel_rows<R - 1>(rows, g, b, groups, pcol, lo, hi);
  }
}

// x * inv rounded half away from zero (std::lround), plus zp, clamped to [0, 255]: bit-exact with the reference.
inline __m512i quantize16(__m512 x, __m512 inv, __m512 zp) {
  const __m512 v = _mm512_mul_ps(x, inv);
  const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 one = _mm512_or_ps(_mm512_and_ps(v, _mm512_set1_ps(-0.f)), _mm512_set1_ps(1.f));
  __m512 r = _mm512_add_ps(_mm512_mask_add_ps(t, up, t, one), zp);
  r = _mm512_min_ps(_mm512_max_ps(r, _mm512_setzero_ps()), _mm512_set1_ps(255.f));
  return _mm512_cvttps_epi32(r);
}

void quant_row(const float* x, int64_t k, float inv, int32_t zp, uint8_t* q) {
  const __m512 vinv = _mm512_set1_ps(inv), vzp = _mm512_set1_ps(static_cast<float>(zp));
  int64_t i = 0;
  for (; i + 16 <= k; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i),
                     _mm512_cvtusepi32_epi8(quantize16(_mm512_loadu_ps(x + i), vinv, vzp)));
  if (i < k) {
    const __mmask16 m = static_cast<__mmask16>((1u << (k - i)) - 1u);
    _mm512_mask_cvtusepi32_storeu_epi8(q + i, m, quantize16(_mm512_maskz_loadu_ps(m, x + i), vinv, vzp));
  }
  const int64_t kpad = (k + kInt8Kg - 1) / kInt8Kg * kInt8Kg;
  for (int64_t j = k; j < kpad; ++j) q[j] = static_cast<uint8_t>(zp);
}

float abs_max(const float* x, int64_t k) {
  __m512 m = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
  if (i < k)
    m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << (k - i)) - 1u), x + i)));
  return _mm512_reduce_max_ps(m);
}

}  // namespace

void w8a16_gemv_panels_avx512(const W8A16Args& g, int64_t p0, int64_t p1) {
  const int64_t groups = g.kpad / kInt8Kg;
  for_each_panel(g, p0, p1, [&](const int8_t* panel, int64_t pcol, int lo, int hi) {
    w8a16_panel_rows(static_cast<int>(g.m), g, panel, groups, pcol, lo, hi);
  });
}

void dequant_panel_avx512(const int8_t* panel, int64_t k, const float* scale, int nr, float* out) {
  // Within a 128-bit lane (4 columns x 4 k) gather by k; then dword t of every lane to lane t: 16 columns per k.
  const __m512i by_k = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
  const __m512i lanes = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const int64_t groups = (k + kInt8Kg - 1) / kInt8Kg;
  for (int64_t q = 0; q < groups; ++q) {
    const int8_t* bq = panel + q * (kInt8Nr * kInt8Kg);
    const int kt = static_cast<int>(std::min<int64_t>(kInt8Kg, k - q * kInt8Kg));
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {  // columns 16j .. 16j + 15
      const __m512i v = _mm512_permutexvar_epi32(lanes, _mm512_shuffle_epi8(_mm512_load_si512(bq + 64 * j), by_k));
      const __m512 s = _mm512_loadu_ps(scale + 16 * j);
      const int c = 16 * j;
      float* dst = out + (c / nr) * k * nr + c % nr;
      __m128i part[4] = {_mm512_castsi512_si128(v), _mm512_extracti32x4_epi32(v, 1), _mm512_extracti32x4_epi32(v, 2),
                         _mm512_extracti32x4_epi32(v, 3)};
      for (int t = 0; t < kt; ++t)
        _mm512_storeu_ps(dst + (q * kInt8Kg + t) * nr,
                         _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(part[t])), s));
    }
  }
}

void quant_dynamic_avx512(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq, float* scales) {
  for (int64_t i = 0; i < m; ++i) {
    const float amax = abs_max(x + i * ldx, k);
    const float s = amax > 0.f ? amax / 127.f : 1.f;
    scales[i] = s;
    quant_row(x + i * ldx, k, 1.f / s, 128, q + i * ldq);
  }
}

void quant_static_avx512(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* q,
                         int64_t ldq) {
  for (int64_t i = 0; i < m; ++i) quant_row(x + i * ldx, k, 1.f / scale, zp, q + i * ldq);
}

}  // namespace shrink::kernels::detail
