// GPTQ (Frantar et al. 2022, IST-DASLab/gptq `fasterquant`): one layer's weights quantized column by column with
// the rounding error of each column spread over the not-yet-quantized ones through the inverse input Hessian.
#pragma once

#include <shrink/core/tensor.h>
#include <shrink/ops/qlinear.h>

#include <cstdint>
#include <mutex>
#include <vector>

namespace shrink {

// Per-group scale search (IST-DASLab/gptq Quantizer.find_params with mse=True): the range of each W4 group or W8 row
// is shrunk by p in {1, 1 - 1/grid, ..., above 1 - max_shrink} and the p with the lowest sum w_j |Q(v_j) - v_j|^norm
// (w_j: optional per-value importance, 1 without) is kept. p = 1 (the plain max scale) is always a candidate, so the
// chosen scale's error is never higher than the max scale's. grid = 0: off (the plain max scale).
struct ScaleSearchOptions {
  int grid = 0;  // the reference's value is 100
  double max_shrink = 0.8;
  double norm = 2.4;
  bool weighted = false;  // GPTQ: weight each column's error by its Hessian diagonal H_jj
};

struct GroupScaleChoice {
  float shrink = 1.f;                    // the chosen p
  float scale = 0.f;                     // the stored scale (W4: f16-rounded)
  int zero_point = 0;                    // W4: the code of 0 (8 when symmetric); W8: 0
  double error_max = 0, error_best = 0;  // sum w_j |Q(v_j) - v_j|^norm at p = 1 and at the chosen p
};

// The search on one group of n values (W4 sym/asym: a group, n <= spec.group, missing values count as zero padding;
// W8A16/W8A8: a row). importance: n weights or nullptr. Throws for schemes without integer weights.
GroupScaleChoice search_group_scale(const float* v, int64_t n, const QuantSpec& spec, const ScaleSearchOptions& opt,
                                    const float* importance = nullptr);

struct GptqOptions {
  double damp = 0.01;      // percdamp: damp * mean(diag H) is added to the diagonal
  bool act_order = false;  // quantize columns in descending diag(H) order
  int block = 128;         // columns per lazy-update block (rounded up to a multiple of the W4 group)
  // Group parameters from the original weights in the original column order, before any update. Forced on with
  // act_order for W4 groups: our packed format has no per-column group index (GPTQ's g_idx), so a group must be
  // a contiguous run of original columns.
  bool static_groups = false;
  // W4 group / W8 row scales by search instead of the max (grid 0: off). On by default: stories260K W4A16-g32 KLD
  // 0.676 -> 0.600x RTN's, with act-order 0.608 -> 0.591x (docs/gptq.md). Unweighted by default: weighting by diag H
  // helps with act-order (0.582x) but hurts without it (0.631x).
  ScaleSearchOptions scale_search{.grid = 100};
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
