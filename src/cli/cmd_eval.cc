// shrink eval MODEL --data FILE.tsv | --images [DIR] | --text FILE [--baseline BASE]: the full evaluation report of
// a text or image classifier (metrics, segments, stress) or the perplexity of a decoder (with KLD/agreement against a
// baseline).
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/eval/compare.h>
#include <shrink/eval/evaluate.h>

#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/train_flags.h"

namespace shrink::cli {

namespace {

struct EvalFlags {
  std::string model, baseline, data, text, tokenizer, length_buckets, split = "test";
  DataFlags images;  // --images [DIR] (its --limit is `limit`)
  std::vector<std::string> segment_by;
  bool stress = false, no_sort = false;
  uint64_t seed = StressOptions{}.seed;
  double typo_rate = StressOptions{}.typo_rate, oov_rate = StressOptions{}.oov_rate;
  int batch = 32, max_length = 128;
  int64_t limit = 0, ctx = 0, max_tokens = 0, max_bytes = 0;
  CommonFlags common;
};

void keep_first(LabeledTable& t, int64_t limit) {
  if (limit <= 0 || static_cast<size_t>(limit) >= t.data.texts.size()) return;
  const size_t n = static_cast<size_t>(limit);
  t.data.texts.resize(n);
  t.data.labels.resize(n);
  t.lines.resize(n);
  for (auto& col : t.cells) col.resize(n);
}

// Progress lines per stage ("eval", "baseline", "stress"), one bar after the other.
struct StagedProgress {
  bool quiet;
  std::string stage;
  std::unique_ptr<Progress> bar;
  void operator()(const std::string& s, int64_t done, int64_t total) {
    if (s != stage || !bar) {
      if (bar) bar->finish();
      stage = s;
      bar = std::make_unique<Progress>(s, total, quiet);
    }
    bar->update(done);
  }
  void finish() {
    if (bar) bar->finish();
  }
};

// The classifier under evaluation and its baseline (null without --baseline); `flag` names the data flag in errors.
std::pair<EncoderModel*, EncoderModel*> classifiers(const EvalFlags& f, Model& m, std::unique_ptr<Model>& base,
                                                    const char* flag) {
  auto* enc = dynamic_cast<EncoderModel*>(&m);
  if (!enc)
    fail("{}: {} is a decoder; `shrink eval {}` evaluates classifiers; use `--text FILE` for its perplexity", f.model,
         m.config().architecture, flag);
  if (!enc->has_classifier())
    fail(
        "{}: {} has no classification head; `shrink eval {}` needs a classifier (...ForSequenceClassification or "
        "ViTForImageClassification)",
        f.model, m.config().architecture, flag);
  EncoderModel* benc = nullptr;
  if (!f.baseline.empty()) {
    base = open_model(f.baseline, f.tokenizer);
    benc = dynamic_cast<EncoderModel*>(base.get());
    if (!benc || !benc->has_classifier())
      fail("{}: the baseline is {} without a classification head; give the classifier the model was compressed from",
           f.baseline, base->config().architecture);
  }
  return {enc, benc};
}

void print_report(const EvalFlags& f, const EvalReport& r, nlohmann::json source) {
  if (f.common.json) {
    nlohmann::json j = to_json(r);
    j.update(source);
    return print_json(j);
  }
  const std::string s = render_tables(r);
  std::fwrite(s.data(), 1, s.size(), stdout);
}

void eval_images(const EvalFlags& f, Model& m) {
  DataFlags d = f.images;
  d.limit = f.limit;
  check_data_kind(d, m.config(), f.model);
  std::unique_ptr<Model> base;
  auto [enc, benc] = classifiers(f, m, base, "--images");
  const train::ImageSet set = load_images_for(d, f.split, enc->config(), f.model);
  if (benc) check_data_kind(d, benc->config(), f.baseline);
  EvalOptions opt;
  opt.run.batch = f.batch;
  opt.segment_by = f.segment_by;
  opt.stress = f.stress;
  StagedProgress progress{f.common.quiet || f.common.json, {}, {}};
  const EvalReport r = evaluate_images(*enc, benc, set, opt, std::ref(progress));
  progress.finish();
  print_report(f, r, {{"images", images_dir(d).string()}, {"split", f.split}});
}

void eval_classifier(const EvalFlags& f, Model& m) {
  DataFlags d;
  d.data = f.data;
  check_data_kind(d, m.config(), f.model);
  std::unique_ptr<Model> base;
  auto [enc, benc] = classifiers(f, m, base, "--data");
  LabeledTable table = read_labeled_table(f.data, enc->config().id2label, enc->config().num_labels);
  keep_first(table, f.limit);
  EvalOptions opt;
  opt.run.batch = f.batch;
  opt.run.max_length = f.max_length;
  opt.run.sort_by_length = !f.no_sort;
  opt.segment_by = f.segment_by;
  for (const std::string& by : opt.segment_by)
    if (by != "length" && by != "label") (void)table.column(by);  // a missing column fails before the model runs
  if (!f.length_buckets.empty()) opt.length_buckets = parse_length_buckets(f.length_buckets);
  opt.stress = f.stress;
  opt.stress_options.seed = f.seed;
  opt.stress_options.typo_rate = f.typo_rate;
  opt.stress_options.oov_rate = f.oov_rate;
  StagedProgress progress{f.common.quiet || f.common.json, {}, {}};
  const EvalReport r = evaluate_classifier(*enc, benc, table, opt, std::ref(progress));
  progress.finish();
  print_report(f, r, {{"data", f.data}});
}

void eval_decoder(const EvalFlags& f, Model& m) {
  auto* dec = dynamic_cast<DecoderModel*>(&m);
  if (!dec)
    fail(
        "{}: {} is an encoder; `shrink eval --text` measures a decoder's perplexity; use `--data FILE.tsv` for "
        "classifiers",
        f.model, m.config().architecture);
  std::string text = read_text_file(f.text);
  if (f.max_bytes > 0 && static_cast<int64_t>(text.size()) > f.max_bytes) text.resize(static_cast<size_t>(f.max_bytes));
  if (text.empty()) fail("{}: the text file is empty; perplexity needs text", f.text);
  auto ids = dec->require_tokenizer().encode(text, true);
  if (f.max_tokens > 0 && static_cast<int64_t>(ids.size()) > f.max_tokens)
    ids.resize(static_cast<size_t>(f.max_tokens));
  const bool quiet = f.common.quiet || f.common.json;
  if (f.baseline.empty()) {
    const int64_t window = f.ctx > 0 ? f.ctx : dec->max_context();
    Progress progress("eval", (static_cast<int64_t>(ids.size()) + window - 1) / window, quiet);
    const PerplexityResult r = perplexity(*dec, ids, f.ctx, [&](int64_t d, int64_t) { progress.update(d); });
    progress.finish();
    if (f.common.json)
      return print_json(
          {{"model", f.model}, {"ppl", r.ppl}, {"nll", r.nll}, {"tokens", r.tokens}, {"windows", r.windows}});
    std::printf("model %s\nperplexity %.4f (mean NLL %.6f nats over %lld predictions in %lld windows)\n",
                f.model.c_str(), r.ppl, r.nll, static_cast<long long>(r.tokens), static_cast<long long>(r.windows));
    return;
  }
  // With a baseline this is `shrink compare BASE MODEL --text`: the same function, the same protocol.
  auto base = open_model(f.baseline, f.tokenizer);
  DecoderModel& bdec = as_decoder(*base, "eval --baseline");
  const int64_t window = f.ctx > 0 ? f.ctx : std::min(bdec.max_context(), dec->max_context());
  Progress progress("eval", (static_cast<int64_t>(ids.size()) + window - 1) / window, quiet);
  const DecoderComparison r = compare_decoders(bdec, *dec, ids, f.ctx, [&](int64_t d, int64_t) { progress.update(d); });
  progress.finish();
  if (f.common.json)
    return print_json({{"model", f.model},
                       {"ppl", r.candidate.ppl},
                       {"nll", r.candidate.nll},
                       {"tokens", r.positions},
                       {"windows", r.candidate.windows},
                       {"kld", r.kld},
                       {"kld_max", r.kld_max},
                       {"top1_agreement", r.top1_agreement},
                       {"baseline", {{"model", f.baseline}, {"ppl", r.base.ppl}, {"nll", r.base.nll}}}});
  std::printf("model %s  (baseline %s)\n", f.model.c_str(), f.baseline.c_str());
  std::printf("%-8s  %10s  %9s\n", "", "perplexity", "NLL");
  std::printf("%-8s  %10.4f  %9.6f\n", "model", r.candidate.ppl, r.candidate.nll);
  std::printf("%-8s  %10.4f  %9.6f\n", "baseline", r.base.ppl, r.base.nll);
  std::printf("KLD(baseline || model) mean %.6f nats (max %.4f), top-1 agreement %.4f over %lld predictions\n", r.kld,
              r.kld_max, r.top1_agreement, static_cast<long long>(r.positions));
}

}  // namespace

void register_eval(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "eval",
      "evaluate a model: accuracy, macro-F1, per-class, confusion, ECE, NLL, segments, stress (classifiers); "
      "perplexity (decoders); KLD and agreement with --baseline");
  static EvalFlags f;
  sub->add_option("model", f.model, "model directory (or llama2.c .bin with --tokenizer)")->required();
  auto* d = sub->add_option("--data", f.data, "TSV with a header: sentence<TAB>label[<TAB>more columns] (classifiers)");
  auto* t = sub->add_option("--text", f.text, "UTF-8 text file (decoders: perplexity)");
  d->excludes(t);
  auto* im = f.images.add_images_to(sub);
  im->excludes(d)->excludes(t);
  sub->add_option("--split", f.split, "--images: test (10,000 images) | train (60,000)")
      ->check(CLI::IsMember({"test", "train"}));
  sub->add_option("--baseline", f.baseline, "the model this one was compressed from: adds KLD and top-1 agreement");
  sub->add_option("--segment-by", f.segment_by, "break the metrics down by length, label or a TSV column (repeatable)");
  sub->add_option("--length-buckets", f.length_buckets,
                  "token-count bucket edges for --segment-by length, e.g. 8,16,32 (default: the data's quartiles)");
  sub->add_flag("--stress", f.stress, "also evaluate seeded perturbations: typos, casing, truncation, OOV words");
  sub->add_option("--seed", f.seed, "stress-set seed");
  sub->add_option("--typo-rate", f.typo_rate, "stress: typo probability per letter")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--oov-rate", f.oov_rate, "stress: probability a word is replaced")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--batch", f.batch, "texts per forward pass")->check(CLI::PositiveNumber);
  sub->add_option("--max-length", f.max_length, "truncate texts to this many tokens")->check(CLI::PositiveNumber);
  sub->add_flag("--no-sort", f.no_sort, "batch texts in file order instead of by length (slower; for measurement)");
  sub->add_option("--limit", f.limit, "evaluate only the first N rows (0 = all)")->check(CLI::NonNegativeNumber);
  sub->add_option("--ctx", f.ctx, "decoders: window length in tokens (default: the model's context)");
  sub->add_option("--max-tokens", f.max_tokens, "decoders: score only the first N tokens (0 = all)");
  sub->add_option("--max-bytes", f.max_bytes, "decoders: read only the first N bytes of the text (0 = all)");
  sub->add_option("--tokenizer", f.tokenizer, "tokenizer file (llama2.c .bin models)");
  add_common_flags(sub, f.common);
  sub->callback([] {
    apply(f.common);
    const int kinds = !f.data.empty() + !f.text.empty() + f.images.images_given;
    if (kinds != 1)
      fail(
          "eval: give one of --data FILE.tsv (text classifiers), --images [DIR] (image classifiers) or --text FILE "
          "(decoders)");
    if (!f.text.empty() && (!f.segment_by.empty() || f.stress))
      fail("eval: --segment-by and --stress apply to classifiers (--data FILE.tsv), not to --text");
    auto model = open_model(f.model, f.tokenizer);
    if (f.images.images_given) return eval_images(f, *model);
    if (!f.data.empty()) return eval_classifier(f, *model);
    eval_decoder(f, *model);
  });
}

}  // namespace shrink::cli
