// Run-time to compile-time dispatch and the output-row loop (kernels/gemv_row_blocks.h) shared by the W4 GEMV TUs of
// every ISA. Each TU includes it with its own -m flags; everything is in an unnamed namespace so code built for
// different ISAs never merges.
#pragma once

#include <shrink/kernels/int4.h>

#include <cstdint>
#include <vector>

#include "kernels/gemv_row_blocks.h"
#include "kernels/same_input.h"

namespace shrink::kernels::detail {
namespace {

// x of the q8 GEMVs (AVX2 vpmaddubsw, AVX-512 VNNI), rounded to int8 per 32 values. Per x row: xe / xo int8
// [lanes * 4] (even / odd elements), and per int32 lane its x scale and the sum of its eight int8 values (times -8
// for symmetric weights, added to the integer accumulator; plain for asymmetric ones). `lanes` per row is a multiple
// of the ISA's lanes per chunk. The rest is the x it was rounded from, so prepared_xq can reuse it.
struct PreparedXq {
  std::vector<int8_t> xe, xo;
  std::vector<float> dx, xsum_f;
  std::vector<int32_t> xsum_i;
  int64_t lanes = 0;
  SameInput input;  // the x rounded, its shape and the weight layout
};

// Raw pointers of a PreparedXq, passed by value so the hot loop keeps them in registers (the PreparedXq itself is
// thread_local; through a reference GCC reloads its members from TLS on every chunk).
struct XqView {
  const int8_t *xe, *xo;
  const float *dx, *xsum_f;
  const int32_t* xsum_i;
  int64_t lanes;
};

// Decode runs a layer as many calls of a few output rows each (ops::linear_fused units) on the same x: rounding x
// again for every call cost ~11% of a W4 decode on AVX2 (perf). p (thread_local in the caller) keeps the x it was
// rounded from and is reused while x, its shape and the weight layout are unchanged (a memcmp of k floats per row,
// ~10x cheaper); otherwise prepare(w, x, m, ldx, p), the ISA's rounding, fills it again.
template <class Prepare>
inline XqView prepared_xq(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, PreparedXq& p, Prepare&& prepare) {
  const bool asym = w.zero_points != nullptr;
  const int64_t layout = int64_t{w.group} * 2 + (asym ? 1 : 0);
  if (!p.input.same(x, m, ldx, w.k, layout)) {
    prepare(w, x, m, ldx, p);
    p.input.remember(x, m, ldx, w.k, layout);
  }
  return {p.xe.data(), p.xo.data(), p.dx.data(), p.xsum_f.data(), p.xsum_i.data(), p.lanes};
}

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

}  // namespace
}  // namespace shrink::kernels::detail
