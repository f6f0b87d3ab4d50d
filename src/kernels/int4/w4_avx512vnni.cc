// W4A16 decode GEMV for AVX-512 VNNI (llama.cpp's q4 x q8 idea): x is rounded to int8 once per call, one scale per
// 32 values, and nibbles meet it in vpdpbusd (u8 code x s8 x, four products per int32 lane); scales are applied per
// lane in fp32. ~11 vector ops per 128 weights instead of ~36 for the fp32-FMA GEMV (w4_avx512.cc), which is what
// lets decode run at the streaming-read rate with 2 cores. Cost: x carries int8 rounding (nmse ~1e-5 of the exact
// product for uniform x), far below the 4-bit weight error itself.
// Layout: a 64-byte chunk of a row is 16 int32 lanes; lane l covers elements 8l..8l+7 of the chunk (bytes 4l..4l+3).
// Low nibbles are the even elements, so x is stored per call as its even elements in order and its odd elements in
// order: byte t of lane l of the even array is x[8l + 2t], which is exactly what vpdpbusd pairs with the low nibbles.
// GCC 12 flags its own `__Y = __Y` (_mm512_undefined_*) inside inlined AVX-512 intrinsics; the header's fault.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/int4/w4_gemv_rows.h"
#include "kernels/int4/w4_kernels.h"

namespace shrink::kernels::detail {
namespace {

inline __mmask16 lane_mask(int64_t valid) {
  return valid >= 16 ? __mmask16(0xffff) : valid <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << valid) - 1u);
}

void prepare_xq(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, PreparedXq& p) {
  const int64_t kp = w.groups() * w.group;
  const int64_t chunks = (kp + 127) / 128;
  p.lanes = chunks * 16;
  // Resized, not cleared: the blocks below write every lane up to the last value of x; only the padding up to
  // whole 64-byte chunks is zeroed (this runs on every forward_rows call).
  p.xe.resize(static_cast<size_t>(m * p.lanes * 4));
  p.xo.resize(static_cast<size_t>(m * p.lanes * 4));
  p.dx.resize(static_cast<size_t>(m * p.lanes));
  p.xsum_f.resize(static_cast<size_t>(m * p.lanes));
  p.xsum_i.resize(static_cast<size_t>(m * p.lanes));
  const int64_t used = (w.k + 31) / 32 * 4;  // lanes holding x
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512 sign_off = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
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
      const __m512 a = _mm512_maskz_loadu_ps(lane_mask(w.k - e), xr + e);
      const __m512 c = _mm512_maskz_loadu_ps(lane_mask(w.k - e - 16), xr + e + 16);
      const __m512 ev = _mm512_permutex2var_ps(a, even, c), od = _mm512_permutex2var_ps(a, odd, c);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(ev, sign_off), _mm512_and_ps(od, sign_off)));
      const float d = amax / 127.f;
      const __m512 inv = _mm512_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
      const __m512i qe = _mm512_cvtps_epi32(_mm512_mul_ps(ev, inv)), qo = _mm512_cvtps_epi32(_mm512_mul_ps(od, inv));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(xe + e / 2), _mm512_cvtepi32_epi8(qe));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(xo + e / 2), _mm512_cvtepi32_epi8(qo));
      // Lane sums: lane l of this block holds evens 4l..4l+3 and odds 4l..4l+3 of the block.
      alignas(64) int32_t s[16];
      _mm512_store_si512(s, _mm512_add_epi32(qe, qo));
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

inline uint32_t count_mask(int64_t left, int per) {
  return left >= per ? (1u << per) - 1u : left > 0 ? (1u << left) - 1u : 0u;
}

// The per-lane weight scales (and zero points) of chunk c of one row: group = (128 c + 8 l) / G.
template <int G>
inline __m512 lane_scales(const uint16_t* s, int64_t c, int64_t groups, bool tail) {
  if constexpr (G == 128) {
    return _mm512_set1_ps(_cvtsh_ss(s[c]));
  } else {
    constexpr int kPer = 128 / G;  // groups per chunk: 4 (G 32) or 2 (G 64)
    const int64_t g0 = c * kPer;
    const __m128i h = tail      ? _mm_maskz_loadu_epi16(static_cast<__mmask8>(count_mask(groups - g0, kPer)), s + g0)
                      : G == 32 ? _mm_loadu_si64(s + g0)
                                : _mm_loadu_si32(s + g0);
    const __m512i idx = G == 32 ? _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3)
                                : _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_cvtph_ps(h)));
  }
}

template <int G>
inline __m512 lane_zeros(const uint8_t* z, int64_t c, int64_t groups, bool tail) {
  constexpr int kPer = G >= 128 ? 1 : 128 / G;
  const int64_t g0 = c * kPer;
  const __m128i b = tail ? _mm_maskz_loadu_epi8(static_cast<__mmask16>(count_mask(groups - g0, kPer)), z + g0)
                         : _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << kPer) - 1u), z + g0);
  const __m512i idx = G == 32   ? _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3)
                      : G == 64 ? _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
                                : _mm512_setzero_si512();
  return _mm512_cvtepi32_ps(_mm512_permutexvar_epi32(idx, _mm512_cvtepu8_epi32(b)));
}

template <int G, int R, int NR, bool Asym>
void gemv_block(const W4Matrix& w, const XqView px, int64_t o, float out[NR][R]) {
  const int64_t groups = w.groups(), rb = w.row_bytes(), chunks = px.lanes / 16;
  const __m512i low4 = _mm512_set1_epi8(15);
  __m512 acc[NR][R];
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[j][r] = _mm512_setzero_ps();
  for (int64_t c = 0; c < chunks; ++c) {
    // Only the last chunk of a row can be partial (bytes and groups alike); the others load without masks.
    const int64_t left = rb - 64 * c;
    const bool tail = left < 64;
    const __mmask64 mk = tail ? (__mmask64(1) << left) - 1 : ~__mmask64(0);
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      const uint8_t* row = w.codes + (o + j) * rb;
      // Rows are short streams (1-3 KiB) read NR at a time, too short for the hardware prefetcher to ramp up on:
      // fetch the same chunk of the next block of NR rows (measured README).
      _mm_prefetch(reinterpret_cast<const char*>(row + NR * rb + 64 * c), _MM_HINT_T0);
      const __m512i v = tail ? _mm512_maskz_loadu_epi8(mk, row + 64 * c) : _mm512_loadu_si512(row + 64 * c);
      const __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
      const __m512 s = lane_scales<G>(w.scales_f16 + (o + j) * groups, c, groups, tail);
      __m512 z;
      if constexpr (Asym) z = lane_zeros<G>(w.zero_points + (o + j) * groups, c, groups, tail);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const int64_t lane = r * px.lanes + 16 * c;
        __m512i ai = Asym ? _mm512_setzero_si512() : _mm512_loadu_si512(px.xsum_i + lane);
        ai = _mm512_dpbusd_epi32(ai, lo, _mm512_loadu_si512(px.xe + 4 * lane));
        ai = _mm512_dpbusd_epi32(ai, hi, _mm512_loadu_si512(px.xo + 4 * lane));
        __m512 t = _mm512_cvtepi32_ps(ai);
        if constexpr (Asym) t = _mm512_fnmadd_ps(z, _mm512_loadu_ps(px.xsum_f + lane), t);
        t = _mm512_mul_ps(t, _mm512_loadu_ps(px.dx + lane));
        acc[j][r] = _mm512_fmadd_ps(t, s, acc[j][r]);
      }
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) out[j][r] = _mm512_reduce_add_ps(acc[j][r]);
}

}  // namespace

void w4_gemv_rows_avx512vnni(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
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
