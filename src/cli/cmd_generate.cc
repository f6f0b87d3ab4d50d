// shrink generate MODEL --prompt T: streams the continuation; --json prints text, ids and timings.
#include <shrink/core/error.h>
#include <shrink/models/generate.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"

namespace shrink::cli {

void register_generate(CLI::App& app) {
  auto* sub = app.add_subcommand("generate", "generate text with a decoder (LLaMA, GPT-2)");
  static DecoderFlags model_flags;
  static std::string prompt;
  static GenerateOptions g;
  static bool no_stop = false;
  static CommonFlags f;
  sub->add_option("model", model_flags.path, "model directory or llama2.c .bin")->required();
  sub->add_option("--prompt,-p", prompt, "prompt text")->required();
  sub->add_option("-n,--max-tokens", g.max_new_tokens, "tokens to generate")->check(CLI::PositiveNumber);
  sub->add_option("--temperature", g.sampling.temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  sub->add_option("--top-k", g.sampling.top_k, "sample from the k most likely (0 = off)");
  sub->add_option("--top-p", g.sampling.top_p, "nucleus sampling mass (1 = off)")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--seed", g.sampling.seed, "random seed");
  sub->add_flag("--no-stop", no_stop, "do not stop at the end-of-sequence token");
  model_flags.add_to(sub);
  add_common_flags(sub, f);
  sub->callback([] {
    apply(f);
    auto model = model_flags.open("generate");
    DecoderModel& dec = as_decoder(*model, "generate");
    const Tokenizer& tok = dec.require_tokenizer();
    if (prompt.empty()) fail("--prompt is empty: give some text to continue");
    const auto ids = tok.encode(prompt, true);
    if (ids.empty()) fail("--prompt '{}' encodes to no tokens and the tokenizer adds no BOS; give more text", prompt);
    g.stop_at_eos = !no_stop;
    const bool stream = !f.json;
    if (stream) {
      std::fputs(prompt.c_str(), stdout);
      std::fflush(stdout);
    }
    GenerateResult r = generate(dec, ids, g, [&](int32_t, const std::string& piece) {
      if (stream && !piece.empty()) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }
    });
    if (f.json)
      return print_json({{"text", r.text},
                         {"ids", r.ids},
                         {"prompt_tokens", r.prompt_tokens},
                         {"ttft_ms", r.ttft_ms},
                         {"tpot_ms", r.tpot_ms},
                         {"tokens_per_s", r.tokens_per_s}});
    std::printf("\n");
    if (!f.quiet)
      std::fprintf(stderr, "[%d prompt tokens, %zu generated; TTFT %.1f ms, TPOT %.2f ms, %.1f tokens/s]\n",
                   r.prompt_tokens, r.ids.size(), r.ttft_ms, r.tpot_ms, r.tokens_per_s);
  });
}

}  // namespace shrink::cli
