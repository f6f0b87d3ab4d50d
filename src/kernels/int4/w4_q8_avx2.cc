// W4A16 decode GEMV for AVX2 without VNNI (llama.cpp's q4 x q8 AVX2 idea): the same int8 rounding of x as the
// AVX-512 VNNI GEMV (w4_avx512vnni.cc; one scale per 32 values, once per call), with vpmaddubsw (u8 code x s8 x,
// pairs summed to int16) and vpmaddwd (int16 pairs summed to int32) in place of vpdpbusd. ~14 vector ops per 64
// weights against ~20 for the fp32-FMA GEMV (w4_avx2.cc), which on a 2-core AVX2 VM ran decode at ~35% of the
// streaming read: compute-bound (README). No overflow: a u8 x s8 pair sum is at most 2 x 15 x 127 = 3,810 and two of
// them (low and high nibbles) 7,620, inside int16.
// Layout: a 32-byte chunk of a row is 8 int32 lanes; lane l covers elements 8l..8l+7 of the chunk's 64 (bytes
// 4l..4l+3). Low nibbles are the even elements, so x is stored per call as its even elements in order and its odd
// elements in order (per 32 values): byte t of lane l of the even array is x[8l + 2t], which vpmaddubsw pairs with
// the low nibble of byte t of the lane.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/int4/w4_gemv_rows.h"
#include "kernels/int4/w4_kernels.h"

namespace shrink::kernels::detail {
namespace {

inline __m256 load_first(const float* p, int64_t valid) {
  if (valid >= 8) return _mm256_loadu_ps(p);
  if (valid <= 0) return _mm256_setzero_ps();
  const __m256i mask =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_maskload_ps(p, mask);
}

// Even (Odd = false) or odd elements of a[0..7], b[0..7], in order.
template <bool Odd>
inline __m256 deinterleave(__m256 a, __m256 b) {
  const __m256 t =
      Odd ? _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)) : _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

// Two vectors of 8 int32 in [-127, 127] -> 16 int8 in order.
inline __m128i pack16(__m256i a, __m256i b) {
  const __m256i s16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), _MM_SHUFFLE(3, 1, 2, 0));
  const __m256i s8 = _mm256_permute4x64_epi64(_mm256_packs_epi16(s16, s16), _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castsi256_si128(s8);
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

void prepare_xq(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, PreparedXq& p) {
  const int64_t kp = w.groups() * w.group;
  const int64_t chunks = (kp + 63) / 64;
  p.lanes = chunks * 8;
  // Resized, not cleared: the blocks below write every lane up to the last value of x; only the padding up to
  // whole 32-byte chunks is zeroed (this runs on every forward_rows call).
  p.xe.resize(static_cast<size_t>(m * p.lanes * 4));
  p.xo.resize(static_cast<size_t>(m * p.lanes * 4));
  p.dx.resize(static_cast<size_t>(m * p.lanes));
  p.xsum_f.resize(static_cast<size_t>(m * p.lanes));
  p.xsum_i.resize(static_cast<size_t>(m * p.lanes));
  const int64_t used = (w.k + 31) / 32 * 4;  // lanes holding x
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const int32_t zmul = w.zero_points ? 1 : -8;
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * ldx;
    int8_t* xe = p.xe.data() + r * p.lanes * 4;
    int8_t* xo = p.xo.data() + r * p.lanes * 4;
    std::fill(xe + used * 4, xe + p.lanes * 4, int8_t{0});
    std::fill(xo + used * 4, xo + p.lanes * 4, int8_t{0});
    std::fill(p.dx.begin() + r * p.lanes + used, p.dx.begin() + (r + 1) * p.lanes, 0.f);
    std::fill(p.xsum_f.begin() + r * p.lanes + used, p.xsum_f.begin() + (r + 1) * p.lanes, 0.f);
    std::fill(p.xsum_i.begin() + r * p.lanes + used, p.xsum_i.begin() + (r + 1) * p.lanes, 0);
    // Blocks of 32 values = 4 lanes share one scale.
    for (int64_t b = 0; b * 32 < w.k; ++b) {
      const int64_t e = b * 32;
      const __m256 v0 = load_first(xr + e, w.k - e), v1 = load_first(xr + e + 8, w.k - e - 8);
      const __m256 v2 = load_first(xr + e + 16, w.k - e - 16), v3 = load_first(xr + e + 24, w.k - e - 24);
      const __m256 e0 = deinterleave<false>(v0, v1), e1 = deinterleave<false>(v2, v3);
      const __m256 o0 = deinterleave<true>(v0, v1), o1 = deinterleave<true>(v2, v3);
      const float amax = hmax(_mm256_max_ps(_mm256_max_ps(_mm256_and_ps(e0, abs_mask), _mm256_and_ps(e1, abs_mask)),
                                            _mm256_max_ps(_mm256_and_ps(o0, abs_mask), _mm256_and_ps(o1, abs_mask))));
      const float d = amax / 127.f;
      const __m256 inv = _mm256_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
      // cvtps rounds to nearest even, like the reference's nearbyint.
      const __m256i qe0 = _mm256_cvtps_epi32(_mm256_mul_ps(e0, inv)), qe1 = _mm256_cvtps_epi32(_mm256_mul_ps(e1, inv));
      const __m256i qo0 = _mm256_cvtps_epi32(_mm256_mul_ps(o0, inv)), qo1 = _mm256_cvtps_epi32(_mm256_mul_ps(o1, inv));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(xe + e / 2), pack16(qe0, qe1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(xo + e / 2), pack16(qo0, qo1));
      // Lane sums: lane l of this block holds evens 4l..4l+3 and odds 4l..4l+3 of the block.
      alignas(32) int32_t s[16];
      _mm256_store_si256(reinterpret_cast<__m256i*>(s), _mm256_add_epi32(qe0, qo0));
      _mm256_store_si256(reinterpret_cast<__m256i*>(s + 8), _mm256_add_epi32(qe1, qo1));
      for (int l = 0; l < 4; ++l) {
        const int32_t sum = s[4 * l] + s[4 * l + 1] + s[4 * l + 2] + s[4 * l + 3];
        const int64_t lane = r * p.lanes + b * 4 + l;
        p.dx[lane] = d;
        p.xsum_i[lane] = zmul * sum;
        p.xsum_f[lane] = static_cast<float>(sum);
      }
    }
  }
}

// Per-lane weight scales of chunk c of one row: lane l covers group (64 c + 8 l) / G. A tail chunk (16 bytes, only
// with G = 32) holds one group; its upper lanes meet zero x, so they take the same scale.
template <int G>
inline __m256 lane_scales(const uint16_t* s, int64_t c, bool tail) {
  if constexpr (G == 32) {
    if (tail) return _mm256_set1_ps(_cvtsh_ss(s[2 * c]));
    uint32_t two;
    std::memcpy(&two, s + 2 * c, sizeof two);
    const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(two)));
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(f), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
  } else {
    return _mm256_set1_ps(_cvtsh_ss(s[c * 64 / G]));
  }
}

template <int G>
inline __m256 lane_zeros(const uint8_t* z, int64_t c, bool tail) {
  if constexpr (G == 32) {
    const float z0 = z[2 * c], z1 = tail ? z0 : z[2 * c + 1];
    return _mm256_setr_ps(z0, z0, z0, z0, z1, z1, z1, z1);
  } else {
    return _mm256_set1_ps(z[c * 64 / G]);
  }
}

template <int G, int R, int NR, bool Asym>
void gemv_block(const W4Matrix& w, const XqView px, int64_t o, float out[NR][R]) {
  const int64_t rb = w.row_bytes(), chunks = px.lanes / 8;
  const __m256i low4 = _mm256_set1_epi8(15), ones16 = _mm256_set1_epi16(1);
  __m256 acc[NR][R];
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[j][r] = _mm256_setzero_ps();
  for (int64_t c = 0; c < chunks; ++c) {
    // Only the last chunk of a row can be partial (16 of 32 bytes): it goes through a zeroed copy.
    const int64_t left = rb - 32 * c;
    const bool tail = left < 32;
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      const uint8_t* row = w.codes + (o + j) * rb;
      // Rows are short streams (1-3 KiB) read NR at a time: fetch the same chunk of the next block of NR rows, as
      // the VNNI GEMV does (README).
      _mm_prefetch(reinterpret_cast<const char*>(row + NR * rb + 32 * c), _MM_HINT_T0);
      __m256i v;
      if (!tail) {
        v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * c));
      } else {
        alignas(32) uint8_t buf[32] = {};
        std::memcpy(buf, row + 32 * c, static_cast<size_t>(left));
        v = _mm256_load_si256(reinterpret_cast<const __m256i*>(buf));
      }
      const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
      const __m256 s = lane_scales<G>(w.scales_f16 + (o + j) * w.groups(), c, tail);
      __m256 z;
      if constexpr (Asym) z = lane_zeros<G>(w.zero_points + (o + j) * w.groups(), c, tail);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const int64_t lane = r * px.lanes + 8 * c;
        const __m256i pe =
            _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(px.xe + 4 * lane)));
        const __m256i po =
            _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(px.xo + 4 * lane)));
        __m256i ai = _mm256_madd_epi16(_mm256_add_epi16(pe, po), ones16);
        if constexpr (!Asym)
          ai = _mm256_add_epi32(ai, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(px.xsum_i + lane)));
        __m256 t = _mm256_cvtepi32_ps(ai);
        if constexpr (Asym) t = _mm256_fnmadd_ps(z, _mm256_loadu_ps(px.xsum_f + lane), t);
        t = _mm256_mul_ps(t, _mm256_loadu_ps(px.dx + lane));
        acc[j][r] = _mm256_fmadd_ps(t, s, acc[j][r]);
      }
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) out[j][r] = hsum(acc[j][r]);
}

}  // namespace

void w4_gemv_rows_q8_avx2(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                          int64_t ldy, int64_t o0, int64_t o1) {
  thread_local PreparedXq px;
  const XqView v = prepared_xq(w, x, m, ldx, px, prepare_xq);
  w4_gemv_dispatch(w, m, [&]<int G, int R, bool Asym>() {
    constexpr int NR = R <= 2 ? 4 : 2;
    gemv_row_blocks<R, NR>(bias, y, ldy, o0, o1,
                           [&]<int N>(int64_t o, float out[N][R]) { gemv_block<G, R, N, Asym>(w, v, o, out); });
  });
}

}  // namespace shrink::kernels::detail
