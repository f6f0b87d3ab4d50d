// Packed fp32 GEMM, 6x16 micro-kernel for AVX2+FMA: weights in [k][16] panels, 12 ymm accumulators.
#include <immintrin.h>

#include <cstring>

#include "kernels/gemm/sgemm_blocking.h"

namespace shrink::kernels::detail {
namespace {

struct Avx2 {
  static constexpr int kMr = 6, kNr = kNrAvx2;
  // kc 768 measured best on Zen 5 (README); mc 72 keeps the 72 x 768 slice of x (216 KiB) inside a 256 KiB L2
  // and lost only ~2% to mc 132 there.
  static constexpr int64_t kKc = 768, kMc = 72;

  // Full-width tile; a partial panel (nvalid < 16) goes through a 16-wide scratch tile instead of masked stores.
  template <int R>
  static void tile(const float* x, int64_t ldx, const float* b, int64_t kc, float* y, int64_t ldy, int nvalid,
                   TileInit init, const float* bias) {
    if (nvalid < kNr) {
      alignas(32) float tmp[R * kNr] = {};
      alignas(32) float bias_tmp[kNr] = {};
      for (int r = 0; r < R; ++r)
        if (init == TileInit::Accumulate) std::memcpy(tmp + r * kNr, y + r * ldy, sizeof(float) * nvalid);
      if (init == TileInit::Bias) std::memcpy(bias_tmp, bias, sizeof(float) * nvalid);
      full_tile<R>(x, ldx, b, kc, tmp, kNr, init, bias_tmp);
      for (int r = 0; r < R; ++r) std::memcpy(y + r * ldy, tmp + r * kNr, sizeof(float) * nvalid);
      return;
    }
    full_tile<R>(x, ldx, b, kc, y, ldy, init, bias);
  }

  template <int R>
  static void full_tile(const float* x, int64_t ldx, const float* b, int64_t kc, float* y, int64_t ldy, TileInit init,
                        const float* bias) {
    __m256 acc[R][2];
    if (init == TileInit::Accumulate) {
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        acc[r][0] = _mm256_loadu_ps(y + r * ldy);
        acc[r][1] = _mm256_loadu_ps(y + r * ldy + 8);
      }
    } else {
      const __m256 v0 = init == TileInit::Bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
      const __m256 v1 = init == TileInit::Bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        acc[r][0] = v0;
        acc[r][1] = v1;
      }
    }
    for (int64_t p = 0; p < kc; ++p) {
      const __m256 b0 = _mm256_load_ps(b + p * kNr), b1 = _mm256_load_ps(b + p * kNr + 8);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256 av = _mm256_broadcast_ss(x + r * ldx + p);
        acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(y + r * ldy, acc[r][0]);
      _mm256_storeu_ps(y + r * ldy + 8, acc[r][1]);
    }
  }
};

}  // namespace

void sgemm_panels_avx2(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end) {
  gemm_panels_blocked<Avx2>(a, panel_begin, panel_end);
}

}  // namespace shrink::kernels::detail
