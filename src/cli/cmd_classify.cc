// shrink classify MODEL --text T | --data FILE.tsv: labels and probabilities, or accuracy/macro-F1.
#include <shrink/core/error.h>
#include <shrink/eval/classification.h>

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
    LabeledText lt = read_labeled_tsv(data, c.id2label);
    std::vector<int> pred;
    Progress progress("classify", static_cast<int64_t>(lt.texts.size()), f.quiet || f.json);
    for (size_t i = 0; i < lt.texts.size(); i += batch) {
      std::vector<std::string> chunk(lt.texts.begin() + i,
                                     lt.texts.begin() + std::min(lt.texts.size(), i + static_cast<size_t>(batch)));
      EncoderOutput out = enc.forward(tok.encode_batch(chunk, eo));
      for (size_t r = 0; r < chunk.size(); ++r) {
        const float* row = out.logits.data<float>() + r * c.num_labels;
        pred.push_back(static_cast<int>(std::max_element(row, row + c.num_labels) - row));
      }
      progress.update(static_cast<int64_t>(pred.size()));
    }
    progress.finish();
    ClassificationMetrics m = classification_metrics(pred, lt.labels, c.num_labels);
    if (f.json)
      return print_json({{"accuracy", m.accuracy}, {"macro_f1", m.macro_f1}, {"n", m.n}, {"confusion", m.confusion}});
    std::printf("accuracy %.4f  macro-F1 %.4f  n %lld\n", m.accuracy, m.macro_f1, static_cast<long long>(m.n));
  });
}

}  // namespace shrink::cli
