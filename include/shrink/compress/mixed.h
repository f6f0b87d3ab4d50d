// Automatic mixed precision: per-layer sensitivity (KLD of the model's output distribution when only that layer is
// quantized, for each candidate scheme), a greedy per-layer choice of the cheapest schemes (size or measured
// latency) within a KLD budget, verified on held-out windows with the worst layers backed off until it holds.
#pragma once

#include <shrink/compress/calibration.h>
#include <shrink/models/model.h>
#include <shrink/ops/qlinear.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace shrink {

enum class MixedObjective { Size, Latency };

struct MixedOptions {
  std::vector<std::string> candidates = {"w4a16-g32", "w4a16-g128", "w8a16", "w8a8", "bf16", "f32"};
  double budget_kld = 0.01;  // mean KL(fp32 || mixed) of the output distribution, nats
  // > 0: the budget is instead a metric drop (--budget drop=X): the held-out perplexity increase over fp32 in %
  // (decoders; the greedy starts from a KLD budget of ln(1 + X/100), the NLL increase it allows), or the held-out
  // accuracy loss in points (classifiers, on the labels of a TSV calibration set; the greedy starts from X/100).
  double budget_drop_pct = 0;
  MixedObjective objective = MixedObjective::Size;
  int64_t max_rows = 4096;  // output rows (decoder positions / encoder examples) scored per set
};

struct LayerSensitivity {
  std::string name;
  // Per candidate (MixedOptions::candidates order): KLD with only this layer in that scheme, its weight bytes,
  // and its measured single-row latency (microseconds, the median of repeated m = 1 calls).
  std::vector<double> kld;
  std::vector<size_t> bytes;
  std::vector<double> latency_us;
  int chosen = -1;  // index into candidates
};

struct MixedReport {
  std::vector<std::string> candidates;
  std::vector<LayerSensitivity> layers;
  double budget_kld = 0;       // 0 with a drop budget
  double budget_drop_pct = 0;  // 0 with a KLD budget
  double estimated_kld = 0;    // sum of the chosen layers' single-layer KLDs (the greedy's additive model)
  double measured_kld = 0;     // all chosen schemes together, on the held-out windows
  // Drop budget: held-out perplexity of fp32 and of the choice, and the increase in % (what the budget bounds).
  // Classifiers: held-out accuracy (%) of fp32 and of the choice; measured_drop_pct is then the loss in points.
  double base_ppl = 0, measured_ppl = 0, measured_drop_pct = 0;
  double base_accuracy = 0, measured_accuracy = 0;
  bool met = false;
  int backoffs = 0;  // layers raised to a higher precision after the measurement
  size_t bytes_before = 0, bytes_after = 0;
  double time_ms = 0;
  // The choice as quantize overrides: ^name$ -> scheme (f32 layers are left out).
  std::vector<std::pair<std::string, QuantSpec>> overrides() const;
};

// Mean KL(base || candidate) over rows of output logits of width `width` (decoders: every position's next-token
// distribution; encoders: the label distribution).
double mean_kld(const std::vector<float>& base, const std::vector<float>& cand, int64_t width);

// The model's output logits on a set, row after row (at most max_rows rows): decoders all positions of each
// sequence, encoders with a classifier one row per sequence. width receives the row width.
// rows (optional) receives the rows of each sequence (the first sequences' rows up to max_rows).
std::vector<float> output_logits(const Model& model, const CalibSet& set, int64_t max_rows, int64_t* width,
                                 std::vector<int64_t>* rows = nullptr);

// Accuracy in % of rows of classifier logits against labels (row r against labels[r]).
double accuracy_pct(const std::vector<float>& logits, const std::vector<int>& labels, int64_t width);

// Mean next-token NLL (nats) of decoder logits from output_logits: row j of a sequence scores token j + 1.
double mean_next_token_nll(const std::vector<float>& logits, const CalibSet& set, const std::vector<int64_t>& rows,
                           int64_t width);

// Sensitivities on `calib`, the greedy choice, and its verification on `heldout`, for the given slots (those the
// quantize pass would touch). The model is left as it was.
MixedReport choose_mixed_precision(Model& model, const std::vector<std::string>& slots, const CalibSet& calib,
                                   const CalibSet& heldout, const MixedOptions& opt);

}  // namespace shrink
