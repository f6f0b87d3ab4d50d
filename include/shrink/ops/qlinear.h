// Quantized Linear layers: the scheme names users type, the packed tensors a quantized layer is stored as (the
// same tensors in memory and in a compressed model file), and the factories that turn them into a fast Linear.
#pragma once

#include <shrink/core/tensor.h>
#include <shrink/ops/linear.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shrink {

enum class WeightScheme { F32, BF16, W8A16, W8A8, W4A16 };

// One layer's quantization. Spelled "f32", "bf16", "w8a16", "w8a8" (dynamic per-token activations),
// "w8a8-static" (per-tensor activation scale from calibration), "w4a16-g32|g64|g128" (symmetric) with an optional
// "-asym" (zero points), e.g. "w4a16-g128-asym". "w4a16" alone means group 32.
struct QuantSpec {
  WeightScheme scheme = WeightScheme::F32;
  int group = 0;             // W4A16: 32, 64 or 128
  bool asym = false;         // W4A16: zero point per group
  bool static_act = false;   // W8A8: activations quantized with act_scale / act_zero_point
  float act_scale = 0.f;     // static W8A8 only (from calibration)
  int32_t act_zero_point = 0;

  std::string name() const;  // the spelling above
  bool operator==(const QuantSpec&) const = default;
};
// Throws naming the text and listing the valid spellings.
QuantSpec parse_quant_spec(std::string_view text);

// A layer's weights in packed form. Tensor names in a compressed model file are `<slot>.<name>`:
//   W8A16 / W8A8: weight I8 [out, in], weight_scale F32 [out, 1]; static W8A8 also input_scale F32 [1] and
//                 input_zero_point I32 [1].
//   W4A16:        weight_packed U8 [out, w4_row_bytes(in, g)] (rows zero-padded to whole groups), weight_scale F16
//                 [out, groups], weight_zero_point U8 [out, groups] (asym only), weight_shape I64 [2] = {out, in}.
//   BF16:         weight BF16 [out, in].
//   all:          bias F32 [out] when the layer has one.
struct PackedLinear {
  QuantSpec spec;
  int64_t out = 0, in = 0;
  std::vector<std::pair<std::string, Tensor>> tensors;  // in the naming above

  const Tensor* find(std::string_view name) const;
  size_t bytes() const;  // all tensors together
  // Throws naming `what` (e.g. "model.layers.0.mlp.up_proj in /path") when a tensor is missing or has the wrong
  // dtype or shape for spec/out/in.
  void validate(const std::string& what) const;
};

// Round-to-nearest quantization of an fp32/f16/bf16 [out, in] weight (scalar reference quantizers of
// kernels/quant.h, threaded over rows). For W8A8-static the activation scale comes in through spec.
PackedLinear quantize_linear_weights(const Tensor& weight, const Tensor* bias, const QuantSpec& spec);

// The fast Linear for packed weights (ISA picked at run time); keeps the tensors it was given alive (they may be
// views into a mapped file). export_tensors() of the result returns the same PackedLinear tensors.
std::unique_ptr<Linear> make_packed_linear(PackedLinear packed);

// Drift monitoring (opt-in, off by default; when off a forward pays one relaxed atomic load): static-activation W8A8
// layers count the activations their calibrated range clips (quantized to code 0 or 255) and all they quantize.
void set_activation_clip_counting(bool on);
struct ActivationClipCount {
  uint64_t clipped = 0, total = 0;
};
// The counts of a static W8A8 layer since it was built; false for any other layer.
bool activation_clip_count(const Linear& layer, ActivationClipCount& out);

// Shorthand: quantize_linear_weights + make_packed_linear.
std::unique_ptr<Linear> make_quantized_linear(const Tensor& weight, const Tensor* bias, const QuantSpec& spec);

}  // namespace shrink
