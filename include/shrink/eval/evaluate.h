// Evaluating a classifier on labelled data: batched, length-sorted runs of EncoderModel::forward (text) or
// EncoderModel::forward_images (ViT), and the report (accuracy, macro-F1, per-class, confusion, ECE, NLL;
// KLD/agreement with a baseline; per-segment) that `shrink eval`, `shrink classify --data`, recipes and sweeps share.
#pragma once

#include <shrink/eval/classification.h>
#include <shrink/eval/metrics.h>
#include <shrink/eval/stress.h>
#include <shrink/models/model.h>
#include <shrink/train/trainer.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace shrink {

// The metrics of one set of examples (all of them, or one segment).
struct ClassificationSummary {
  int64_t n = 0;
  double accuracy = 0, macro_f1 = 0;
  double ece = 0;                               // 15 equal-width bins
  double nll = 0;                               // mean -ln p(true label)
  std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
  std::vector<ClassMetrics> per_class;
  // With a baseline: mean KL(baseline || model) of the label distributions, share of equal argmaxes, and the
  // baseline's own accuracy on the same examples.
  bool has_baseline = false;
  double kld = 0, top1_agreement = 0, baseline_accuracy = 0;
};

// logits [n][num_labels]; `subset` (example indices) empty: all; baseline_logits nullptr: none.
ClassificationSummary summarize_classification(const std::vector<float>& logits, const std::vector<int>& labels,
                                               int num_labels, const std::vector<int64_t>& subset = {},
                                               const std::vector<float>* baseline_logits = nullptr);

struct SegmentReport {
  std::string by;  // "length", "label" or a column name
  std::vector<std::string> names;
  std::vector<ClassificationSummary> rows;  // non-empty segments only, in names order
};

// Segment value of every example: "length" (token-count buckets), "label" (the label's name) or a TSV column.
std::vector<std::string> segment_values(const std::string& by, const LabeledTable& table,
                                        const std::vector<int32_t>& lengths,
                                        const std::vector<std::string>& label_names, const LengthBuckets& buckets,
                                        std::vector<std::string>* order);

SegmentReport segment_report(const std::string& by, const std::vector<std::string>& values,
                             const std::vector<std::string>& order, const std::vector<float>& logits,
                             const std::vector<int>& labels, int num_labels,
                             const std::vector<float>* baseline_logits = nullptr);

// "LABEL_i" when the model has no name for label i.
std::vector<std::string> label_names_of(const ModelConfig& c);

struct EvalOptions {
  RunOptions run;
  std::vector<std::string> segment_by;          // "length", "label" or column names, in output order
  std::optional<LengthBuckets> length_buckets;  // unset: from the quartiles of the data's token counts
  bool stress = false;
  StressOptions stress_options;
};

struct EvalReport {
  std::string model, baseline;  // sources (baseline empty without one)
  std::vector<std::string> label_names;
  ClassificationSummary overall;  // with kld/top1_agreement/baseline_accuracy when there is a baseline
  std::optional<ClassificationSummary> baseline_summary;
  std::vector<SegmentReport> segments;
  std::vector<StressResult> stress;  // empty unless EvalOptions::stress
  StressOptions stress_options;
  int batch = 0;
  double seconds = 0;         // the model's run over the clean set (tokenization + forwards)
  double examples_per_s = 0;  // n / seconds
};

// The whole evaluation of `model` (and `baseline`, may be nullptr) on `data`. on_progress(stage, done, total).
EvalReport evaluate_classifier(const EncoderModel& model, const EncoderModel* baseline, const LabeledTable& data,
                               const EvalOptions& opt,
                               const std::function<void(const std::string&, int64_t, int64_t)>& on_progress = {});

// The engine's logits for every example of `data` in order, `batch` at a time: tokenized rows through forward, image
// rows (EncoderBatch::patches) through forward_images. Throws naming the model when it has no classification head or
// takes the other kind of input. `lengths` holds the rows' token counts (images: patches + 1).
ClassifierRun run_classifier(const EncoderModel& model, const train::ClassifySource& data, int batch,
                             const std::function<void(int64_t, int64_t)>& on_progress = {});

// The evaluation of an image classifier (ViT) on `images` (all of them): the same report as evaluate_classifier.
// Segments: "label" only (images have no length or columns); stress perturbations are text-only (both throw).
EvalReport evaluate_images(const EncoderModel& model, const EncoderModel* baseline, const train::ImageSet& images,
                           const EvalOptions& opt,
                           const std::function<void(const std::string&, int64_t, int64_t)>& on_progress = {});

// One object: the fields of DESIGN.md's eval contract (accuracy, macro_f1, n) and everything else of the report.
nlohmann::json to_json(const EvalReport& r);
// Aligned plain-text tables: summary, per-class, confusion, segments, stress.
std::string render_tables(const EvalReport& r);

nlohmann::json to_json(const ClassificationSummary& s, const std::vector<std::string>& label_names, bool detail);
nlohmann::json to_json(const SegmentReport& r);

}  // namespace shrink
