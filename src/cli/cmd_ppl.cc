// shrink ppl MODEL --text FILE: perplexity over non-overlapping context windows.
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/eval/perplexity.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"

namespace shrink::cli {

void register_ppl(CLI::App& app) {
  auto* sub = app.add_subcommand("ppl", "perplexity of a decoder on a text file");
  static DecoderFlags model_flags;
  static std::string text_file;
  static int64_t ctx = 0, max_tokens = 0, max_bytes = 0;
  static CommonFlags f;
  sub->add_option("model", model_flags.path, "model directory or llama2.c .bin")->required();
  sub->add_option("--text", text_file, "UTF-8 text file")->required();
  sub->add_option("--ctx", ctx, "window length in tokens (default: the model's context)");
  sub->add_option("--max-tokens", max_tokens, "score only the first N tokens (0 = all)");
  sub->add_option("--max-bytes", max_bytes, "read only the first N bytes of the file (0 = all)");
  model_flags.add_to(sub);
  add_common_flags(sub, f);
  sub->callback([] {
    apply(f);
    auto model = model_flags.open("ppl");
    DecoderModel& dec = as_decoder(*model, "ppl");
    std::string text = read_text_file(text_file);
    if (max_bytes > 0 && static_cast<int64_t>(text.size()) > max_bytes) text.resize(max_bytes);
    if (text.empty()) fail("{}: the text file is empty; perplexity needs text", text_file);
    auto ids = dec.require_tokenizer().encode(text, true);
    if (max_tokens > 0 && static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(max_tokens);
    const int64_t window = ctx > 0 ? ctx : dec.max_context();
    Progress progress("ppl", (static_cast<int64_t>(ids.size()) + window - 1) / window, f.quiet || f.json);
    PerplexityResult r = perplexity(dec, ids, ctx, [&](int64_t done, int64_t) { progress.update(done); });
    progress.finish();
    if (f.json) return print_json({{"ppl", r.ppl}, {"nll", r.nll}, {"tokens", r.tokens}, {"windows", r.windows}});
    std::printf("perplexity %.4f (mean NLL %.6f nats over %lld predictions in %lld windows)\n", r.ppl, r.nll,
                static_cast<long long>(r.tokens), static_cast<long long>(r.windows));
  });
}

}  // namespace shrink::cli
