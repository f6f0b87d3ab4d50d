// Labelled text data (TSV) and classification metrics: accuracy, macro-F1, confusion matrix.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace shrink {

struct LabeledText {
  std::vector<std::string> texts;
  std::vector<int> labels;
};

// `sentence<TAB>label` with a header line (GLUE style). Labels are integers, or names found in
// `label_names` (a model's id2label). Errors name the file, line and field.
LabeledText read_labeled_tsv(const std::filesystem::path& path, const std::vector<std::string>& label_names = {});

struct ClassificationMetrics {
  double accuracy = 0, macro_f1 = 0;
  int64_t n = 0;
  std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
};

ClassificationMetrics classification_metrics(const std::vector<int>& predicted, const std::vector<int>& truth,
                                             int num_labels);

}  // namespace shrink
