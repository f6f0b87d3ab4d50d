// TSV reader for labelled text and classification metrics.
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/eval/classification.h>

#include <charconv>
#include <sstream>

namespace shrink {

LabeledText read_labeled_tsv(const std::filesystem::path& path, const std::vector<std::string>& label_names) {
  const std::string data = read_text_file(path);
  LabeledText out;
  std::istringstream in(data);
  std::string line;
  int64_t lineno = 0;
  int text_col = 0, label_col = 1;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    std::vector<std::string> cols;
    size_t start = 0;
    for (size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1)
      cols.push_back(line.substr(start, tab - start));
    cols.push_back(line.substr(start));
    if (lineno == 1) {  // header: find the columns by name when present
      bool header = false;
      for (size_t i = 0; i < cols.size(); ++i) {
        if (cols[i] == "sentence" || cols[i] == "text") text_col = static_cast<int>(i), header = true;
        if (cols[i] == "label") label_col = static_cast<int>(i), header = true;
      }
      if (header) continue;
    }
    if (static_cast<int>(cols.size()) <= std::max(text_col, label_col))
      fail("{}:{}: expected at least {} tab-separated columns (sentence<TAB>label), found {}", path.string(), lineno,
           std::max(text_col, label_col) + 1, cols.size());
    const std::string& lab = cols[label_col];
    int label = -1;
    auto [p, ec] = std::from_chars(lab.data(), lab.data() + lab.size(), label);
    if (ec != std::errc() || p != lab.data() + lab.size()) {
      label = -1;
      for (size_t i = 0; i < label_names.size(); ++i)
        if (label_names[i] == lab) label = static_cast<int>(i);
      if (label < 0)
        fail("{}:{}: label '{}' is neither an integer nor one of the model's labels", path.string(), lineno, lab);
    }
    out.texts.push_back(cols[text_col]);
    out.labels.push_back(label);
  }
  if (out.texts.empty()) fail("{}: no examples found; expected lines of sentence<TAB>label", path.string());
  return out;
}

ClassificationMetrics classification_metrics(const std::vector<int>& predicted, const std::vector<int>& truth,
                                             int num_labels) {
  check(predicted.size() == truth.size(), "metrics: {} predictions for {} labels", predicted.size(), truth.size());
  ClassificationMetrics m;
  m.n = static_cast<int64_t>(truth.size());
  m.confusion.assign(num_labels, std::vector<int64_t>(num_labels, 0));
  int64_t correct = 0;
  for (size_t i = 0; i < truth.size(); ++i) {
    check(truth[i] >= 0 && truth[i] < num_labels, "metrics: label {} outside [0, {})", truth[i], num_labels);
    check(predicted[i] >= 0 && predicted[i] < num_labels, "metrics: prediction {} outside [0, {})", predicted[i],
          num_labels);
    m.confusion[truth[i]][predicted[i]]++;
    correct += truth[i] == predicted[i];
  }
  m.accuracy = m.n ? static_cast<double>(correct) / m.n : 0;
  double f1_sum = 0;
  for (int c = 0; c < num_labels; ++c) {
    int64_t tp = m.confusion[c][c], fp = 0, fn = 0;
    for (int o = 0; o < num_labels; ++o) {
      if (o == c) continue;
      fp += m.confusion[o][c];
      fn += m.confusion[c][o];
    }
    const double denom = 2.0 * tp + fp + fn;
    f1_sum += denom > 0 ? 2.0 * tp / denom : 0.0;
  }
  m.macro_f1 = num_labels ? f1_sum / num_labels : 0;
  return m;
}

}  // namespace shrink
