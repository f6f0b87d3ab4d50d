// GPTQ (Frantar et al. 2022, IST-DASLab/gptq `fasterquant`): one layer's weights quantized column by column with
// the rounding error of each column spread over the not-yet-quantized ones through the inverse input Hessian.
#pragma once

#include <shrink/core/tensor.h>
#include <shrink/ops/qlinear.h>

#include <cstdint>
#include <mutex>
#include <vector>

namespace shrink {

struct GptqOptions {
  double damp = 0.01;      // percdamp: damp * mean(diag H) is added to the diagonal
  bool act_order = false;  // quantize columns in descending diag(H) order
  int block = 128;         // columns per lazy-update block (rounded up to a multiple of the W4 group)
  // Group parameters from the original weights in the original column order, before any update. Forced on with
  // act_order for W4 groups: our packed format has no per-column group index (GPTQ's g_idx), so a group must be
  // a contiguous run of original columns.
  bool static_groups = false;
};

// The input Hessian of one Linear, H = 2/n * sum over calibration rows x x^T ([in, in], fp32, accumulated with
// oneDNN sgemm). Thread-safe add(): several sequences may feed it.
class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t in);
  void add(const float* x, int64_t rows);  // rows of `in` values
  int64_t in() const { return in_; }
  int64_t rows() const { return rows_; }
  // 2/n * X^T X (all zeros when nothing was added).
  Tensor hessian() const;

 private:
  int64_t in_ = 0, rows_ = 0;
  std::vector<float> sum_;  // X^T X, full square
  mutable std::mutex mu_;
};

struct GptqStats {
  int64_t dead_columns = 0;  // columns never active in calibration (H_ii == 0): weight set to 0
  double damp_used = 0;      // the relative damping that made H positive definite (>= options.damp)
  double time_ms = 0;
};

// Quantizes weight [out, in] (F32/F16/BF16) with hessian [in, in] (F32) into the packed tensors of `spec`
// (W4A16 groups sym/asym, W8A16 and W8A8 per output row; the same layout as quantize_linear_weights). bias [out]
// is carried through. Throws naming the shapes when they disagree, on other schemes, or when H stays singular.
PackedLinear gptq_quantize(const Tensor& weight, const Tensor* bias, const Tensor& hessian, const QuantSpec& spec,
                           const GptqOptions& opt = {}, GptqStats* stats = nullptr);

}  // namespace shrink
