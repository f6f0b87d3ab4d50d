// What a decode GEMV prepared its x from last on this thread (W4 and W8A16 round x to int8): decode calls a layer once
// per 64-column unit (ops::linear_fused) and q/k/v on the same x, so the rounding is redone only when x, its shape or
// the weight layout (`tag`) changed. A memcmp of k floats per row is ~10x cheaper than rounding again. Internal
// linkage, as kernels/gemv_row_blocks.h: TUs built with different -m flags include it, and must not share code.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace shrink::kernels::detail {
namespace {

struct SameInput {
  std::vector<float> src;  // [m][k] the x remembered
  int64_t m = -1, k = -1, tag = -1;

  // Whether x [m][ldx] (k values per row) with this tag is the one remembered.
  bool same(const float* x, int64_t rows, int64_t ldx, int64_t cols, int64_t layout) const {
    if (m != rows || k != cols || tag != layout) return false;
    const size_t row_bytes = static_cast<size_t>(cols) * sizeof(float);
    for (int64_t r = 0; r < rows; ++r)
      if (std::memcmp(src.data() + r * cols, x + r * ldx, row_bytes) != 0) return false;
    return true;
  }
  // Remembers x, after what was prepared from it is complete.
  void remember(const float* x, int64_t rows, int64_t ldx, int64_t cols, int64_t layout) {
    src.resize(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(src.data() + r * cols, x + r * ldx, static_cast<size_t>(cols) * sizeof(float));
    m = rows;
    k = cols;
    tag = layout;
  }
};

}  // namespace
}  // namespace shrink::kernels::detail
