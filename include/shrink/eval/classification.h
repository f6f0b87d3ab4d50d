// Labelled text data (TSV), batched classifier runs, and classification metrics: accuracy, macro-F1, confusion.
#pragma once

#include <shrink/models/model.h>

#include <cstdint>
#include <filesystem>
#include <functional>
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

// The same file with every column kept (eval segments by any column) and each row's line number. With
// num_labels > 0, integer labels must lie in [0, num_labels) (the error names the file, line, column and the
// model's labels).
struct LabeledTable {
  LabeledText data;
  std::vector<std::string> columns;             // header names (empty without a header)
  std::vector<std::vector<std::string>> cells;  // [column][row]
  std::vector<int64_t> lines;                   // 1-based file line of each row
  // The cells of the column named `name`; throws naming the file's columns when there is none.
  const std::vector<std::string>& column(const std::string& name) const;
  std::string source;
};
LabeledTable read_labeled_table(const std::filesystem::path& path, const std::vector<std::string>& label_names = {},
                                int num_labels = 0);

struct ClassificationMetrics {
  double accuracy = 0, macro_f1 = 0;
  int64_t n = 0;
  std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
};

ClassificationMetrics classification_metrics(const std::vector<int>& predicted, const std::vector<int>& truth,
                                             int num_labels);

// Batched classifier runs (sorted by length into batches for less padding; results in input order).
struct RunOptions {
  int max_length = 128;        // tokens per text, special tokens included (also capped by the model's positions)
  int batch = 32;              // texts per forward
  bool sort_by_length = true;  // batch texts of similar length (less padding); results stay in input order
};

struct ClassifierRun {
  int num_labels = 0;
  std::vector<float> logits;     // [n][num_labels], input order
  std::vector<int32_t> lengths;  // tokens each text gave the model (after truncation, special tokens included)
  double seconds = 0;            // tokenization + forwards
  std::vector<int> predictions() const;
};

// Throws naming the model when it has no classification head. on_progress(done, total) after each batch.
ClassifierRun run_classifier(const EncoderModel& model, const std::vector<std::string>& texts, const RunOptions& opt,
                             const std::function<void(int64_t, int64_t)>& on_progress = {});

}  // namespace shrink
