// SmoothQuant (Xiao et al. 2022, mit-han-lab/smoothquant smooth.py): activation outliers migrated into the
// weights before W8A8, s_j = max|X_j|^alpha / max|W_j|^(1-alpha), X / s folded into the producing norm or linear
// and W diag(s) into the group; alpha fixed or searched per group by the W8A8 output error.
#pragma once

#include <shrink/compress/calibration.h>
#include <shrink/compress/scale_fold.h>
#include <shrink/models/model.h>
#include <shrink/ops/qlinear.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace shrink {

struct SmoothQuantOptions {
  double alpha = 0.5;       // migration strength, in [0, 1]
  bool auto_alpha = false;  // per group: no smoothing or alpha in {0, 1/grid, ..., 1}, by W8A8 output error
  int grid = 20;
  int64_t max_rows = 4096;  // calibration rows kept per group for the auto search (max |X| uses every row)
};

struct SmoothGroupReport {
  std::string first;     // the group's first linear
  std::string producer;  // where 1/s was folded ("none": not smoothed)
  double alpha = -1;     // -1: not smoothed (no producer, or auto found no alpha better than none)
  // Relative W8A8 output error on the kept rows (static per-tensor activations when the group is w8a8-static,
  // else dynamic per-token), without and with the smoothing.
  double error_plain = 0, error_smoothed = 0;
};

struct SmoothQuantReport {
  std::vector<SmoothGroupReport> groups;
  double time_ms = 0;
};

// The reference's scales: s_j = clamp(max|X_j|^alpha / clamp(max_k max_r |W_k[r, j]|, 1e-5)^(1-alpha), 1e-5).
std::vector<float> smoothquant_scales(const std::vector<float>& act_max, const std::vector<const Tensor*>& weights,
                                      double alpha);

// Relative output error sum ||Q_a(x / s) Q_w(W diag s)^T - x W^T||^2 / sum ||x W^T||^2 over the weights [out, in]
// for x [rows, in]: W8 per output row, A8 u8 per tensor over the rows' min/max (static) or per row (dynamic).
double w8a8_output_error(const float* x, int64_t rows, const std::vector<const Tensor*>& weights,
                         const std::vector<float>& s, bool static_act);

// Smooths every group of a decoder block (LLaMA, GPT-2) holding a w8a8 slot of `plan` and a foldable producer,
// walking the blocks on the fp32 model (scale_fold.h search_channel_scales). Returns the edits for rebuild_model;
// the rebuilt model is then quantized w8a8 / w8a8-static as usual.
TensorMap smoothquant_search(Model& model, const CalibSet& set, const std::map<std::string, QuantSpec>& plan,
                             const SmoothQuantOptions& opt, SmoothQuantReport* report = nullptr);

}  // namespace shrink
