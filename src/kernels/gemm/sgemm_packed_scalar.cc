// Packed fp32 GEMM and GEMV in plain C++ (no intrinsics): 4x16 tiles over [k][16] panels, the SHRINK_ISA=scalar
// path and the fallback for CPUs without AVX2. The compiler vectorises the 16-wide inner loops with SSE2.
#include "kernels/gemm/sgemm_blocking.h"

namespace shrink::kernels::detail {
namespace {

struct Scalar {
  static constexpr int kMr = 4, kNr = kNrScalar;
  static constexpr int64_t kKc = 256, kMc = 64;

  // The 16-wide panel is done as two 8-wide halves: R x 8 accumulators (8 xmm at R = 4) stay in SSE2's 16
  // registers, where R x 16 spilled and ran at a third of the speed.
  template <int R>
  static void tile(const float* x, int64_t ldx, const float* b, int64_t kc, float* y, int64_t ldy, int nvalid,
                   TileInit init, const float* bias) {
    constexpr int kHalf = kNr / 2;
    for (int h = 0; h < kNr && h < nvalid; h += kHalf) {
      const int valid = std::min(kHalf, nvalid - h);
      float acc[R][kHalf];
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < kHalf; ++j)
          acc[r][j] = j >= valid                     ? 0.0f
                      : init == TileInit::Accumulate ? y[r * ldy + h + j]
                      : init == TileInit::Bias       ? bias[h + j]
                                                     : 0.0f;
      for (int64_t p = 0; p < kc; ++p) {
        const float* bp = b + p * kNr + h;
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          const float av = x[r * ldx + p];
#pragma GCC unroll 8
          for (int j = 0; j < kHalf; ++j) acc[r][j] += av * bp[j];
        }
      }
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < valid; ++j) y[r * ldy + h + j] = acc[r][j];
    }
  }

  template <int R>
  static void gemv(const float* x, int64_t ldx, const float* b, int64_t k, float* y, int64_t ldy, int nvalid,
                   const float* bias) {
    float acc[R][kNr] = {};
    for (int64_t p = 0; p < k; ++p) {
      const float* bp = b + p * kNr;
      for (int r = 0; r < R; ++r) {
        const float av = x[r * ldx + p];
        for (int j = 0; j < kNr; ++j) acc[r][j] += av * bp[j];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < nvalid; ++j) y[r * ldy + j] = acc[r][j] + (bias ? bias[j] : 0.0f);
  }
};

}  // namespace

void sgemm_panels_scalar(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end) {
  gemm_panels_blocked<Scalar>(a, panel_begin, panel_end);
}

void sgemv_panels_scalar(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end) {
  gemv_panels<Scalar>(a, panel_begin, panel_end);
}

}  // namespace shrink::kernels::detail
