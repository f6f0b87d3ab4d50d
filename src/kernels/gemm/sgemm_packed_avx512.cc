// Packed fp32 GEMM, 6x64 micro-kernel for AVX-512: weights in [k][64] panels, x rows broadcast, 24 zmm
// accumulators (two 512-bit FMA ports at 4-cycle latency need >= 8 independent chains).
#include <immintrin.h>

#include "kernels/gemm/sgemm_blocking.h"

namespace shrink::kernels::detail {
namespace {

inline __mmask16 lane_mask(int valid) {
  valid = std::clamp(valid, 0, 16);
  return static_cast<__mmask16>((1u << valid) - 1u);
}

struct Avx512 {
  static constexpr int kMr = 6, kNr = kNrAvx512;
  // Measured on Zen 5 (README): a 768 x 64 weight micro-panel (192 KiB) and a 132 x 768 slice of x (396 KiB)
  // share a 1 MiB L2; BERT-base k = 768 then runs in one k block.
  static constexpr int64_t kKc = 768, kMc = 132;

  template <int R>
  static void tile(const float* x, int64_t ldx, const float* b, int64_t kc, float* y, int64_t ldy, int nvalid,
                   TileInit init, const float* bias) {
    const bool full = nvalid == kNr;
    __mmask16 mask[4];
    for (int j = 0; j < 4; ++j) mask[j] = lane_mask(nvalid - 16 * j);
    __m512 acc[R][4];
    if (init == TileInit::Accumulate) {
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j)
          acc[r][j] =
              full ? _mm512_loadu_ps(y + r * ldy + 16 * j) : _mm512_maskz_loadu_ps(mask[j], y + r * ldy + 16 * j);
    } else {
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m512 v = init == TileInit::Bias ? _mm512_maskz_loadu_ps(mask[j], bias + 16 * j) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[r][j] = v;
      }
    }
    for (int64_t p = 0; p < kc; ++p) {
      const float* bp = b + p * kNr;
      const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
      const __m512 b2 = _mm512_load_ps(bp + 32), b3 = _mm512_load_ps(bp + 48);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512 av = _mm512_set1_ps(x[r * ldx + p]);
        acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        acc[r][2] = _mm512_fmadd_ps(av, b2, acc[r][2]);
        acc[r][3] = _mm512_fmadd_ps(av, b3, acc[r][3]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        if (full)
          _mm512_storeu_ps(y + r * ldy + 16 * j, acc[r][j]);
        else
          _mm512_mask_storeu_ps(y + r * ldy + 16 * j, mask[j], acc[r][j]);
      }
  }
};

}  // namespace

void sgemm_panels_avx512(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end) {
  gemm_panels_blocked<Avx512>(a, panel_begin, panel_end);
}

}  // namespace shrink::kernels::detail
