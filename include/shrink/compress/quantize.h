// The quantize pass: replaces the Linear of each selected slot with a packed (quantized) one, by scheme, per-layer
// overrides and skip patterns, round-to-nearest or static (calibrated activation scales).
#pragma once

#include <shrink/compress/awq.h>
#include <shrink/compress/mixed.h>
#include <shrink/compress/observers.h>
#include <shrink/compress/sequential.h>
#include <shrink/compress/smoothquant.h>
#include <shrink/models/model.h>
#include <shrink/ops/qlinear.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace shrink {

enum class QuantMethod { Rtn, Static, Gptq, Awq, SmoothQuant };
// "rtn" | "static" | "gptq" | "awq" | "smoothquant"; throws listing them
QuantMethod parse_quant_method(const std::string& text);

struct QuantizeOptions {
  QuantSpec scheme;  // for every selected slot without an override
  QuantMethod method = QuantMethod::Rtn;
  // Patterns are ECMAScript regular expressions searched in the slot name (anchor with ^...$ for a whole name).
  // The first matching override wins, e.g. {"mlp\\.down_proj", w8a16} keeps down_proj at 8 bits in a W4 model.
  std::vector<std::pair<std::string, QuantSpec>> overrides;
  std::vector<std::string> skip;  // slots left as they are (in addition to the defaults)
  // Defaults: the classifier heads of encoders (^classifier$, ^pre_classifier$), a ViT's patch projection (a conv
  // kernel in the checkpoint) and the lm_head of decoders are
  // left in the checkpoint's precision (the stories260K measurements in docs/quantization.md say why).
  bool default_skips = true;
  bool quantize_lm_head = false;  // quantize lm_head even with default_skips
  // Static W8A8: calibration text or TSV (compress/calibration.h read_calib_set), samples x seq_len tokens, and the
  // observer that turns each layer's input histogram into a u8 range (minmax | percentile | mse | kl | auto).
  // Weights stay round-to-nearest per channel.
  std::filesystem::path calib;
  // Image classifiers: the calibration images themselves (CalibSet::images), used instead of reading `calib`.
  std::vector<float> calib_images;
  int calib_samples = 64;
  int calib_seq_len = 128;
  ObserverOptions observer;
  // GPTQ (method Gptq): W4/W8 slots are quantized by compress/sequential.h gptq_model from `calib` (samples x
  // seq_len tokens); bf16 slots stay round-to-nearest.
  GptqOptions gptq;
  // AWQ (method Awq): W4/W8 weights of decoder blocks rescaled per input channel (compress/awq.h) from `calib`,
  // then rounded to nearest, or by GPTQ with awq_then_gptq.
  AwqOptions awq;
  bool awq_then_gptq = false;
  // SmoothQuant (method SmoothQuant): w8a8 / w8a8-static slots smoothed (compress/smoothquant.h) from `calib`.
  SmoothQuantOptions smooth;
  // Mixed precision (`--scheme auto`): per-layer schemes chosen by compress/mixed.h within a KLD budget from
  // `calib` (even windows: sensitivities, odd windows: the held-out check); `scheme` is then ignored.
  bool auto_scheme = false;
  MixedOptions mixed;
};

// The default skip patterns for this model (see QuantizeOptions::default_skips).
std::vector<std::string> default_skip_patterns(const Model& model, bool quantize_lm_head);

struct LayerQuantization {
  std::string name;
  std::string scheme;       // after the pass ("f32" for a skipped dense slot)
  std::string note;         // "skipped: <pattern>", "padded 172 -> 192 columns (group 32)", ...
  size_t bytes_before = 0;  // weight_bytes() of the slot before / after
  size_t bytes_after = 0;
};

struct QuantizeReport {
  std::vector<LayerQuantization> layers;
  size_t bytes_before = 0, bytes_after = 0;  // sums over the linears
  double time_ms = 0;                        // the whole pass (calibration included)
  double calib_ms = 0;
  size_t peak_rss_bytes = 0;  // process high-water mark after the pass
  GptqReport gptq;            // method Gptq: per block and per layer
  AwqReport awq;              // method Awq: per group
  SmoothQuantReport smooth;   // method SmoothQuant: per group
  MixedReport mixed;          // auto_scheme: the sensitivity table and the choice
};

// The slots the pass would quantize and their schemes (skips and overrides applied); throws like quantize_model.
std::map<std::string, QuantSpec> quantization_plan(Model& model, const QuantizeOptions& opt);

// Throws (before changing any slot) on a bad pattern, on a slot that is already packed (quantize the original
// model instead), on a static scheme without calibration data, and lists valid schemes for unknown ones.
QuantizeReport quantize_model(Model& model, const QuantizeOptions& opt);
// Every method; AWQ and SmoothQuant fold their scales into the norms and linears, which replaces `model` by a
// rebuilt one (scale_fold.h rebuild_model) before it is quantized. The Model& form throws for those two.
QuantizeReport quantize_model(std::unique_ptr<Model>& model, const QuantizeOptions& opt);

// Shown by `shrink info` / the pass when a scheme cannot take a layer's shape exactly (W4 rows padded to whole
// groups); empty when it fits.
std::string quant_shape_note(const QuantSpec& spec, int64_t in_features);

}  // namespace shrink
