// Packed fp32 GEMV (m = 1..4) for AVX-512: streams each [k][64] weight panel once, x rows broadcast from L1.
// No software prefetch: the panels are one sequential stream per thread, and measured prefetch distances of
// 2-32 KiB all lost 10-25% against the hardware prefetcher on Zen 5.
#include <immintrin.h>

#include "kernels/gemm/sgemm_blocking.h"

namespace shrink::kernels::detail {
namespace {

inline __mmask16 lane_mask(int valid) {
  valid = std::clamp(valid, 0, 16);
  return static_cast<__mmask16>((1u << valid) - 1u);
}

struct Avx512Gemv {
  static constexpr int kNr = kNrAvx512;

  // One row keeps two sets of accumulators over alternating k so eight FMA chains are in flight.
  template <int R>
  static void gemv(const float* x, int64_t ldx, const float* b, int64_t k, float* y, int64_t ldy, int nvalid,
                   const float* bias) {
    constexpr int S = R == 1 ? 2 : 1;
    __m512 acc[S][R][4];
#pragma GCC unroll 2
    for (int s = 0; s < S; ++s)
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) acc[s][r][j] = _mm512_setzero_ps();
    int64_t p = 0;
    for (; p + S <= k; p += S) {
#pragma GCC unroll 2
      for (int s = 0; s < S; ++s) {
        const float* bp = b + (p + s) * kNr;
        const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
        const __m512 b2 = _mm512_load_ps(bp + 32), b3 = _mm512_load_ps(bp + 48);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          const __m512 av = _mm512_set1_ps(x[r * ldx + p + s]);
          acc[s][r][0] = _mm512_fmadd_ps(av, b0, acc[s][r][0]);
          acc[s][r][1] = _mm512_fmadd_ps(av, b1, acc[s][r][1]);
          acc[s][r][2] = _mm512_fmadd_ps(av, b2, acc[s][r][2]);
          acc[s][r][3] = _mm512_fmadd_ps(av, b3, acc[s][r][3]);
        }
      }
    }
    for (; p < k; ++p) {
      const float* bp = b + p * kNr;
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 av = _mm512_set1_ps(x[r * ldx + p]);
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) acc[0][r][j] = _mm512_fmadd_ps(av, _mm512_load_ps(bp + 16 * j), acc[0][r][j]);
      }
    }
    __mmask16 mask[4];
    for (int j = 0; j < 4; ++j) mask[j] = lane_mask(nvalid - 16 * j);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m512 bv = bias ? _mm512_maskz_loadu_ps(mask[j], bias + 16 * j) : _mm512_setzero_ps();
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        __m512 v = _mm512_add_ps(acc[0][r][j], bv);
        if constexpr (S == 2) v = _mm512_add_ps(v, acc[S - 1][r][j]);
        _mm512_mask_storeu_ps(y + r * ldy + 16 * j, mask[j], v);
      }
    }
  }
};

}  // namespace

void sgemv_panels_avx512(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end) {
  gemv_panels<Avx512Gemv>(a, panel_begin, panel_end);
}

}  // namespace shrink::kernels::detail
