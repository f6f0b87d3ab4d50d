// Batched classifier runs and the evaluation report of include/shrink/eval/evaluate.h.
#include <fmt/format.h>
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/eval/compare.h>
#include <shrink/eval/evaluate.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace shrink {

ClassificationSummary summarize_classification(const std::vector<float>& logits, const std::vector<int>& labels,
                                               int num_labels, const std::vector<int64_t>& subset,
                                               const std::vector<float>* baseline_logits) {
  check(num_labels > 0, "evaluation: the model has {} labels", num_labels);
  check(logits.size() == labels.size() * num_labels, "evaluation: {} logits for {} examples of {} labels",
        logits.size(), labels.size(), num_labels);
  if (baseline_logits)
    check(baseline_logits->size() == logits.size(), "evaluation: {} baseline logits, expected {}",
          baseline_logits->size(), logits.size());
  std::vector<int64_t> all;
  const std::vector<int64_t>* idx = &subset;
  if (subset.empty()) {
    all.resize(labels.size());
    std::iota(all.begin(), all.end(), int64_t{0});
    idx = &all;
  }
  ClassificationSummary s;
  std::vector<int> pred, truth;
  std::vector<double> conf;
  std::vector<uint8_t> correct;
  double nll = 0, kld = 0;
  int64_t agree = 0, base_correct = 0;
  for (int64_t i : *idx) {
    const float* row = logits.data() + i * num_labels;
    const std::vector<float> p = softmax_rows(row, 1, num_labels);
    const int k = static_cast<int>(std::max_element(row, row + num_labels) - row);
    pred.push_back(k);
    truth.push_back(labels[i]);
    conf.push_back(std::min(1.0, static_cast<double>(p[k])));
    correct.push_back(k == labels[i]);
    // -ln p from the logits (log-sum-exp), not from the rounded float probability, so a confident miss stays finite.
    double mx = row[0], sum = 0;
    for (int c = 1; c < num_labels; ++c) mx = std::max(mx, static_cast<double>(row[c]));
    for (int c = 0; c < num_labels; ++c) sum += std::exp(row[c] - mx);
    nll += mx + std::log(sum) - row[labels[i]];
    if (baseline_logits) {
      const float* b = baseline_logits->data() + i * num_labels;
      const int kb = static_cast<int>(std::max_element(b, b + num_labels) - b);
      agree += kb == k;
      base_correct += kb == labels[i];
      kld += kl_divergence_logits(b, row, num_labels);
    }
  }
  const ClassificationMetrics m = classification_metrics(pred, truth, num_labels);
  s.n = m.n;
  s.accuracy = m.accuracy;
  s.macro_f1 = m.macro_f1;
  s.confusion = m.confusion;
  s.per_class = per_class_metrics(m.confusion);
  s.ece = expected_calibration_error(conf, correct, 15);
  const double n = static_cast<double>(std::max<int64_t>(1, s.n));
  s.nll = nll / n;
  if (baseline_logits) {
    s.has_baseline = true;
    s.kld = kld / n;
    s.top1_agreement = static_cast<double>(agree) / n;
    s.baseline_accuracy = static_cast<double>(base_correct) / n;
  }
  return s;
}

std::vector<std::string> label_names_of(const ModelConfig& c) {
  std::vector<std::string> out;
  for (int i = 0; i < c.num_labels; ++i)
    out.push_back(i < static_cast<int>(c.id2label.size()) && !c.id2label[i].empty() ? c.id2label[i]
                                                                                    : "LABEL_" + std::to_string(i));
  return out;
}

std::vector<std::string> segment_values(const std::string& by, const LabeledTable& table,
                                        const std::vector<int32_t>& lengths,
                                        const std::vector<std::string>& label_names, const LengthBuckets& buckets,
                                        std::vector<std::string>* order) {
  std::vector<std::string> v;
  const size_t n = table.data.labels.size();
  if (by == "length") {
    const std::vector<std::string> names = buckets.names();
    for (size_t i = 0; i < n; ++i) v.push_back(names[buckets.bucket_of(lengths.at(i))]);
    if (order) *order = names;
  } else if (by == "label") {
    for (size_t i = 0; i < n; ++i) v.push_back(label_names.at(table.data.labels[i]));
    if (order) *order = label_names;
  } else {
    v = table.column(by);
    if (order) order->clear();
  }
  return v;
}

SegmentReport segment_report(const std::string& by, const std::vector<std::string>& values,
                             const std::vector<std::string>& order, const std::vector<float>& logits,
                             const std::vector<int>& labels, int num_labels,
                             const std::vector<float>* baseline_logits) {
  const Segments seg = group_by(values, order);
  SegmentReport r;
  r.by = by;
  for (size_t s = 0; s < seg.names.size(); ++s) {
    if (seg.members[s].empty()) continue;
    r.names.push_back(seg.names[s]);
    r.rows.push_back(summarize_classification(logits, labels, num_labels, seg.members[s], baseline_logits));
  }
  return r;
}

nlohmann::json to_json(const ClassificationSummary& s, const std::vector<std::string>& label_names, bool detail) {
  nlohmann::json j = {{"n", s.n}, {"accuracy", s.accuracy}, {"macro_f1", s.macro_f1}, {"ece", s.ece}, {"nll", s.nll}};
  if (s.has_baseline) {
    j["kld"] = s.kld;
    j["top1_agreement"] = s.top1_agreement;
    j["baseline_accuracy"] = s.baseline_accuracy;
  }
  if (detail) {
    j["confusion"] = s.confusion;
    nlohmann::json pc = nlohmann::json::array();
    for (size_t c = 0; c < s.per_class.size(); ++c) {
      const ClassMetrics& m = s.per_class[c];
      pc.push_back({{"label", c < label_names.size() ? label_names[c] : std::to_string(c)},
                    {"precision", m.precision},
                    {"recall", m.recall},
                    {"f1", m.f1},
                    {"support", m.support},
                    {"predicted", m.predicted}});
    }
    j["per_class"] = pc;
  }
  return j;
}

nlohmann::json to_json(const SegmentReport& r) {
  nlohmann::json a = nlohmann::json::array();
  for (size_t i = 0; i < r.rows.size(); ++i) {
    nlohmann::json j = to_json(r.rows[i], {}, false);
    j["segment"] = r.names[i];
    a.push_back(j);
  }
  return a;
}

namespace {

using StageProgress = std::function<void(const std::string&, int64_t, int64_t)>;

std::function<void(int64_t, int64_t)> stage(const StageProgress& on_progress, const std::string& name) {
  return [&on_progress, name](int64_t done, int64_t total) {
    if (on_progress) on_progress(name, done, total);
  };
}

// The report's header fields, after checking that model and baseline classify into the same labels.
EvalReport new_report(const EncoderModel& model, const EncoderModel* baseline, const EvalOptions& opt) {
  const int k = model.config().num_labels;
  if (baseline && baseline->config().num_labels != k)
    fail("eval: the model has {} labels and the baseline {} ({}); compare models of one task", k,
         baseline->config().num_labels, baseline->source().string());
  EvalReport r;
  r.model = model.source().string();
  r.label_names = label_names_of(model.config());
  r.batch = opt.run.batch;
  if (baseline) r.baseline = baseline->source().string();
  return r;
}

// Overall (and baseline) summaries and timing of the runs.
void summarize_runs(EvalReport& r, const ClassifierRun& run, const ClassifierRun* base, const std::vector<int>& labels,
                    int k) {
  r.seconds = run.seconds;
  r.examples_per_s = run.seconds > 0 ? static_cast<double>(labels.size()) / run.seconds : 0;
  if (base) r.baseline_summary = summarize_classification(base->logits, labels, k);
  r.overall = summarize_classification(run.logits, labels, k, {}, base ? &base->logits : nullptr);
}

}  // namespace

EvalReport evaluate_classifier(const EncoderModel& model, const EncoderModel* baseline, const LabeledTable& data,
                               const EvalOptions& opt, const StageProgress& on_progress) {
  const int k = model.config().num_labels;
  EvalReport r = new_report(model, baseline, opt);
  const std::vector<int>& labels = data.data.labels;
  const ClassifierRun run = run_classifier(model, data.data.texts, opt.run, stage(on_progress, "eval"));
  std::optional<ClassifierRun> base_run;
  if (baseline) base_run = run_classifier(*baseline, data.data.texts, opt.run, stage(on_progress, "baseline"));
  const std::vector<float>* bl = base_run ? &base_run->logits : nullptr;
  summarize_runs(r, run, base_run ? &*base_run : nullptr, labels, k);
  const LengthBuckets buckets =
      opt.length_buckets ? *opt.length_buckets
                         : length_buckets_from_quantiles(std::vector<int64_t>(run.lengths.begin(), run.lengths.end()));
  for (const std::string& by : opt.segment_by) {
    std::vector<std::string> order;
    const auto values = segment_values(by, data, run.lengths, r.label_names, buckets, &order);
    r.segments.push_back(segment_report(by, values, order, run.logits, labels, k, bl));
  }
  if (opt.stress) {
    r.stress_options = opt.stress_options;
    r.stress = run_stress(model, data.data.texts, labels, run.logits, opt.stress_options, opt.run,
                          stage(on_progress, "stress"));
  }
  return r;
}

ClassifierRun run_classifier(const EncoderModel& model, const train::ClassifySource& data, int batch,
                             const std::function<void(int64_t, int64_t)>& on_progress) {
  const ModelConfig& c = model.config();
  if (!model.has_classifier())
    fail("{}: {} has no classification head; evaluation needs a classifier", model.source().string(), c.architecture);
  check(batch > 0, "evaluation: batch must be positive, got {}", batch);
  Timer timer;
  ClassifierRun run;
  run.num_labels = c.num_labels;
  const int64_t n = static_cast<int64_t>(data.size()), k = c.num_labels;
  run.logits.assign(static_cast<size_t>(n * k), 0.f);
  for (int64_t s = 0; s < n; s += batch) {
    std::vector<int64_t> idx;
    for (int64_t i = s; i < std::min<int64_t>(n, s + batch); ++i) idx.push_back(i);
    const train::EncoderBatch b = data.batch(idx);
    EncoderOutput out;
    if (!b.patches.empty()) {
      check(model.takes_images(),
            "{}: {} is a text classifier; it cannot run images (give it tokenized text, e.g. --data FILE.tsv)",
            model.source().string(), c.architecture);
      const int64_t side = c.image_size, p = c.patch_size;
      check(c.num_channels == 1 && static_cast<int64_t>(b.patches.size()) == b.batch * side * side,
            "{}: {} pixel values for {} images; the model takes {}x{}x{}", model.source().string(), b.patches.size(),
            b.batch, c.num_channels, side, side);
      // EncoderBatch rows are patch-major (train/data.h image_patches); the engine takes whole images.
      std::vector<float> pixels(b.patches.size());
      for (int64_t r = 0; r < b.batch; ++r)
        train::patches_to_image(b.patches.data() + r * side * side, side, side, static_cast<int>(p),
                                pixels.data() + r * side * side);
      out = model.forward_images(pixels.data(), b.batch);
      run.lengths.insert(run.lengths.end(), static_cast<size_t>(b.batch), static_cast<int32_t>(b.seq));
    } else {
      BatchEncoding be;
      be.batch = b.batch;
      be.seq = b.seq;
      be.ids = b.ids;
      be.type_ids = b.type_ids.empty() ? std::vector<int32_t>(b.ids.size(), 0) : b.type_ids;
      be.attention_mask = b.mask;
      for (int64_t r = 0; r < b.batch; ++r) {
        int32_t len = 0;
        for (int64_t t = 0; t < b.seq; ++t) len += b.mask[r * b.seq + t] != 0;
        be.lengths.push_back(len);
      }
      run.lengths.insert(run.lengths.end(), be.lengths.begin(), be.lengths.end());
      out = model.forward(be);
    }
    std::copy_n(out.logits.data<float>(), b.batch * k, run.logits.begin() + s * k);
    if (on_progress) on_progress(s + b.batch, n);
  }
  run.seconds = timer.elapsed_ms() / 1000;
  return run;
}

EvalReport evaluate_images(const EncoderModel& model, const EncoderModel* baseline, const train::ImageSet& images,
                           const EvalOptions& opt, const StageProgress& on_progress) {
  if (!model.takes_images())
    fail("{}: {} is a text classifier; evaluate it on --data FILE.tsv, not on images", model.source().string(),
         model.config().architecture);
  if (baseline && !baseline->takes_images())
    fail("{}: the baseline {} is a text classifier; give the image classifier the model was compressed from",
         baseline->source().string(), baseline->config().architecture);
  check(!opt.stress, "eval: --stress perturbs text (typos, casing, OOV words); it does not apply to images");
  for (const std::string& by : opt.segment_by)
    check(by == "label", "eval: --segment-by {} does not apply to images; images can be segmented by label", by);
  const int k = model.config().num_labels;
  EvalReport r = new_report(model, baseline, opt);
  train::ImageData data;
  data.set = &images;
  data.patch = model.config().patch_size;
  const std::vector<int> labels(images.labels.begin(), images.labels.end());
  const ClassifierRun run = run_classifier(model, data, opt.run.batch, stage(on_progress, "eval"));
  std::optional<ClassifierRun> base_run;
  if (baseline) {
    train::ImageData bdata = data;
    bdata.patch = baseline->config().patch_size;
    base_run = run_classifier(*baseline, bdata, opt.run.batch, stage(on_progress, "baseline"));
  }
  summarize_runs(r, run, base_run ? &*base_run : nullptr, labels, k);
  if (!opt.segment_by.empty()) {
    LabeledTable table;  // labels only: what segment_values reads for "label"
    table.data.labels = labels;
    std::vector<std::string> order;
    const auto values = segment_values("label", table, run.lengths, r.label_names, LengthBuckets{}, &order);
    r.segments.push_back(
        segment_report("label", values, order, run.logits, labels, k, base_run ? &base_run->logits : nullptr));
  }
  return r;
}

nlohmann::json to_json(const EvalReport& r) {
  nlohmann::json j = to_json(r.overall, r.label_names, true);
  j["model"] = r.model;
  j["labels"] = r.label_names;
  j["batch"] = r.batch;
  j["seconds"] = r.seconds;
  j["examples_per_s"] = r.examples_per_s;
  if (r.baseline_summary) {
    nlohmann::json b = to_json(*r.baseline_summary, r.label_names, false);
    b["model"] = r.baseline;
    j["baseline"] = b;
  }
  if (!r.segments.empty()) {
    nlohmann::json seg = nlohmann::json::object();
    for (const SegmentReport& s : r.segments) seg[s.by] = to_json(s);
    j["segments"] = seg;
  }
  if (!r.stress.empty()) j["stress"] = to_json(r.stress, r.stress_options);
  return j;
}

namespace {

// Columns padded to their widest cell; the first column left-aligned, the others right-aligned (numbers).
std::string table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(header.size(), 0);
  for (size_t c = 0; c < header.size(); ++c) w[c] = header[c].size();
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size() && c < w.size(); ++c) w[c] = std::max(w[c], row[c].size());
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l;
    for (size_t c = 0; c < cells.size(); ++c)
      l += c == 0 ? fmt::format("{:<{}}", cells[c], w[c]) : fmt::format("  {:>{}}", cells[c], w[c]);
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  };
  line(header);
  for (const auto& row : rows) line(row);
  return out;
}

std::string f4(double v) {
  return fmt::format("{:.4f}", v);
}

std::vector<std::string> summary_header(bool baseline) {
  std::vector<std::string> h = {"n", "accuracy", "macro-F1", "ECE", "NLL"};
  if (baseline) h.insert(h.end(), {"KLD", "agreement", "base acc"});
  return h;
}

std::vector<std::string> summary_cells(const ClassificationSummary& s) {
  std::vector<std::string> v = {std::to_string(s.n), f4(s.accuracy), f4(s.macro_f1), f4(s.ece), f4(s.nll)};
  if (s.has_baseline) v.insert(v.end(), {fmt::format("{:.6f}", s.kld), f4(s.top1_agreement), f4(s.baseline_accuracy)});
  return v;
}

}  // namespace

std::string render_tables(const EvalReport& r) {
  std::string out;
  const bool has_base = r.overall.has_baseline;
  out += fmt::format("model {}{}\n", r.model, has_base ? "  (baseline " + r.baseline + ")" : "");
  {
    std::vector<std::string> h = summary_header(has_base);
    h.insert(h.begin(), "");
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> row = summary_cells(r.overall);
    row.insert(row.begin(), "model");
    rows.push_back(row);
    if (r.baseline_summary) {
      std::vector<std::string> b = summary_cells(*r.baseline_summary);
      b.insert(b.begin(), "baseline");
      while (b.size() < h.size()) b.push_back("");
      rows.push_back(b);
    }
    out += table(h, rows);
  }
  out += fmt::format("({} examples in {:.2f} s, {:.1f} examples/s at batch {}; KLD = KL(baseline || model) in nats)\n",
                     r.overall.n, r.seconds, r.examples_per_s, r.batch);
  {
    out += "\nper class\n";
    std::vector<std::vector<std::string>> rows;
    for (size_t c = 0; c < r.overall.per_class.size(); ++c) {
      const ClassMetrics& m = r.overall.per_class[c];
      rows.push_back({r.label_names[c], f4(m.precision), f4(m.recall), f4(m.f1), std::to_string(m.support),
                      std::to_string(m.predicted)});
    }
    out += table({"label", "precision", "recall", "F1", "support", "predicted"}, rows);
  }
  {
    out += "\nconfusion (rows: true label, columns: predicted)\n";
    std::vector<std::string> h = {"true \\ predicted"};
    h.insert(h.end(), r.label_names.begin(), r.label_names.end());
    std::vector<std::vector<std::string>> rows;
    for (size_t t = 0; t < r.overall.confusion.size(); ++t) {
      std::vector<std::string> row = {r.label_names[t]};
      for (int64_t v : r.overall.confusion[t]) row.push_back(std::to_string(v));
      rows.push_back(row);
    }
    out += table(h, rows);
  }
  for (const SegmentReport& s : r.segments) {
    out += fmt::format("\nby {}\n", s.by);
    std::vector<std::string> h = summary_header(has_base);
    h.insert(h.begin(), s.by);
    std::vector<std::vector<std::string>> rows;
    for (size_t i = 0; i < s.rows.size(); ++i) {
      std::vector<std::string> row = summary_cells(s.rows[i]);
      row.insert(row.begin(), s.names[i]);
      rows.push_back(row);
    }
    out += table(h, rows);
  }
  if (!r.stress.empty()) {
    out += fmt::format("\nstress (seed {}, typo rate {}, OOV rate {}; clean accuracy {:.4f})\n", r.stress_options.seed,
                       r.stress_options.typo_rate, r.stress_options.oov_rate, r.overall.accuracy);
    std::vector<std::vector<std::string>> rows;
    for (const StressResult& s : r.stress)
      rows.push_back({perturbation_name(s.perturbation), std::to_string(s.n), std::to_string(s.changed), f4(s.accuracy),
                      fmt::format("{:+.4f}", s.accuracy - r.overall.accuracy), f4(s.agreement_with_clean),
                      fmt::format("{:.6f}", s.kld_to_clean)});
    out += table({"perturbation", "n", "changed", "accuracy", "vs clean", "agreement", "KLD"}, rows);
  }
  return out;
}

}  // namespace shrink
