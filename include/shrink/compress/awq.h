// AWQ (Lin et al. 2023, mit-han-lab/llm-awq auto_scale / auto_clip): per-input-channel scales s = s_x^alpha from
// the mean activation magnitude, alpha searched per group of linears by the group's output error after
// quantization, folded into the producing norm or linear; optional per-group weight clipping search.
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

struct AwqOptions {
  int grid = 20;      // alpha in {0, 1/grid, ..., (grid-1)/grid}; alpha 0 is plain rounding
  bool clip = false;  // search a max-value shrink per weight group (W8: per row)
  // clip: shrink ratios 1, 1 - 1/clip_grid, ... down to 1 - max_shrink (exclusive). llm-awq uses 20 steps to 0.5;
  // GPTQ's scale search grid (100 steps to 0.2) does better here: stories260K W4A16-g32 AWQ + clip 0.765 -> 0.739x
  // RTN's KLD (docs/awq-smoothquant-mixed.md).
  double max_shrink = 0.8;
  int clip_grid = 100;
  int64_t max_rows = 8192;  // calibration rows kept per group for the alpha search (magnitudes use every row)
  int64_t clip_rows = 512;  // rows (evenly sampled from the kept ones) for the clip search
  // llm-awq's loss: alpha ranked by the error of the whole decoder block's output (the group quantized with the
  // candidate scale, the rest of the block fp32) over the first block_rows calibration tokens, instead of the
  // group's own linear outputs.
  bool block_loss = false;
  int64_t block_rows = 4096;
};

struct AwqGroupReport {
  std::string first;     // the group's first linear
  std::string producer;  // where the scale was folded ("none": not scaled)
  double alpha = 0;
  double block_error_rtn = 0, block_error_scaled = 0;  // block_loss: relative block-output error at alpha 0 / chosen
  // Relative output error sum ||X (Q(W) - W)^T||^2 / sum ||X W^T||^2 over the group's planned linears on the kept
  // rows: round-to-nearest (alpha 0), with the chosen scale, and after clipping (== scaled without --awq-clip).
  double error_rtn = 0, error_scaled = 0, error_clipped = 0;
};

struct AwqReport {
  std::vector<AwqGroupReport> groups;
  int64_t calib_rows = 0;
  double time_ms = 0;
};

// Searches AWQ scales (and clips) for every group of a decoder block (LLaMA, GPT-2) holding a slot of `plan`,
// walking the blocks sequentially on the fp32 model (compress/sequential.h walk_decoder_blocks; the model is not
// changed: scaling is exact in fp32, so later blocks see the same inputs). Returns the rescaled tensors to
// rebuild the model with (scale_fold.h rebuild_model); quantizing that model round-to-nearest is AWQ.
// Groups without a foldable producer keep s = 1 (clipping still applies). Encoders: layer by layer, only BERT's
// value -> attention.output.dense is foldable (the post-LN norms also feed the residual, GELU precedes output.dense).
TensorMap awq_search(Model& model, const CalibSet& set, const std::map<std::string, QuantSpec>& plan,
                     const AwqOptions& opt, AwqReport* report = nullptr);

// One group's search on given rows x [rows, in] (the unit the tests check): the alpha minimizing the planned
// linears' output error; scales s (normalized: sqrt(max s * min s) = 1) written to `scales`. specs: one per
// weight (F32 entries are left out of the error).
double awq_search_alpha(const float* x, int64_t rows, const std::vector<float>& mean_abs,
                        const std::vector<const Tensor*>& weights, const std::vector<QuantSpec>& specs, int grid,
                        std::vector<float>* scales, double* error_rtn = nullptr, double* error_best = nullptr);

// The AWQ scales for one alpha: max(mean_abs, 1e-4)^alpha normalized so that sqrt(max s * min s) = 1.
std::vector<float> awq_scales(const std::vector<float>& mean_abs, double alpha);

// A weight [out, in] as the scaled group computes it: Q(W diag s) diag(1/s), fp32 (F32 spec: W).
Tensor awq_fake_quantize(const Tensor& weight, const std::vector<float>& s, const QuantSpec& spec);

// Clips weight [out, in] (fp32, in place) per quantization group (W4: spec.group columns; W8: the row) to the
// shrink ratio of max |w| minimizing that group's output error on x [rows, in] (opt.clip_rows rows evenly
// sampled); returns how many groups were clipped. Other schemes are left alone (0).
int64_t awq_clip(Tensor& weight, const QuantSpec& spec, const float* x, int64_t rows, const AwqOptions& opt);

}  // namespace shrink
