// TSV reader for labelled text (all columns kept for segments) and classification metrics.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/core/timer.h>
#include <shrink/eval/classification.h>

#include <algorithm>
#include <charconv>
#include <numeric>
#include <sstream>

namespace shrink {

namespace {

std::string label_list(const std::vector<std::string>& names, int num_labels) {
  std::string s;
  for (int i = 0; i < num_labels; ++i) {
    if (i) s += ", ";
    s += std::to_string(i);
    if (i < static_cast<int>(names.size())) s += "=" + names[i];
  }
  return s;
}

// strict: rows must have as many columns as the header (eval keeps every column); otherwise only the text and label
// columns must be present (training and classify read sentence<TAB>label files as they always did).
LabeledTable read_table(const std::filesystem::path& path, const std::vector<std::string>& label_names, int num_labels,
                        bool strict) {
  const std::string data = read_text_file(path);
  LabeledTable t;
  t.source = path.string();
  LabeledText& out = t.data;
  std::istringstream in(data);
  std::string line;
  int64_t lineno = 0;
  int text_col = 0, label_col = 1;
  bool header = false;
  std::vector<std::string> cols;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    cols.clear();
    size_t start = 0;
    for (size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1)
      cols.push_back(line.substr(start, tab - start));
    cols.push_back(line.substr(start));
    if (lineno == 1) {  // header: find the columns by name when present
      for (size_t i = 0; i < cols.size(); ++i) {
        if (cols[i] == "sentence" || cols[i] == "text") text_col = static_cast<int>(i), header = true;
        if (cols[i] == "label") label_col = static_cast<int>(i), header = true;
      }
      if (header) {
        t.columns = cols;
        t.cells.resize(cols.size());
        continue;
      }
    }
    const size_t need = static_cast<size_t>(std::max(text_col, label_col)) + 1;
    if (cols.size() < need)
      fail("{}:{}: expected at least {} tab-separated columns (sentence<TAB>label), found {}", path.string(), lineno,
           need, cols.size());
    if (strict && header && cols.size() != t.columns.size())
      fail(
          "{}:{}: expected {} tab-separated columns as in the header ({}), found {}; a sentence must not contain a tab",
          path.string(), lineno, t.columns.size(), fmt::format("{}", fmt::join(t.columns, ", ")), cols.size());
    const std::string& lab = cols[label_col];
    const std::string field =
        header ? "column '" + t.columns[label_col] + "'" : "column " + std::to_string(label_col + 1);
    int label = -1;
    auto [p, ec] = std::from_chars(lab.data(), lab.data() + lab.size(), label);
    if (ec != std::errc() || p != lab.data() + lab.size()) {
      label = -1;
      for (size_t i = 0; i < label_names.size(); ++i)
        if (label_names[i] == lab) label = static_cast<int>(i);
      if (label < 0)
        fail("{}:{}: label '{}' ({}) is neither an integer nor one of the model's labels{}", path.string(), lineno, lab,
             field,
             label_names.empty() ? "" : " (" + label_list(label_names, static_cast<int>(label_names.size())) + ")");
    } else if (label < 0 || (num_labels > 0 && label >= num_labels)) {
      fail(
          "{}:{}: label {} ({}) is not one of the model's {} labels ({}); evaluate with a model trained for these "
          "labels or fix the file",
          path.string(), lineno, label, field, num_labels, label_list(label_names, num_labels));
    }
    out.texts.push_back(cols[text_col]);
    out.labels.push_back(label);
    t.lines.push_back(lineno);
    if (header)
      for (size_t c = 0; c < t.columns.size(); ++c) t.cells[c].push_back(c < cols.size() ? cols[c] : std::string());
  }
  if (out.texts.empty()) fail("{}: no examples found; expected lines of sentence<TAB>label", path.string());
  return t;
}

}  // namespace

LabeledText read_labeled_tsv(const std::filesystem::path& path, const std::vector<std::string>& label_names) {
  return std::move(read_table(path, label_names, 0, false).data);
}

LabeledTable read_labeled_table(const std::filesystem::path& path, const std::vector<std::string>& label_names,
                                int num_labels) {
  return read_table(path, label_names, num_labels, true);
}

const std::vector<std::string>& LabeledTable::column(const std::string& name) const {
  for (size_t c = 0; c < columns.size(); ++c)
    if (columns[c] == name) return cells[c];
  if (columns.empty())
    fail("{}: no column named '{}': the file has no header line; add one (e.g. sentence<TAB>label<TAB>{})", source,
         name, name);
  fail("{}: no column named '{}'; the header has: {}", source, name, fmt::format("{}", fmt::join(columns, ", ")));
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

std::vector<int> ClassifierRun::predictions() const {
  std::vector<int> out;
  if (num_labels <= 0) return out;
  const size_t n = logits.size() / static_cast<size_t>(num_labels);
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const float* row = logits.data() + i * num_labels;
    out.push_back(static_cast<int>(std::max_element(row, row + num_labels) - row));
  }
  return out;
}

ClassifierRun run_classifier(const EncoderModel& model, const std::vector<std::string>& texts, const RunOptions& opt,
                             const std::function<void(int64_t, int64_t)>& on_progress) {
  const ModelConfig& c = model.config();
  if (!model.has_classifier())
    fail(
        "{}: {} has no classification head; evaluation needs a ...ForSequenceClassification model (train one with "
        "`shrink train --task classify`)",
        model.source().string(), c.architecture);
  check(opt.batch > 0, "evaluation: batch must be positive, got {}", opt.batch);
  check(opt.max_length > 0, "evaluation: max length must be positive, got {}", opt.max_length);
  const Tokenizer& tok = model.require_tokenizer();
  Timer timer;
  EncodeOptions eo;
  eo.max_length = std::min(opt.max_length, c.max_position_embeddings);
  const size_t n = texts.size();
  std::vector<Encoding> enc(n);
  ClassifierRun run;
  run.num_labels = c.num_labels;
  run.lengths.resize(n);
  for (size_t i = 0; i < n; ++i) {
    enc[i] = tok.encode_full(texts[i], {}, eo);
    run.lengths[i] = static_cast<int32_t>(enc[i].ids.size());
  }
  // Sorting by length makes batches of similar lengths, so padding (which costs a full forward per pad token)
  // nearly vanishes; stable so equal lengths keep input order.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  if (opt.sort_by_length)
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return run.lengths[a] < run.lengths[b]; });
  run.logits.assign(n * c.num_labels, 0.f);
  const size_t batch = static_cast<size_t>(opt.batch);
  for (size_t i = 0; i < n; i += batch) {
    const size_t rows = std::min(batch, n - i);
    int64_t seq = 0;
    for (size_t r = 0; r < rows; ++r) seq = std::max<int64_t>(seq, run.lengths[order[i + r]]);
    BatchEncoding b;
    b.batch = static_cast<int64_t>(rows);
    b.seq = seq;
    b.ids.assign(rows * seq, tok.pad_id());
    b.type_ids.assign(rows * seq, 0);
    b.attention_mask.assign(rows * seq, 0);
    for (size_t r = 0; r < rows; ++r) {
      const Encoding& e = enc[order[i + r]];
      std::copy(e.ids.begin(), e.ids.end(), b.ids.begin() + static_cast<ptrdiff_t>(r * seq));
      std::copy(e.type_ids.begin(), e.type_ids.end(), b.type_ids.begin() + static_cast<ptrdiff_t>(r * seq));
      std::fill_n(b.attention_mask.begin() + static_cast<ptrdiff_t>(r * seq), e.ids.size(), 1);
      b.lengths.push_back(static_cast<int32_t>(e.ids.size()));
    }
    const EncoderOutput out = model.forward(b);
    const float* lg = out.logits.data<float>();
    for (size_t r = 0; r < rows; ++r)
      std::copy_n(lg + r * c.num_labels, c.num_labels,
                  run.logits.begin() + static_cast<ptrdiff_t>(order[i + r] * c.num_labels));
    if (on_progress) on_progress(static_cast<int64_t>(i + rows), static_cast<int64_t>(n));
  }
  run.seconds = timer.elapsed_ms() / 1000;
  return run;
}

}  // namespace shrink
