// Per-input-channel scales for AWQ and SmoothQuant: where a group of linears' input comes from, folding a scale s
// into it (the group's weights W diag(s), the producing norm or linear rows divided by s, so the fp32 model computes
// the same function), the rebuilt model, and the fake-quantized weights both searches score candidates with.
#pragma once

#include <shrink/compress/calibration.h>
#include <shrink/compress/sequential.h>
#include <shrink/core/tensor.h>
#include <shrink/models/model.h>
#include <shrink/ops/qlinear.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace shrink {

// The op that produces the input of a group of linears and can absorb 1/s per channel.
enum class ScaleProducer {
  None,        // nothing foldable (GPT-2 mlp.c_proj after GELU; LLaMA o_proj under grouped-query attention)
  Norm,        // RMSNorm / LayerNorm weight (and LayerNorm bias)
  LinearRows,  // output rows [row0, row0 + in) of an earlier linear (v_proj -> o_proj, up_proj -> down_proj)
};

struct ScaleSite {
  std::vector<LinearSlot*> group;  // linears reading the one input
  ScaleProducer producer = ScaleProducer::None;
  std::string norm_weight, norm_bias;  // Norm: tensor names (norm_bias empty for RMSNorm)
  LinearSlot* prev = nullptr;          // LinearRows
  int64_t row0 = 0;
  std::string describe() const;  // "model.layers.0.input_layernorm", "model.layers.0.self_attn.v_proj rows", "none"
};

// The site of a decoder block group (DecoderModel::block_linears) from the slot names of LLaMA and GPT-2.
ScaleSite scale_site(const Model& model, const std::vector<LinearSlot*>& group);

// Working fp32 copies of the tensors a scale search rewrites; the model itself is not touched.
class ScaledTensors {
 public:
  explicit ScaledTensors(const Model& model) : model_(model) {}
  // The slot's weight [out, in] as rescaled (and clipped) so far; a writable fp32 copy made on first use.
  Tensor& weight(const LinearSlot& slot);
  // Group columns *= s, the producer / s. Throws for ScaleProducer::None.
  void fold(const ScaleSite& site, const std::vector<float>& s);
  // Every changed tensor under its checkpoint name and layout (GPT-2 Conv1D weights back to [in, out]).
  TensorMap edits() const;

 private:
  Tensor& bias(const LinearSlot& slot);
  Tensor& norm(const std::string& name);
  const Model& model_;
  std::map<std::string, Tensor> weights_, biases_, norms_;
  std::map<std::string, const LinearSlot*> slots_;
};

// A new model with `edits` replacing tensors of the same name (shapes checked) and the tokenizer taken over from
// `model` (which is left without one). Memory: the edited tensors plus the new model's dense linears.
std::unique_ptr<Model> rebuild_model(Model& model, const TensorMap& edits);

// A group's input as the scale searches need it: per-channel mean |x| and max |x| over every row seen, and the
// first max_rows rows kept ([kept, in]).
struct ChannelCapture {
  ChannelCapture(int64_t in, int64_t max_rows);
  void add(const float* x, int64_t rows);
  std::vector<float> mean_abs() const;
  int64_t kept() const { return static_cast<int64_t>(rows.size()) / in; }
  int64_t in, max_rows, seen = 0;
  std::vector<float> rows;
  std::vector<double> sum_abs;
  std::vector<float> max_abs;
};

// Called once per group of linears holding a planned slot, in execution order, with the group's captured input;
// folds its scale (and any other weight change) into `tensors`. `probe` runs the group's block on the fp32 model with
// the slots' implementations as they are at the call (a search may swap them, e.g. SlotSwap, to score a candidate).
using ScaleSearch = std::function<void(const ScaleSite& site, const ChannelCapture& input, ScaledTensors& tensors,
                                       const BlockProbe& probe)>;

// Walks a decoder's blocks sequentially on the fp32 model (compress/sequential.h walk_decoder_blocks; the model is
// not changed: a folded scale is exact in fp32, so later groups and blocks see the inputs they would see after
// folding), capturing every group that holds a slot of `planned`, and returns the edits for rebuild_model.
// Encoders (BERT, DistilBERT) are walked layer by layer instead (walk_encoder_layers; probe empty); other models throw
// naming the architecture.
TensorMap search_channel_scales(Model& model, const CalibSet& set, const std::vector<std::string>& planned,
                                int64_t max_rows, const ScaleSearch& search);

// Round-to-nearest quantize-dequantize of a weight [out, in] (any float dtype) with the reference quantizers of
// kernels/quant.h: what quantize_linear_weights stores, as fp32 [out, in]. F32 returns a copy.
Tensor fake_quantize_weights(const Tensor& weight, const QuantSpec& spec);

// Sum over rows of ||x (a - b)^T||^2 for x [rows, in] and weights a, b [out, in] (fp32): the squared output error
// of using a instead of b.
double output_sq_error(const float* x, int64_t rows, const Tensor& a, const Tensor& b);

}  // namespace shrink
