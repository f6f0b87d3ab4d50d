// W4A16 kernels for AVX-512: GEMV with nibbles unpacked and converted in registers (fp32 FMA, fp16 scales), and
// the dequantization of 64-row panels for the fp32 6x64 GEMM micro-kernel.
// Nibble order: the low nibble of byte i is element 2i. Instead of shuffling nibbles back into element order, x is
// re-ordered once per call (per group: even elements, then odd), so a byte vector unpacks into two vectors that
// meet two contiguous x vectors. The panel path needs no re-ordering: it transposes anyway, and even/odd only
// decide which panel row a transposed vector is stored to.
// GCC 12 flags its own `__Y = __Y` (_mm512_undefined_*) inside inlined AVX-512 intrinsics; the header's fault.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <vector>

#include "kernels/gemm/sgemm_kernels.h"
#include "kernels/gemv_row_blocks.h"
#include "kernels/int4/transpose_simd.h"
#include "kernels/int4/w4_kernels.h"

namespace shrink::kernels::detail {
namespace {

constexpr int kLanes = 16;

inline __mmask16 lane_mask(int64_t valid) {
  return valid >= 16 ? __mmask16(0xffff) : valid <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << valid) - 1u);
}

// x of one call, per row: xp = the values per group in (even, odd) order, zero-padded to whole groups;
// xs = per group the lane-wise sum of its x vectors times -8 (symmetric) or -1 (asymmetric, times z later), so that
// a group accumulator starting there ends at sum (q - z) x.
struct PreparedX {
  std::vector<float> xp, xs;
  int64_t kp = 0, groups = 0;
};

void prepare_x(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, PreparedX& p) {
  const int G = w.group;
  p.groups = w.groups();
  p.kp = p.groups * G;
  p.xp.resize(static_cast<size_t>(m * p.kp));
  p.xs.resize(static_cast<size_t>(m * p.groups * kLanes));
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512 zmul = _mm512_set1_ps(w.zero_points ? -1.f : -8.f);
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * ldx;
    float* xp = p.xp.data() + r * p.kp;
    for (int64_t g = 0; g < p.groups; ++g) {
      __m512 sum = _mm512_setzero_ps();
      for (int c = 0; c < G / 32; ++c) {
        const int64_t e = g * G + 32 * c;
        const __m512 a = _mm512_maskz_loadu_ps(lane_mask(w.k - e), xr + e);
        const __m512 b = _mm512_maskz_loadu_ps(lane_mask(w.k - e - 16), xr + e + 16);
        const __m512 ev = _mm512_permutex2var_ps(a, even, b), od = _mm512_permutex2var_ps(a, odd, b);
        _mm512_storeu_ps(xp + g * G + 16 * c, ev);
        _mm512_storeu_ps(xp + g * G + G / 2 + 16 * c, od);
        sum = _mm512_add_ps(sum, _mm512_add_ps(ev, od));
      }
      _mm512_storeu_ps(p.xs.data() + (r * p.groups + g) * kLanes, _mm512_mul_ps(sum, zmul));
    }
  }
}

// Raw pointers of a PreparedX by value: through a reference to the thread_local, GCC reloads them from TLS in the
// hot loop.
struct XView {
  const float *xp, *xs;
  int64_t kp, groups;
};

// Scales (and zero points) of NR rows as floats, [NR][groups]: loaded once per row, broadcast from memory later.
template <int NR>
void row_params(const W4Matrix& w, int64_t o, int64_t groups, float* sf, float* zf) {
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j)
    for (int64_t g = 0; g < groups; g += 16) {
      const __mmask16 mk = lane_mask(groups - g);
      const __m256i h = _mm256_maskz_loadu_epi16(mk, w.scales_f16 + (o + j) * groups + g);
      _mm512_mask_storeu_ps(sf + j * groups + g, mk, _mm512_cvtph_ps(h));
      if (w.zero_points) {
        const __m128i z = _mm_maskz_loadu_epi8(mk, w.zero_points + (o + j) * groups + g);
        _mm512_mask_storeu_ps(zf + j * groups + g, mk, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(z)));
      }
    }
}

// NR output rows times R x rows. Per group: a fresh accumulator per (row, x row) gathers sum (q - z) x over the
// group's 16-byte chunks; it is then scaled into the running sum (one FMA per group).
template <int G, int R, int NR, bool Asym>
void gemv_block(const W4Matrix& w, const XView px, int64_t o, const float* sf, const float* zf, float out[NR][R]) {
  const int64_t groups = px.groups, rb = w.row_bytes(), kp = px.kp;
  const uint8_t* codes[NR];
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j) codes[j] = w.codes + (o + j) * rb;
  const __m512i low4 = _mm512_set1_epi32(15);
  __m512 acc[NR][R];
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[j][r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    // Short row streams read NR at a time: fetch the same line of the next block of rows (README).
    if ((g * G / 2) % 64 == 0)
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j)
        _mm_prefetch(reinterpret_cast<const char*>(codes[j] + NR * rb + g * G / 2), _MM_HINT_T0);
    __m512 gacc[NR][R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 xs = _mm512_loadu_ps(px.xs + (r * groups + g) * kLanes);
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) gacc[j][r] = Asym ? _mm512_mul_ps(xs, _mm512_set1_ps(zf[j * groups + g])) : xs;
    }
#pragma GCC unroll 4
    for (int c = 0; c < G / 32; ++c) {
      const float* xb = px.xp + g * G + 16 * c;
      __m512 xe[R], xo[R];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        xe[r] = _mm512_loadu_ps(xb + r * kp);
        xo[r] = _mm512_loadu_ps(xb + r * kp + G / 2);
      }
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) {
        const __m512i v =
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes[j] + g * G / 2 + 16 * c)));
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(v, low4));
        const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          gacc[j][r] = _mm512_fmadd_ps(lo, xe[r], gacc[j][r]);
          gacc[j][r] = _mm512_fmadd_ps(hi, xo[r], gacc[j][r]);
        }
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      const __m512 s = _mm512_set1_ps(sf[j * groups + g]);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[j][r] = _mm512_fmadd_ps(gacc[j][r], s, acc[j][r]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) out[j][r] = _mm512_reduce_add_ps(acc[j][r]);
}

template <int G, int R, bool Asym>
void gemv_rows(const W4Matrix& w, const XView px, const float* bias, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  // Four rows at a time share each x load and give independent FMA chains; fewer when m fills the registers.
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
void gemv_rows_m(const W4Matrix& w, const XView px, int64_t m, const float* bias, float* y, int64_t ldy, int64_t o0,
                 int64_t o1) {
  switch (m) {
    case 1: return gemv_rows<G, 1, Asym>(w, px, bias, y, ldy, o0, o1);
    case 2: return gemv_rows<G, 2, Asym>(w, px, bias, y, ldy, o0, o1);
    case 3: return gemv_rows<G, 3, Asym>(w, px, bias, y, ldy, o0, o1);
    default: return gemv_rows<G, 4, Asym>(w, px, bias, y, ldy, o0, o1);
  }
}

template <int G>
void panel_rows(const W4Matrix& w, int64_t r0, int rows, float* dst) {
  constexpr int kNr = kNrAvx512;
  const int64_t groups = w.groups(), rb = w.row_bytes();
  const __m512i low4 = _mm512_set1_epi32(15);
  for (int64_t g = 0; g < groups; ++g) {
    float s[16], zs[16];
    for (int j = 0; j < 16; ++j) {
      s[j] = j < rows ? _cvtsh_ss(w.scales_f16[(r0 + j) * groups + g]) : 0.f;
      zs[j] = j < rows ? s[j] * (w.zero_points ? w.zero_points[(r0 + j) * groups + g] : 8.f) : 0.f;
    }
    for (int c = 0; c < G / 32; ++c) {
      const int64_t byte = g * G / 2 + 16 * c, e0 = g * G + 32 * c;
      for (int half = 0; half < 2; ++half) {
        __m512 t[16];
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) {
          if (j < rows) {
            const __m512i v =
                _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.codes + (r0 + j) * rb + byte)));
            const __m512i q = half ? _mm512_srli_epi32(v, 4) : _mm512_and_si512(v, low4);
            t[j] = _mm512_fmsub_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(s[j]), _mm512_set1_ps(zs[j]));
          } else {
            t[j] = _mm512_setzero_ps();
          }
        }
        transpose16x16(t);
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) _mm512_store_ps(dst + (e0 + 2 * i + half) * kNr, t[i]);
      }
    }
  }
}

}  // namespace

void w4_gemv_rows_avx512(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                         int64_t ldy, int64_t o0, int64_t o1) {
  thread_local PreparedX px;
  prepare_x(w, x, m, ldx, px);
  const XView v{px.xp.data(), px.xs.data(), px.kp, px.groups};
  const bool asym = w.zero_points != nullptr;
  switch (w.group) {
    case 32:
      return asym ? gemv_rows_m<32, true>(w, v, m, bias, y, ldy, o0, o1)
                  : gemv_rows_m<32, false>(w, v, m, bias, y, ldy, o0, o1);
    case 64:
      return asym ? gemv_rows_m<64, true>(w, v, m, bias, y, ldy, o0, o1)
                  : gemv_rows_m<64, false>(w, v, m, bias, y, ldy, o0, o1);
    default:
      return asym ? gemv_rows_m<128, true>(w, v, m, bias, y, ldy, o0, o1)
                  : gemv_rows_m<128, false>(w, v, m, bias, y, ldy, o0, o1);
  }
}

void w4_panel_avx512(const W4Matrix& w, int64_t row0, float* panel) {
  constexpr int kNr = kNrAvx512;
  const int64_t kp = w.groups() * w.group;
  for (int jb = 0; jb < kNr / 16; ++jb) {
    const int64_t r0 = row0 + 16 * jb;
    const int rows = static_cast<int>(std::clamp<int64_t>(w.n - r0, 0, 16));
    float* dst = panel + 16 * jb;
    if (rows == 0) {
      for (int64_t p = 0; p < kp; ++p) _mm512_store_ps(dst + p * kNr, _mm512_setzero_ps());
      continue;
    }
    switch (w.group) {
      case 32: panel_rows<32>(w, r0, rows, dst); break;
      case 64: panel_rows<64>(w, r0, rows, dst); break;
      default: panel_rows<128>(w, r0, rows, dst); break;
    }
  }
}

}  // namespace shrink::kernels::detail
