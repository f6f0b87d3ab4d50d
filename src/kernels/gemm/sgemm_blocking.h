// Cache blocking shared by the per-ISA packed fp32 GEMM/GEMV TUs. Templates only: each ISA TU instantiates
// them with its own (TU-local) micro-kernel type, so code built with different -m flags never merges.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/gemm/sgemm_kernels.h"

namespace shrink::kernels::detail {

// How a tile starts: from zero, from the bias row, or from the partial sums already in y (later k blocks).
enum class TileInit { Zero, Bias, Accumulate };

// Calls K::tile<rows> for a run-time row count 1..K::kMr.
template <class K, int R = K::kMr>
inline void gemm_tile_rows(int rows, const float* x, int64_t ldx, const float* b, int64_t kc, float* y, int64_t ldy,
                           int nvalid, TileInit init, const float* bias) {
  if (rows == R) {
    K::template tile<R>(x, ldx, b, kc, y, ldy, nvalid, init, bias);
  } else if constexpr (R > 1) {
    gemm_tile_rows<K, R - 1>(rows, x, ldx, b, kc, y, ldy, nvalid, init, bias);
  }
}

// K provides kMr, kNr, kKc (k block: a kc x nr weight micro-panel stays in L1), kMc (m block: the mc x kc slice
// of x stays in L2), and tile<R>(...). Loop order: m block, k block, panel, row tile.
template <class K>
void gemm_panels_blocked(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end) {
  for (int64_t ic = 0; ic < a.m; ic += K::kMc) {
    const int64_t mc = std::min<int64_t>(K::kMc, a.m - ic);
    for (int64_t pc = 0; pc < a.k; pc += K::kKc) {
      const int64_t kc = std::min<int64_t>(K::kKc, a.k - pc);
      const TileInit init = pc > 0 ? TileInit::Accumulate : (a.bias ? TileInit::Bias : TileInit::Zero);
      for (int64_t p = panel_begin; p < panel_end; ++p) {
        const int nvalid = static_cast<int>(std::min<int64_t>(K::kNr, a.n - p * K::kNr));
        const float* b = a.packed + (p * a.k + pc) * K::kNr;
        const float* bias = a.bias ? a.bias + p * K::kNr : nullptr;
        for (int64_t ir = ic; ir < ic + mc; ir += K::kMr) {
          const int rows = static_cast<int>(std::min<int64_t>(K::kMr, ic + mc - ir));
          gemm_tile_rows<K>(rows, a.x + ir * a.ldx + pc, a.ldx, b, kc, a.y + ir * a.ldy + p * K::kNr, a.ldy, nvalid,
                            init, bias);
        }
      }
    }
  }
}

// K provides kNr and gemv<R>(x, ldx, panel, k, y, ldy, nvalid, bias) for R = 1..kGemvMaxRows: one pass over each
// panel (contiguous), so each thread streams one contiguous range of the weights.
template <class K, int R = 4>
inline void gemv_rows(int rows, const float* x, int64_t ldx, const float* b, int64_t k, float* y, int64_t ldy,
                      int nvalid, const float* bias) {
  if (rows == R) {
    K::template gemv<R>(x, ldx, b, k, y, ldy, nvalid, bias);
  } else if constexpr (R > 1) {
    gemv_rows<K, R - 1>(rows, x, ldx, b, k, y, ldy, nvalid, bias);
  }
}

template <class K>
void gemv_panels(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end) {
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    const int nvalid = static_cast<int>(std::min<int64_t>(K::kNr, a.n - p * K::kNr));
    gemv_rows<K>(static_cast<int>(a.m), a.x, a.ldx, a.packed + p * a.k * K::kNr, a.k, a.y + p * K::kNr, a.ldy, nvalid,
                 a.bias ? a.bias + p * K::kNr : nullptr);
  }
}

}  // namespace shrink::kernels::detail
