// The HTTP server: routes, A/B routing and shadowing, streaming (server-sent events), metrics, lifecycle.
#include <fmt/format.h>
#include <httplib.h>
#include <netinet/in.h>
#include <pthread.h>
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/ops/qlinear.h>
#include <shrink/serve/server.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <future>
#include <map>
#include <set>

namespace shrink::serve {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------- A/B routing

VariantSpec parse_variant_spec(std::string_view text, bool with_share) {
  const std::string form = with_share ? "name=MODEL:share (e.g. base=models/bert:0.9)" : "name=MODEL";
  const size_t eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0)
    fail("variant \"{}\": expected {}; give a name, '=', then the model path", text, form);
  VariantSpec v;
  v.name = std::string(text.substr(0, eq));
  std::string_view rest = text.substr(eq + 1);
  if (with_share) {
    const size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) fail("variant \"{}\": expected {}; the share is missing", text, form);
    const std::string share(rest.substr(colon + 1));
    char* end = nullptr;
    v.share = std::strtod(share.c_str(), &end);
    if (share.empty() || *end != '\0' || !(v.share > 0) || v.share > 1)
      fail("variant \"{}\": share \"{}\" must be a number in (0, 1]", text, share);
    rest = rest.substr(0, colon);
  }
  if (rest.empty()) fail("variant \"{}\": expected {}; the model path is empty", text, form);
  v.path = std::string(rest);
  return v;
}

void validate_variants(const std::vector<VariantSpec>& variants) {
  check(!variants.empty(), "no model to serve: give MODEL or --variant name=MODEL:share");
  std::set<std::string> names;
  double sum = 0;
  for (const auto& v : variants) {
    check(names.insert(v.name).second, "variant name \"{}\" is given twice; names must be distinct", v.name);
    sum += v.share;
  }
  check(std::fabs(sum - 1) < 1e-6, "variant shares sum to {}, expected 1; adjust the :share parts of --variant", sum);
}

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

}  // namespace

size_t pick_variant(std::string_view key, const std::vector<double>& shares) {
  const double u = static_cast<double>(splitmix64(fnv1a(key)) >> 11) * 0x1.0p-53;
  double cum = 0;
  for (size_t i = 0; i < shares.size(); ++i)
    if (u < (cum += shares[i])) return i;
  return shares.empty() ? 0 : shares.size() - 1;
}

// ---------------------------------------------------------------------------------------------- metrics

void declare_serve_metrics(Metrics& m) {
  const std::vector<double> seconds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  m.counter("shrink_requests_total", "HTTP requests answered, by route, status and variant");
  m.histogram("shrink_request_duration_seconds", "Request latency from arrival to the last byte queued", seconds);
  m.histogram("shrink_time_to_first_token_seconds", "Generation: submission to the first token", seconds);
  m.histogram("shrink_time_per_output_token_seconds", "Generation: mean time per token after the first",
              {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1});
  m.gauge("shrink_queue_depth", "Requests waiting to start, per variant");
  m.gauge("shrink_running_sequences", "Sequences in the continuous batch, per variant");
  m.gauge("shrink_kv_cache_reserved_bytes", "Worst-case KV cache bytes reserved by running sequences");
  m.histogram("shrink_batch_size", "Requests per encoder forward; sequences per decoder forward",
              {1, 2, 4, 8, 16, 32, 64, 128});
  m.counter("shrink_decoder_steps_total",
            "Decoder steps (one batched forward over the running sequences), per variant");
  m.counter("shrink_generated_tokens_total", "Tokens generated, per variant");
  m.gauge("shrink_tokens_per_second", "Tokens per second of the last decoder step, per variant");
  m.gauge("shrink_model_info", "The model each variant serves (value 1)");
  m.gauge("shrink_ready", "1 when the models are loaded and the server accepts requests");
  m.gauge("shrink_shadow_agreement_ratio",
          "Shadow variant: share of labels (classify) or token positions (generate) equal to the answering variant");
  m.counter("shrink_shadow_comparisons_total", "Shadow variant: requests compared with the answering variant");
  m.counter("shrink_shadow_dropped_total", "Shadow variant: copies not run (queue full or error)");
  m.counter("shrink_reloads_total", "Model reloads, by result");
  m.gauge("shrink_activation_clip_ratio",
          "Static W8A8 layers: share of activations outside the calibrated range since the previous check");
}

std::string model_scheme(const Model& m) {
  std::set<std::string> schemes;
  for (const auto& s : m.linears())
    if (s.impl) schemes.insert(s.impl->scheme());
  if (schemes.empty()) return "f32";
  if (schemes.size() == 1) return *schemes.begin();
  std::string all;
  for (const auto& s : schemes) all += (all.empty() ? "" : ",") + s;
  return "mixed(" + all + ")";
}

// ---------------------------------------------------------------------------------------------- server

struct Server::Variant {
  VariantSpec spec;
  std::unique_ptr<ModelWorker> worker;
  std::string architecture, scheme;
  ModelKind kind = ModelKind::Encoder;
};

namespace {

void log_line(const std::string& s) {
  fmt::print(stderr, "serve: {}\n", s);
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status, e.to_json());
  if (e.status == 429) res.set_header("Retry-After", "1");
  if (e.status == 503) res.set_header("Retry-After", "5");
}

json usage_json(const GenerateOutcome& o) {
  const int n = static_cast<int>(o.ids.size());
  return {{"prompt_tokens", o.prompt_tokens}, {"completion_tokens", n}, {"total_tokens", o.prompt_tokens + n}};
}

std::string sse(const json& j) {
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

// Tokens and the outcome of one streamed generation, handed from the worker to the connection thread.
struct StreamState {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<int32_t, std::string>> tokens;
  std::optional<GenerateOutcome> outcome;
  std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
  std::atomic<bool> released{false};
};

}  // namespace

struct Server::Impl {
  ServerOptions opt;
  Metrics& metrics;
  httplib::Server http;
  std::thread listen_thread;
  std::mutex engine;
  std::mutex reload_mu;
  std::atomic<bool> ready{false}, draining{false}, stopped{false};
  std::atomic<int> in_flight{0};
  std::atomic<uint64_t> request_counter{0};
  const uint64_t seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  std::mutex shadow_mu;
  double shadow_agreed = 0, shadow_compared = 0;
  std::mutex drift_mu;
  Timer drift_timer;
  std::map<std::string, ActivationClipCount> drift_last;  // by variant/layer
  // Declared last: destroyed first, so the workers' callbacks never outlive what they touch.
  std::vector<std::unique_ptr<Variant>> variants;
  std::unique_ptr<Variant> shadow;

  Impl(ServerOptions o, Metrics& m) : opt(std::move(o)), metrics(m) {}

  struct InFlight {
    Impl& s;
    explicit InFlight(Impl& impl) : s(impl) { ++s.in_flight; }
    ~InFlight() { --s.in_flight; }
  };

  void record(Route route, const std::string& variant, int status, double ms) {
    metrics.inc("shrink_requests_total",
                {{"route", route_name(route)}, {"status", std::to_string(status)}, {"variant", variant}});
    metrics.observe("shrink_request_duration_seconds", {{"route", route_name(route)}, {"variant", variant}}, ms / 1000);
  }

  std::unique_ptr<Variant> load_variant(const VariantSpec& spec) {
    LoadOptions lo;
    lo.tokenizer = opt.tokenizer;
    std::shared_ptr<Model> model = load_model(spec.path, lo);
    auto v = std::make_unique<Variant>();
    v->spec = spec;
    v->kind = model->kind();
    v->architecture = model->config().architecture;
    v->scheme = model_scheme(*model);
    if (auto* enc = dynamic_cast<EncoderModel*>(model.get())) {
      check(enc->has_classifier() && !enc->takes_images(),
            "{}: variant {} is {}, which has no text classification head; serve a ...ForSequenceClassification "
            "model",
            spec.path.string(), spec.name, v->architecture);
    }
    model->require_tokenizer();
    v->worker = std::make_unique<ModelWorker>(spec.name, std::move(model), opt.worker, engine, metrics);
    metrics.set("shrink_model_info", {{"variant", spec.name}, {"architecture", v->architecture}, {"scheme", v->scheme}},
                1);
    return v;
  }

  // Variant named by the request, or picked by key / at random by share.
  std::variant<Variant*, ApiError> choose(const ServeRequest& r) {
    if (!r.variant.empty()) {
      for (auto& v : variants)
        if (v->spec.name == r.variant) return v.get();
      std::string names;
      for (auto& v : variants) names += (names.empty() ? "" : ", ") + v->spec.name;
      if (r.route == Route::Completions)
        return api_error(404,
                         fmt::format("model \"{}\" is not served here; served: {} (GET /v1/models)", r.variant, names),
                         "model");
      return api_error(400,
                       fmt::format("X-Shrink-Variant names \"{}\", which is not served; served: {}", r.variant, names),
                       "X-Shrink-Variant");
    }
    if (variants.size() == 1) return variants[0].get();
    std::vector<double> shares;
    for (auto& v : variants) shares.push_back(v->spec.share);
    const std::string key = r.key.empty() ? std::to_string(seed ^ splitmix64(request_counter++)) : r.key;
    return variants[pick_variant(key, shares)].get();
  }

  Clock::time_point deadline(const ServeRequest& r) const {
    const double ms = r.timeout_ms > 0 ? r.timeout_ms : opt.deadline_ms;
    if (ms <= 0) return Clock::time_point::max();
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(ms));
  }

  void record_agreement(double agreed, double compared) {
    double ratio = 0;
    {
      std::lock_guard lock(shadow_mu);
      shadow_agreed += agreed;
      shadow_compared += compared;
      ratio = shadow_compared > 0 ? shadow_agreed / shadow_compared : 1;
    }
    const Labels v{{"variant", shadow->spec.name}};
    metrics.set("shrink_shadow_agreement_ratio", v, ratio);
    metrics.inc("shrink_shadow_comparisons_total", v);
  }

  void shadow_dropped() { metrics.inc("shrink_shadow_dropped_total", {{"variant", shadow->spec.name}}); }

  void shadow_classify(const std::vector<std::string>& texts, std::vector<int> labels) {
    if (!shadow) return;
    ClassifyJob job;
    job.texts = texts;
    job.done = [this, labels = std::move(labels)](ClassifyOutcome o) {
      if (o.error) return shadow_dropped();
      double agreed = 0;
      for (size_t i = 0; i < labels.size() && i < o.labels.size(); ++i) agreed += labels[i] == o.labels[i];
      record_agreement(agreed, static_cast<double>(labels.size()));
    };
    if (!shadow->worker->submit(std::move(job))) shadow_dropped();
  }

  void shadow_generate(const std::vector<int32_t>& prompt, const GenerateOptions& g, std::vector<int32_t> ids) {
    if (!shadow) return;
    GenerateJob job;
    job.prompt = prompt;
    job.options = g;
    job.done = [this, ids = std::move(ids)](GenerateOutcome o) {
      if (o.error) return shadow_dropped();
      // Positions compared over the longer sequence: a shorter or longer answer counts as disagreement.
      if (ids.empty() && o.ids.empty()) return record_agreement(1, 1);
      double agreed = 0;
      for (size_t i = 0; i < ids.size() && i < o.ids.size(); ++i) agreed += ids[i] == o.ids[i];
      record_agreement(agreed, static_cast<double>(std::max(ids.size(), o.ids.size())));
    };
    if (!shadow->worker->submit(std::move(job))) shadow_dropped();
  }

  // Clipped-activation shares of static W8A8 layers over the interval since the last check (at most once a second
  // unless forced), exported per layer and logged above --drift-warn.
  void check_drift(bool force) {
    if (opt.drift_warn <= 0 || !ready) return;
    std::unique_lock lock(drift_mu, std::try_to_lock);
    if (!lock || (!force && drift_timer.elapsed_ms() < 1000)) return;
    drift_timer.reset();
    auto visit = [&](const Variant& v) {
      auto model = v.worker->model();
      for (const auto& slot : model->linears()) {
        ActivationClipCount now;
        if (!slot.impl || !activation_clip_count(*slot.impl, now)) continue;
        ActivationClipCount& last = drift_last[v.spec.name + "/" + slot.name];
        if (now.total < last.total) last = {};  // reloaded: counts restarted
        if (now.total == last.total) continue;
        const double ratio =
            static_cast<double>(now.clipped - last.clipped) / static_cast<double>(now.total - last.total);
        metrics.set("shrink_activation_clip_ratio", {{"variant", v.spec.name}, {"layer", slot.name}}, ratio);
        if (ratio > opt.drift_warn)
          log_line(
              fmt::format("drift: variant {} layer {}: {:.2f}% of activations outside the calibrated range "
                          "(--drift-warn {:.2f}%); recalibrate on current traffic",
                          v.spec.name, slot.name, 100 * ratio, 100 * opt.drift_warn));
        last = now;
      }
    };
    for (const auto& v : variants) visit(*v);
    if (shadow) visit(*shadow);
  }

  void handle(Route route, const httplib::Request& req, httplib::Response& res) {
    InFlight guard(*this);
    check_drift(false);
    Timer timer;
    std::string variant_name;
    auto reply_error = [&](const ApiError& e) {
      send_error(res, e);
      record(route, variant_name, e.status, timer.elapsed_ms());
    };
    if (!ready || draining)
      return reply_error(api_error(503, draining ? "the server is shutting down; retry on another replica"
                                                 : "the models are still loading; retry shortly (GET /readyz)"));
    const HeaderList headers(req.headers.begin(), req.headers.end());
    auto parsed = parse_request(route, headers, req.body, opt.limits);
    if (auto* e = std::get_if<ApiError>(&parsed)) return reply_error(*e);
    ServeRequest& r = std::get<ServeRequest>(parsed);
    auto chosen = choose(r);
    if (auto* e = std::get_if<ApiError>(&chosen)) return reply_error(*e);
    Variant& v = *std::get<Variant*>(chosen);
    variant_name = v.spec.name;
    res.set_header("X-Shrink-Variant", variant_name);

    if (route == Route::Classify) {
      if (v.kind != ModelKind::Encoder)
        return reply_error(
            api_error(400, fmt::format("variant {} serves a decoder ({}); use /v1/generate or /v1/completions",
                                       variant_name, v.architecture)));
      auto promise = std::make_shared<std::promise<ClassifyOutcome>>();
      auto future = promise->get_future();
      ClassifyJob job;
      job.texts = r.texts;
      job.deadline = deadline(r);
      job.done = [promise](ClassifyOutcome o) { promise->set_value(std::move(o)); };
      if (!v.worker->submit(std::move(job)))
        return reply_error(api_error(429, fmt::format("variant {} has {} requests waiting (--max-queue); retry after "
                                                      "the Retry-After seconds",
                                                      variant_name, opt.worker.max_queue)));
      ClassifyOutcome o = future.get();
      if (o.error) return reply_error(*o.error);
      const ModelConfig& c = v.worker->model()->config();
      json results = json::array();
      int64_t tokens = 0;
      for (size_t i = 0; i < o.labels.size(); ++i) {
        const int l = o.labels[i];
        results.push_back(
            {{"label", l < static_cast<int>(c.id2label.size()) ? c.id2label[l] : fmt::format("LABEL_{}", l)},
             {"label_id", l},
             {"probabilities", o.probabilities[i]}});
        tokens += o.tokens[i];
      }
      send_json(res, 200, {{"variant", variant_name}, {"results", results}, {"usage", {{"prompt_tokens", tokens}}}});
      record(route, variant_name, 200, timer.elapsed_ms());
      shadow_classify(r.texts, std::move(o.labels));
      return;
    }

    if (v.kind != ModelKind::Decoder)
      return reply_error(api_error(
          400, fmt::format("variant {} serves an encoder ({}); use /v1/classify", variant_name, v.architecture)));
    std::vector<int32_t> prompt;
    {
      auto model = v.worker->model();
      const auto& dec = dynamic_cast<const DecoderModel&>(*model);
      prompt = dec.require_tokenizer().encode(r.prompt, true);
      const int64_t ctx = dec.max_context();
      if (static_cast<int64_t>(prompt.size()) + r.generation.max_new_tokens > ctx)
        return reply_error(api_error(
            400,
            fmt::format("too many tokens: the prompt is {} tokens and max_tokens is {}, more than the context of {} "
                        "tokens of variant {}; shorten the prompt or lower max_tokens",
                        prompt.size(), r.generation.max_new_tokens, ctx, variant_name),
            "max_tokens"));
      const size_t kv = v.worker->kv_bytes_needed(prompt.size(), r.generation.max_new_tokens);
      if (kv > opt.worker.kv_budget_bytes)
        return reply_error(api_error(
            400,
            fmt::format("too many tokens: {} prompt + {} new tokens need a {} byte KV cache, more than the server's "
                        "budget of {} bytes (--kv-budget-mb); lower max_tokens",
                        prompt.size(), r.generation.max_new_tokens, kv, opt.worker.kv_budget_bytes),
            "max_tokens"));
    }
    const bool completions = route == Route::Completions;
    const std::string id = fmt::format("cmpl-{}", request_counter++);
    const int64_t created = static_cast<int64_t>(std::time(nullptr));
    auto completion_json = [=](const std::string& text, const json& finish) {
      return json{
          {"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", variant_name},
          {"choices", json::array({{{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}}})}};
    };
    auto final_json = [=](const GenerateOutcome& o) {
      if (completions) {
        json j = completion_json(o.text, o.finish_reason);
        j["usage"] = usage_json(o);
        return j;
      }
      return json{
          {"variant", variant_name}, {"text", o.text},       {"ids", o.ids},        {"finish_reason", o.finish_reason},
          {"usage", usage_json(o)},  {"ttft_ms", o.ttft_ms}, {"tpot_ms", o.tpot_ms}};
    };

    auto state = std::make_shared<StreamState>();
    GenerateJob job;
    job.prompt = prompt;
    job.options = r.generation;
    job.deadline = deadline(r);
    job.cancelled = state->cancelled;
    if (r.stream) {
      job.on_token = [state](int32_t t, const std::string& piece) {
        std::lock_guard lock(state->mu);
        state->tokens.emplace_back(t, piece);
        state->cv.notify_all();
      };
    }
    job.done = [state](GenerateOutcome o) {
      std::lock_guard lock(state->mu);
      state->outcome = std::move(o);
      state->cv.notify_all();
    };
    if (!v.worker->submit(std::move(job)))
      return reply_error(api_error(429, fmt::format("variant {} has {} requests waiting (--max-queue); retry after "
                                                    "the Retry-After seconds",
                                                    variant_name, opt.worker.max_queue)));
    // Wait for the first token or the outcome, so a request that never starts gets its real status.
    {
      std::unique_lock lock(state->mu);
      state->cv.wait(lock, [&] { return !state->tokens.empty() || state->outcome; });
      if (state->outcome && state->outcome->error && state->tokens.empty()) {
        const ApiError e = *state->outcome->error;
        lock.unlock();
        return reply_error(e);
      }
    }
    if (!r.stream) {
      std::unique_lock lock(state->mu);
      state->cv.wait(lock, [&] { return state->outcome.has_value(); });
      const GenerateOutcome o = *state->outcome;
      lock.unlock();
      if (o.error) return reply_error(*o.error);
      send_json(res, 200, final_json(o));
      record(route, variant_name, 200, timer.elapsed_ms());
      shadow_generate(prompt, r.generation, o.ids);
      return;
    }

    // Server-sent events; the request stays in flight until the releaser runs.
    ++in_flight;
    auto t0 = std::make_shared<Timer>(timer);
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [=, this](size_t, httplib::DataSink& sink) {
          std::deque<std::pair<int32_t, std::string>> tokens;
          std::optional<GenerateOutcome> outcome;
          {
            std::unique_lock lock(state->mu);
            state->cv.wait(lock, [&] { return !state->tokens.empty() || state->outcome; });
            tokens.swap(state->tokens);
            if (tokens.empty()) outcome = state->outcome;
          }
          std::string out;
          for (auto& [t, piece] : tokens)
            out += sse(completions ? completion_json(piece, nullptr) : json{{"token", t}, {"text", piece}});
          if (outcome) {
            if (outcome->error) {
              out += sse(outcome->error->to_json());
            } else {
              json fin = final_json(*outcome);
              if (completions)
                fin["choices"][0]["text"] = "";
              else
                fin["done"] = true;
              out += sse(fin);
            }
            if (completions) out += "data: [DONE]\n\n";
          }
          if (!out.empty() && !sink.write(out.data(), out.size())) {
            state->cancelled->store(true);
            return false;
          }
          if (outcome) sink.done();
          return true;
        },
        [=, this](bool success) {
          if (state->released.exchange(true)) return;
          if (!success) state->cancelled->store(true);
          std::optional<GenerateOutcome> o;
          {
            std::lock_guard lock(state->mu);
            o = state->outcome;
          }
          record(route, variant_name, success ? 200 : 499, t0->elapsed_ms());
          if (success && o && !o->error) shadow_generate(prompt, r.generation, o->ids);
          --in_flight;
        });
  }

  void install_routes() {
    http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, {{"status", "ok"}});
    });
    http.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      const bool ok = ready && !draining;
      send_json(res, ok ? 200 : 503, {{"ready", ok}, {"draining", draining.load()}});
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      check_drift(true);
      res.set_content(metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
    });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      if (!ready) return send_error(res, api_error(503, "the models are still loading; retry shortly"));
      auto describe = [](const Variant& v) {
        return json{{"id", v.spec.name},
                    {"object", "model"},
                    {"owned_by", "shrink"},
                    {"share", v.spec.share},
                    {"architecture", v.architecture},
                    {"scheme", v.scheme},
                    {"kind", v.kind == ModelKind::Encoder ? "encoder" : "decoder"}};
      };
      json data = json::array();
      for (auto& v : variants) data.push_back(describe(*v));
      send_json(res, 200, {{"object", "list"}, {"data", data}, {"shadow", shadow ? describe(*shadow) : json(nullptr)}});
    });
    for (Route route : {Route::Classify, Route::Generate, Route::Completions}) {
      http.Post(std::string("/v1/") + route_name(route),
                [this, route](const httplib::Request& req, httplib::Response& res) { handle(route, req, res); });
    }
    http.Post("/admin/reload", [this](const httplib::Request&, httplib::Response& res) {
      try {
        reload_all();
        json names = json::array();
        for (auto& v : variants) names.push_back(v->spec.name);
        if (shadow) names.push_back(shadow->spec.name);
        send_json(res, 200, {{"reloaded", names}});
      } catch (const std::exception& e) {
        send_error(res, api_error(500, fmt::format("reload failed, the old models keep serving: {}", e.what())));
      }
    });
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 404)
        return send_error(res, api_error(404,
                                         fmt::format("no route {} {}; the API serves POST /v1/classify, "
                                                     "/v1/generate, /v1/completions and GET /v1/models",
                                                     req.method, req.path),
                                         "path"));
      if (res.status == 413)
        return send_error(res,
                          api_error(413, "the request body exceeds the server's limit (--max-body-bytes)", "body"));
      // httplib refused the request before routing it (e.g. a POST without Content-Length).
      send_error(
          res, api_error(res.status, fmt::format("HTTP {} for {} {}: the request could not be read; send a body with a "
                                                 "Content-Length header (for example curl -d '{{}}')",
                                                 res.status, req.method, req.path)));
    });
  }

  void reload_all() {
    std::lock_guard lock(reload_mu);
    auto swap = [&](Variant& v) {
      LoadOptions lo;
      lo.tokenizer = opt.tokenizer;
      std::shared_ptr<Model> model = load_model(v.spec.path, lo);
      model->require_tokenizer();
      const std::string scheme = model_scheme(*model), arch = model->config().architecture;
      v.worker->swap_model(std::move(model));
      if (scheme != v.scheme || arch != v.architecture)
        metrics.set("shrink_model_info",
                    {{"variant", v.spec.name}, {"architecture", v.architecture}, {"scheme", v.scheme}}, 0);
      v.scheme = scheme;
      v.architecture = arch;
      metrics.set("shrink_model_info", {{"variant", v.spec.name}, {"architecture", arch}, {"scheme", scheme}}, 1);
    };
    try {
      for (auto& v : variants) swap(*v);
      if (shadow) swap(*shadow);
    } catch (...) {
      metrics.inc("shrink_reloads_total", {{"result", "error"}});
      throw;
    }
    metrics.inc("shrink_reloads_total", {{"result", "ok"}});
    log_line("models reloaded");
  }
};

namespace {

// Debian's cpp-httplib is a compiled library whose listen backlog is 5: 32 clients connecting at once overflowed
// it, and the kernel dropped their handshakes (1 s SYN retries, then requests that got no answer). listen() again on
// the bound socket (found by its port among this process's listening sockets) raises the backlog; the kernel caps it
// at net.core.somaxconn.
void widen_listen_backlog(int port) {
  for (int fd = 0; fd < 4096; ++fd) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    sockaddr_storage addr{};
    socklen_t alen = sizeof addr;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) continue;
    int p = -1;
    if (addr.ss_family == AF_INET) p = ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
    if (addr.ss_family == AF_INET6) p = ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
    if (p == port) listen(fd, 1024);
  }
}

}  // namespace

Server::Server(ServerOptions options) {
  validate_variants(options.variants);
  declare_serve_metrics(metrics_);
  if (options.drift_warn > 0) set_activation_clip_counting(true);
  impl_ = std::make_unique<Impl>(std::move(options), metrics_);
  metrics_.set("shrink_ready", {}, 0);
}

Server::~Server() {
  drain_and_stop();
}

int Server::start(const std::string& host, int port) {
  Impl& s = *impl_;
  const int threads = std::max(1, s.opt.http_threads);
  s.http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.http.set_payload_max_length(s.opt.limits.max_body_bytes);
  s.install_routes();
  const int bound = port == 0 ? s.http.bind_to_any_port(host) : (s.http.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) fail("cannot listen on {}:{}; is the port in use? pick another with --port", host, port);
  widen_listen_backlog(bound);
  s.listen_thread = std::thread([&s] { s.http.listen_after_bind(); });
  return bound;
}

void Server::load() {
  Impl& s = *impl_;
  for (const auto& spec : s.opt.variants) s.variants.push_back(s.load_variant(spec));
  for (size_t i = 1; i < s.variants.size(); ++i)
    check(s.variants[i]->kind == s.variants[0]->kind,
          "variants {} and {} are not the same kind of model (encoder vs "
          "decoder); A/B variants must answer the same routes",
          s.variants[0]->spec.name, s.variants[i]->spec.name);
  if (s.opt.shadow) {
    s.shadow = s.load_variant(*s.opt.shadow);
    check(s.shadow->kind == s.variants[0]->kind, "shadow {} is not the same kind of model as variant {}",
          s.shadow->spec.name, s.variants[0]->spec.name);
    s.metrics.set("shrink_shadow_agreement_ratio", {{"variant", s.shadow->spec.name}}, 1);
  }
  s.ready = true;
  metrics_.set("shrink_ready", {}, 1);
}

void Server::reload() {
  impl_->reload_all();
}

bool Server::running() const {
  return impl_ && !impl_->stopped;
}

void Server::drain_and_stop() {
  Impl& s = *impl_;
  if (s.stopped.exchange(true)) return;
  s.draining = true;
  metrics_.set("shrink_ready", {}, 0);
  Timer t;
  while (s.in_flight > 0 && t.elapsed_ms() < s.opt.drain_timeout_s * 1000)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (s.in_flight > 0) log_line(fmt::format("drain timeout: {} requests still in flight", s.in_flight.load()));
  s.http.stop();
  if (s.listen_thread.joinable()) s.listen_thread.join();
  s.shadow.reset();
  s.variants.clear();
}

void block_serve_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void serve_until_signal(Server& server) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGHUP) {
      try {
        server.reload();
      } catch (const std::exception& e) {
        log_line(fmt::format("reload on SIGHUP failed, the old models keep serving: {}", e.what()));
      }
      continue;
    }
    log_line(fmt::format("{}: draining requests in flight, then exiting", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
    server.drain_and_stop();
    return;
  }
}

}  // namespace shrink::serve
