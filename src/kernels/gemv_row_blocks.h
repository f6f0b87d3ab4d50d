// The output-row loop every row-sliced GEMV kernel shares (W4, BF16, each ISA): blocks of NR weight rows, then the
// rest one by one, plus bias, stored for m = R input rows. Internal linkage: each ISA's TU gets its own copy, so code
// built with different -m flags never merges.
#pragma once

#include <cstdint>

namespace shrink::kernels::detail {
namespace {

// Output rows [o0, o1) of R x rows: blocks of NR weight rows (block.template operator()<NR>(o, out) fills
// out[NR][R]), then the rest one by one; adds the bias and stores into y (row stride ldy).
template <int R, int NR, class Block>
inline void gemv_row_blocks(const float* bias, float* y, int64_t ldy, int64_t o0, int64_t o1, Block&& block) {
  int64_t o = o0;
  for (; o + NR <= o1; o += NR) {
    float out[NR][R];
    block.template operator()<NR>(o, out);
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j)
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) y[r * ldy + o + j] = out[j][r] + (bias ? bias[o + j] : 0.f);
  }
  for (; o < o1; ++o) {
    float out[1][R];
    block.template operator()<1>(o, out);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) y[r * ldy + o] = out[0][r] + (bias ? bias[o] : 0.f);
  }
}

}  // namespace
}  // namespace shrink::kernels::detail
