// Packed fp32 GEMV (m = 1..4) for AVX2+FMA: streams each [k][16] weight panel once.
#include <immintrin.h>

#include "kernels/gemm/sgemm_blocking.h"

namespace shrink::kernels::detail {
namespace {

struct Avx2Gemv {
  static constexpr int kNr = kNrAvx2;

  // Few rows keep several accumulator sets over consecutive k so >= 8 FMA chains are in flight.
  template <int R>
  static void gemv(const float* x, int64_t ldx, const float* b, int64_t k, float* y, int64_t ldy, int nvalid,
                   const float* bias) {
    constexpr int S = R == 1 ? 4 : (R == 2 ? 2 : 1);
    __m256 acc[S][R][2];
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s)
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[s][r][0] = acc[s][r][1] = _mm256_setzero_ps();
    int64_t p = 0;
    for (; p + S <= k; p += S) {
#pragma GCC unroll 4
      for (int s = 0; s < S; ++s) {
        const float* bp = b + (p + s) * kNr;
        const __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          const __m256 av = _mm256_broadcast_ss(x + r * ldx + p + s);
          acc[s][r][0] = _mm256_fmadd_ps(av, b0, acc[s][r][0]);
          acc[s][r][1] = _mm256_fmadd_ps(av, b1, acc[s][r][1]);
        }
      }
    }
    for (; p < k; ++p) {
      const __m256 b0 = _mm256_load_ps(b + p * kNr), b1 = _mm256_load_ps(b + p * kNr + 8);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m256 av = _mm256_broadcast_ss(x + r * ldx + p);
        acc[0][r][0] = _mm256_fmadd_ps(av, b0, acc[0][r][0]);
        acc[0][r][1] = _mm256_fmadd_ps(av, b1, acc[0][r][1]);
      }
    }
    // Unrolled like the loops above: a rolled loop indexing acc by a run-time r would keep acc in memory, and the
    // main loop would then store its accumulators every step (R = 4 ran at 62% of the paired read; R = 1 has no loop).
    alignas(32) float out[2 * 8];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      __m256 v0 = acc[0][r][0], v1 = acc[0][r][1];
#pragma GCC unroll 4
      for (int s = 1; s < S; ++s) {
        v0 = _mm256_add_ps(v0, acc[s][r][0]);
        v1 = _mm256_add_ps(v1, acc[s][r][1]);
      }
      _mm256_store_ps(out, v0);
      _mm256_store_ps(out + 8, v1);
      for (int j = 0; j < nvalid; ++j) y[r * ldy + j] = out[j] + (bias ? bias[j] : 0.0f);
    }
  }
};

}  // namespace

void sgemv_panels_avx2(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end) {
  gemv_panels<Avx2Gemv>(a, panel_begin, panel_end);
}

}  // namespace shrink::kernels::detail
