// shrink serve MODEL --port P: the HTTP server of src/serve (classify, generate, OpenAI completions, metrics, A/B).
#include <shrink/core/error.h>
#include <shrink/serve/server.h>

#include <cstdio>
#include <fstream>

#include "cli/commands.h"
#include "cli/common.h"

namespace shrink::cli {

void register_serve(CLI::App& app) {
  auto* sub = app.add_subcommand("serve", "serve models over HTTP (batching, streaming, metrics, A/B, shadow)");
  static std::string model, host = "127.0.0.1", tokenizer, port_file, shadow;
  static std::vector<std::string> variants;
  static int port = 8080;
  static double max_body_bytes = 1 << 20, kv_budget_mb = 1024;
  static serve::ServerOptions o;
  static CommonFlags f;
  sub->add_option("model", model, "model directory or llama2.c .bin (one variant; or use --variant)");
  sub->add_option("--port", port, "TCP port (0: any free port; see --port-file)")->check(CLI::Range(0, 65535));
  sub->add_option("--host", host, "address to bind");
  sub->add_option("--tokenizer", tokenizer, "tokenizer file (llama2.c .bin models)");
  sub->add_option("--port-file", port_file, "write the bound port to this file once ready");
  sub->add_option("--variant", variants, "A/B variant name=MODEL:share (repeatable; shares sum to 1)");
  sub->add_option("--shadow", shadow, "shadow candidate name=MODEL: runs a copy of each request, never answers");
  sub->add_option("--max-batch", o.worker.max_batch, "encoder: requests per forward")->check(CLI::PositiveNumber);
  sub->add_option("--batch-wait-ms", o.worker.batch_wait_ms, "encoder: wait this long for a batch to fill")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--max-queue", o.worker.max_queue, "requests waiting per variant; more get 429")
      ->check(CLI::PositiveNumber);
  sub->add_option("--kv-budget-mb", kv_budget_mb, "decoder: KV cache memory for running sequences (worst case)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-length", o.worker.max_length, "classify: tokens per text (longer texts are truncated)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-body-bytes", max_body_bytes, "largest request body")->check(CLI::PositiveNumber);
  sub->add_option("--max-texts", o.limits.max_texts, "texts per classify request")->check(CLI::PositiveNumber);
  sub->add_option("--max-new-tokens", o.limits.max_new_tokens, "largest max_tokens a request may ask for")
      ->check(CLI::PositiveNumber);
  sub->add_option("--deadline-ms", o.deadline_ms, "a request not started within this time gets 504 (0: none)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--drift-warn", o.drift_warn, "warn when a layer's clipped-activation share exceeds this")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--http-threads", o.http_threads,
                  "connections served at once; a keep-alive client holds one, so at least the number of clients")
      ->check(CLI::PositiveNumber);
  sub->add_option("--drain-timeout-s", o.drain_timeout_s, "on SIGTERM, wait at most this long for requests")
      ->check(CLI::NonNegativeNumber);
  add_common_flags(sub, f);
  sub->callback([] {
    serve::block_serve_signals();  // before any thread exists, so sigwait below receives them
    apply(f);
    if (!model.empty() == !variants.empty()) fail("give either MODEL or --variant name=MODEL:share (repeatable)");
    o.tokenizer = tokenizer;
    o.limits.max_body_bytes = static_cast<size_t>(max_body_bytes);
    o.worker.kv_budget_bytes = static_cast<size_t>(kv_budget_mb * (1 << 20));
    if (!model.empty()) {
      const std::filesystem::path p(model);
      // The variant's name: the directory's name, or a llama2.c file's name without ".bin".
      const std::filesystem::path base = p.filename().empty() ? p.parent_path().filename() : p.filename();
      o.variants.push_back({base.extension() == ".bin" ? base.stem().string() : base.string(), p, 1});
    }
    for (const auto& v : variants) o.variants.push_back(serve::parse_variant_spec(v, true));
    if (!shadow.empty()) o.shadow = serve::parse_variant_spec(shadow, false);
    serve::Server server(o);
    const int bound = server.start(host, port);
    std::fprintf(stderr, "serve: listening on http://%s:%d (loading models)\n", host.c_str(), bound);
    server.load();
    if (!port_file.empty()) {
      const std::string tmp = port_file + ".tmp";
      std::ofstream(tmp) << bound << "\n";
      std::filesystem::rename(tmp, port_file);
    }
    std::fprintf(stderr, "serve: ready\n");
    if (f.json) print_json({{"host", host}, {"port", bound}});
    serve::serve_until_signal(server);
    std::fprintf(stderr, "serve: stopped\n");
  });
}

}  // namespace shrink::cli
