// Calibration for static INT8: calibration sets read from user text, activation ranges observed while the model
// runs over them (per linear slot, with the observer picked per layer for `auto`), and W8 weights quantized with an
// observer-chosen clipping range.
#pragma once

#include <shrink/compress/observers.h>
#include <shrink/core/tensor.h>
#include <shrink/models/model.h>
#include <shrink/ops/qlinear.h>
#include <shrink/tokenizers/tokenizer.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace shrink {

struct CalibSet {
  std::vector<std::vector<int32_t>> sequences;  // token ids, for decoders and encoders
  // Image classifiers (ViT): pixel values [n][channels][image_size][image_size] as EncoderModel::forward_images takes
  // them; used instead of `sequences` for models that take images.
  std::vector<float> images;
  // Labels, one per sequence, when read by read_labeled_calib_set (else empty). The accuracy budget of --scheme
  // auto (drop=X) scores against them.
  std::vector<int> labels;
  bool empty() const { return sequences.empty() && images.empty(); }
};

// One unpadded row of an encoder batch (ids truncated to max_len when max_len > 0): what calibration and the
// mixed-precision search feed a text encoder, since padding would be seen as if it were text.
BatchEncoding one_row_batch(const std::vector<int32_t>& ids, int64_t max_len);

// Plain text: tokenized and split into `samples` non-overlapping windows of `seq_len` tokens spread evenly over
// the text (fewer when the text holds fewer whole windows), each starting with the tokenizer's special tokens.
// TSV (*.tsv): the first column is the text, one sample per line (a header line whose first column is "sentence"
// or "text" is skipped), `samples` lines spread evenly over the file, each encoded with special tokens and
// truncated to seq_len. Errors: missing file, empty file, fewer tokens than one window -> message naming the file,
// what was found and what to do.
CalibSet read_calib_set(const std::filesystem::path& path, const Tokenizer& tok, int samples, int seq_len);
// A classification TSV read by eval's read_labeled_table (sentence<TAB>label, columns found by header name, labels
// as integers or the model's label names, in [0, num_labels) when num_labels > 0; errors name the file and line),
// then sampled and encoded as the TSV branch of read_calib_set does, with each sample's label in CalibSet::labels.
CalibSet read_labeled_calib_set(const std::filesystem::path& path, const Tokenizer& tok, int samples, int seq_len,
                                const std::vector<std::string>& label_names, int num_labels);

struct ActRange {
  float lo = 0, hi = 0;  // the observer's clipping range of the layer's input
  float scale = 0;       // u8 static activation parameters (kernels::choose_u8_params(lo, hi))
  int32_t zero_point = 0;
  std::string observer;    // the observer that chose the range (for auto: the winner)
  double output_nmse = 0;  // auto only: nmse of the W8A8-static output vs fp32 on the sampled inputs (else 0)
  // opt.per_channel: min/max of each input channel (reported only: static A8 in our kernels is per tensor).
  std::vector<float> channel_lo, channel_hi;
};

// Runs the model once over the set, as calibration does: decoders DecoderModel::forward on each sequence (a new
// cache per sequence, truncated to the context, all positions' logits); text encoders EncoderModel::forward on one
// unpadded sequence at a time (padding would be observed as text), truncated to max_position_embeddings; image
// encoders forward_images on set.images. Throws naming the mismatch when the set does not fit the model.
void run_calibration_set(Model& model, const CalibSet& set);

// Runs the model over the set with every linear's input observed (each slot's impl is wrapped in an observing
// Linear decorator for the duration and restored after, also on error: no model code changes) and returns, per
// slot name, activation quantization parameters for u8 static activations. Decoders run DecoderModel::forward on
// each sequence (a new cache per sequence, truncated to the model's context); encoders run EncoderModel::forward
// on one unpadded sequence at a time, image encoders forward_images on set.images. Memory is bounded: histograms, not
// activations, except for "auto", which keeps <= 256 sampled input rows per layer (fewer for big models: all samples
// within 256 MiB) and picks per layer the observer whose W8A8-static output (RTN W8 weights) has the lowest nmse
// against the fp32 output on those rows.
std::map<std::string, ActRange> calibrate_activations(Model& model, const CalibSet& set, const ObserverOptions& opt);

// W8 weights ([out, in], any float dtype) with an observer-chosen symmetric clipping range: per output row when
// opt.per_channel, else one range for the whole tensor; "auto" picks per row (or tensor) the observer with the
// lowest weight quantization error. spec must be W8A16 or W8A8 (static W8A8 takes act_scale/zero_point from spec).
// "minmax" per channel equals quantize_linear_weights (RTN). Returns the same tensors as quantize_linear_weights.
PackedLinear quantize_w8_with_observer(const Tensor& weight, const Tensor* bias, const QuantSpec& spec,
                                       const ObserverOptions& opt);

}  // namespace shrink
