// shrink classify MODEL --text T | --data FILE.tsv: labels and probabilities, or the evaluation of `shrink eval`.
#include <shrink/core/error.h>
#include <shrink/eval/evaluate.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"

namespace shrink::cli {

namespace {

std::vector<float> softmax_row(const float* x, int n) {
  std::vector<float> p(x, x + n);
  const float mx = *std::max_element(p.begin(), p.end());
  float sum = 0;
  for (float& v : p) sum += (v = std::exp(v - mx));
  for (float& v : p) v /= sum;
  return p;
}

std::string label_name(const ModelConfig& c, int i) {
  return i < static_cast<int>(c.id2label.size()) ? c.id2label[i] : "LABEL_" + std::to_string(i);
}

}  // namespace

void register_classify(CLI::App& app) {
  auto* sub = app.add_subcommand("classify", "classify texts with an encoder (...ForSequenceClassification)");
  static std::string path, tokenizer, text, data;
  static int max_length = 128, batch = 32;
  static CommonFlags f;
  sub->add_option("model", path, "model directory")->required();
  auto* t = sub->add_option("--text", text, "one text");
  auto* d = sub->add_option("--data", data, "TSV file: sentence<TAB>label (with header)");
  t->excludes(d);
  sub->add_option("--max-length", max_length, "truncate to this many tokens")->check(CLI::PositiveNumber);
  sub->add_option("--batch", batch, "texts per forward pass")->check(CLI::PositiveNumber);
  sub->add_option("--tokenizer", tokenizer, "tokenizer file");
  add_common_flags(sub, f);
  sub->callback([] {
    apply(f);
    if (text.empty() && data.empty()) fail("give --text T or --data FILE.tsv");
    auto model = open_model(path, tokenizer);
    EncoderModel& enc = as_encoder(*model, "classify");
    if (!enc.has_classifier())
      fail("{}: {} has no classification head; use a ...ForSequenceClassification model", path,
           enc.config().architecture);
    const Tokenizer& tok = enc.require_tokenizer();
    const ModelConfig& c = enc.config();
    EncodeOptions eo;
    eo.max_length = std::min(max_length, c.max_position_embeddings);
    if (!text.empty()) {
      BatchEncoding b = tok.encode_batch({text}, eo);
      EncoderOutput out = enc.forward(b);
      auto p = softmax_row(out.logits.data<float>(), c.num_labels);
      const int best = static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
      if (f.json) return print_json({{"label", label_name(c, best)}, {"label_id", best}, {"probabilities", p}});
      std::printf("%s (%.4f)\n", label_name(c, best).c_str(), p[best]);
      return;
    }
    // The evaluation of `shrink eval` (same code, same numbers), without segments or stress.
    const LabeledTable table = read_labeled_table(data, c.id2label, c.num_labels);
    EvalOptions opt;
    opt.run.batch = batch;
    opt.run.max_length = max_length;
    Progress progress("classify", static_cast<int64_t>(table.data.texts.size()), f.quiet || f.json);
    const EvalReport r = evaluate_classifier(enc, nullptr, table, opt,
                                             [&](const std::string&, int64_t done, int64_t) { progress.update(done); });
    progress.finish();
    if (f.json) return print_json(to_json(r));
    const std::string s = render_tables(r);
    std::fwrite(s.data(), 1, s.size(), stdout);
  });
}

}  // namespace shrink::cli
