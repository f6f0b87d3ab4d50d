// `shrink serve`: the HTTP front end (cpp-httplib) over one ModelWorker per variant. Routes: POST /v1/classify,
// /v1/generate, /v1/completions (OpenAI subset), /admin/reload; GET /healthz, /readyz, /v1/models, /metrics.
// A/B: requests go to a variant by the hash of X-Shrink-Key (sticky) or at random, in proportion to the shares;
// X-Shrink-Variant forces one. Shadow: a candidate answers a copy of each request off the response path and the
// agreement with the variant that answered is exported. Overload: bounded queues (429 + Retry-After), deadlines
// (504), drain on shutdown, reload without dropping requests.
#pragma once

#include <shrink/serve/api.h>
#include <shrink/serve/metrics.h>
#include <shrink/serve/worker.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace httplib {
class Server;
}

namespace shrink::serve {

struct VariantSpec {
  std::string name;
  std::filesystem::path path;
  double share = 1;
};
// "name=MODEL:share" (with_share) or "name=MODEL"; throws naming the flag's text and the expected form.
VariantSpec parse_variant_spec(std::string_view text, bool with_share);
// Throws unless the names are distinct and the shares are positive and sum to 1 (within 1e-6).
void validate_variants(const std::vector<VariantSpec>& variants);
// The variant a key goes to: splitmix64(FNV-1a(key)) mapped to [0, 1), then the cumulative shares.
size_t pick_variant(std::string_view key, const std::vector<double>& shares);

struct ServerOptions {
  std::vector<VariantSpec> variants;  // at least one
  std::optional<VariantSpec> shadow;
  std::filesystem::path tokenizer;  // for llama2.c .bin models
  WorkerOptions worker;
  ApiLimits limits;
  double deadline_ms = 0;  // default per-request deadline to start (0: none); a request's timeout_ms overrides it
  double drift_warn = 0;   // log a warning when a layer's clipped-activation share exceeds this (0: off)
  int http_threads = 256;  // connections served at once (keep-alive connections hold one each)
  double drain_timeout_s = 30;
};

// Declares every metric the server and its workers update.
void declare_serve_metrics(Metrics& m);
// The scheme of a model's linears: "f32", "w8a8", ... or "mixed(a,b)".
std::string model_scheme(const Model& m);

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // drains and stops if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port (0: an ephemeral port) and serves on a background thread; /healthz answers at once, the rest
  // 503 until load() returns. Returns the bound port; throws when it cannot bind.
  int start(const std::string& host, int port);
  // Loads every variant (and the shadow) and marks the server ready. Throws naming the model on failure.
  void load();
  // Loads every model again and swaps it in; requests already running finish on the old one.
  void reload();
  // /readyz and new requests answer 503; waits (up to drain_timeout_s) for requests in flight, then stops.
  void drain_and_stop();
  bool running() const;
  Metrics& metrics() { return metrics_; }

 private:
  struct Variant;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Metrics metrics_;
};

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and every thread it creates later: call it first.
void block_serve_signals();
// Waits for those signals: SIGHUP reloads, SIGTERM/SIGINT drain and stop the server, then returns.
void serve_until_signal(Server& server);

}  // namespace shrink::serve
