// Run-time to compile-time dispatch and the output-row loop shared by the W4 GEMV TUs of every ISA. Each TU includes
// it with its own -m flags; everything is in an unnamed namespace so code built for different ISAs never merges.
#pragma once

#include <shrink/kernels/int4.h>

#include <cstdint>

namespace shrink::kernels::detail {
namespace {

// Calls fn.template operator()<G, R, Asym>() for the matrix's group (32, 64, else 128), m rows (1..3, else 4) and
// whether it has zero points.
template <class Fn>
inline void w4_gemv_dispatch(const W4Matrix& w, int64_t m, Fn&& fn) {
  const auto by_m = [&]<int G, bool Asym>() {
    switch (m) {
      case 1: return fn.template operator()<G, 1, Asym>();
      case 2: return fn.template operator()<G, 2, Asym>();
      case 3: return fn.template operator()<G, 3, Asym>();
      default: return fn.template operator()<G, 4, Asym>();
    }
  };
  const bool asym = w.zero_points != nullptr;
  switch (w.group) {
    case 32: return asym ? by_m.template operator()<32, true>() : by_m.template operator()<32, false>();
    case 64: return asym ? by_m.template operator()<64, true>() : by_m.template operator()<64, false>();
    default: return asym ? by_m.template operator()<128, true>() : by_m.template operator()<128, false>();
  }
}

// Output rows [o0, o1) of R x rows: blocks of NR weight rows (block.template operator()<NR>(o, out) fills
// out[NR][R]), then the rest one by one; adds the bias and stores into y (row stride ldy).
template <int R, int NR, class Block>
inline void w4_gemv_row_blocks(const float* bias, float* y, int64_t ldy, int64_t o0, int64_t o1, Block&& block) {
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
