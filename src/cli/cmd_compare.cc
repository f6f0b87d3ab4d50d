// shrink compare BASE CANDIDATE --text FILE | --data FILE.tsv | --images [DIR]: perplexity or accuracy of both, KLD,
// top-1 agreement.
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/eval/compare.h>
#include <shrink/eval/evaluate.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/train_flags.h"

namespace shrink::cli {

void register_compare(CLI::App& app) {
  auto* sub =
      app.add_subcommand("compare", "compare a candidate model with its base: KLD, top-1 agreement, ppl/accuracy");
  static std::string base_path, cand_path, tokenizer, text_file, data;
  static int64_t ctx = 0, max_tokens = 0, max_bytes = 0, offset_bytes = 0;
  static int max_length = 128, batch = 32;
  static CommonFlags f;
  static DataFlags images;
  static std::string split = "test";
  sub->add_option("base", base_path, "the reference model (directory or llama2.c .bin)")->required();
  sub->add_option("candidate", cand_path, "the model to judge (e.g. written by shrink quantize)")->required();
  auto* t = sub->add_option("--text", text_file, "UTF-8 text file (decoders)");
  auto* d = sub->add_option("--data", data, "TSV sentence<TAB>label with header (classifiers)");
  t->excludes(d);
  images.add_images_to(sub)->excludes(t)->excludes(d);
  sub->add_option("--split", split, "--images: test | train")->check(CLI::IsMember({"test", "train"}));
  sub->add_option("--limit", images.limit, "--images: only the first N images (0 = all)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--ctx", ctx, "window length in tokens (default: the models' context)");
  sub->add_option("--max-tokens", max_tokens, "score only the first N tokens (0 = all)");
  sub->add_option("--offset-bytes", offset_bytes, "start reading the text at this byte (e.g. its second half)");
  sub->add_option("--max-bytes", max_bytes, "read at most N bytes of the text (0 = all)");
  sub->add_option("--max-length", max_length, "classifiers: truncate to this many tokens")->check(CLI::PositiveNumber);
  sub->add_option("--batch", batch, "classifiers: texts per forward pass")->check(CLI::PositiveNumber);
  sub->add_option("--tokenizer", tokenizer, "tokenizer file for both (llama2.c .bin models)");
  static bool decode = false;
  sub->add_flag("--decode", decode,
                "decoders: one token per forward, the path generation runs (decode GEMVs, e.g. the W4/W8A16 ones "
                "that round x to int8), instead of one forward per window (the prefill GEMMs)");
  add_common_flags(sub, f);
  sub->callback([] {
    apply(f);
    if (text_file.empty() && data.empty() && !images.images_given)
      fail("compare: give --text FILE (decoders), --data FILE.tsv (classifiers) or --images [DIR] (image classifiers)");
    auto base = open_model(base_path, tokenizer);
    auto cand = open_model(cand_path, tokenizer);
    if (images.images_given) {
      // The eval report with the base as baseline: the same numbers `shrink eval CAND --baseline BASE` prints.
      check_data_kind(images, cand->config(), cand_path);
      const train::ImageSet set = load_images_for(images, split, base->config(), base_path);
      EvalOptions opt;
      opt.run.batch = batch;
      Progress progress("compare", 2 * set.n, f.quiet || f.json);  // the candidate's run, then the base's
      const EvalReport r =
          evaluate_images(as_encoder(*cand, "compare --images"), &as_encoder(*base, "compare --images"), set, opt,
                          [&](const std::string& stage, int64_t done, int64_t) {
                            progress.update(done + (stage == "eval" ? 0 : set.n));
                          });
      progress.finish();
      const ClassificationSummary& b = *r.baseline_summary;
      if (f.json)
        return print_json({{"kld", r.overall.kld},
                           {"top1_agreement", r.overall.top1_agreement},
                           {"n", r.overall.n},
                           {"base", {{"accuracy", b.accuracy}, {"macro_f1", b.macro_f1}}},
                           {"candidate", {{"accuracy", r.overall.accuracy}, {"macro_f1", r.overall.macro_f1}}}});
      std::printf("accuracy base %.4f, candidate %.4f (macro-F1 %.4f / %.4f) over %lld images\n", b.accuracy,
                  r.overall.accuracy, b.macro_f1, r.overall.macro_f1, static_cast<long long>(r.overall.n));
      std::printf("KLD(base || candidate) %.6f nats, top-1 agreement %.2f%%\n", r.overall.kld,
                  100 * r.overall.top1_agreement);
      return;
    }
    if (!data.empty()) {
      EncoderModel& eb = as_encoder(*base, "compare --data");
      EncoderModel& ec = as_encoder(*cand, "compare --data");
      LabeledText lt = read_labeled_tsv(data, eb.config().id2label);
      Progress progress("compare", static_cast<int64_t>(lt.texts.size()), f.quiet || f.json);
      EncoderComparison r =
          compare_encoders(eb, ec, lt, max_length, batch, [&](int64_t done, int64_t) { progress.update(done); });
      progress.finish();
      if (f.json)
        return print_json({{"kld", r.kld},
                           {"top1_agreement", r.top1_agreement},
                           {"n", r.n},
                           {"base", {{"accuracy", r.base.accuracy}, {"macro_f1", r.base.macro_f1}}},
                           {"candidate", {{"accuracy", r.candidate.accuracy}, {"macro_f1", r.candidate.macro_f1}}}});
      std::printf("accuracy base %.4f, candidate %.4f (macro-F1 %.4f / %.4f) over %lld examples\n", r.base.accuracy,
                  r.candidate.accuracy, r.base.macro_f1, r.candidate.macro_f1, static_cast<long long>(r.n));
      std::printf("KLD(base || candidate) %.6f nats, top-1 agreement %.2f%%\n", r.kld, 100 * r.top1_agreement);
      return;
    }
    DecoderModel& db = as_decoder(*base, "compare --text");
    DecoderModel& dc = as_decoder(*cand, "compare --text");
    std::string text = read_text_file(text_file);
    if (offset_bytes < 0 || offset_bytes >= static_cast<int64_t>(text.size()))
      fail("{}: --offset-bytes {} is outside the file of {} bytes", text_file, offset_bytes, text.size());
    text.erase(0, static_cast<size_t>(offset_bytes));
    if (max_bytes > 0 && static_cast<int64_t>(text.size()) > max_bytes) text.resize(static_cast<size_t>(max_bytes));
    if (text.empty()) fail("{}: the text file is empty; compare needs text", text_file);
    const Tokenizer& tok = db.require_tokenizer();
    auto ids = tok.encode(text, true);
    if (max_tokens > 0 && static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(static_cast<size_t>(max_tokens));
    const int64_t window = ctx > 0 ? ctx : std::min(db.max_context(), dc.max_context());
    Progress progress("compare", (static_cast<int64_t>(ids.size()) + window - 1) / window, f.quiet || f.json);
    DecoderComparison r = compare_decoders(
        db, dc, ids, ctx, [&](int64_t done, int64_t) { progress.update(done); }, decode);
    progress.finish();
    if (f.json)
      return print_json({{"kld", r.kld},
                         {"kld_max", r.kld_max},
                         {"top1_agreement", r.top1_agreement},
                         {"tokens", r.positions},
                         {"windows", r.base.windows},
                         {"path", decode ? "decode" : "prefill"},
                         {"base", {{"ppl", r.base.ppl}, {"nll", r.base.nll}}},
                         {"candidate", {{"ppl", r.candidate.ppl}, {"nll", r.candidate.nll}}}});
    std::printf("perplexity base %.4f, candidate %.4f (%+.2f%%) over %lld predictions in %lld windows (%s path)\n",
                r.base.ppl, r.candidate.ppl, 100 * (r.candidate.ppl / r.base.ppl - 1),
                static_cast<long long>(r.positions), static_cast<long long>(r.base.windows),
                decode ? "decode" : "prefill");
    std::printf("KLD(base || candidate) mean %.6f nats (max %.4f), top-1 agreement %.2f%%\n", r.kld, r.kld_max,
                100 * r.top1_agreement);
  });
}

}  // namespace shrink::cli
