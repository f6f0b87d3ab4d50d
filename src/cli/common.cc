// Shared CLI plumbing.
#include "cli/common.h"

#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

namespace shrink::cli {

namespace {
double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

void add_common_flags(CLI::App* sub, CommonFlags& f) {
  sub->add_flag("--json", f.json, "print one JSON object to stdout");
  sub->add_flag("-q,--quiet", f.quiet, "no progress output");
  sub->add_option("--threads", f.threads, "threads (default: all cores)")->check(CLI::NonNegativeNumber);
}

void apply(const CommonFlags& f) {
  set_num_threads(f.threads);
}

std::unique_ptr<Model> open_model(const std::string& path, const std::string& tokenizer) {
  LoadOptions opt;
  opt.tokenizer = tokenizer;
  return load_model(path, opt);
}

DecoderModel& as_decoder(Model& m, const char* command) {
  auto* d = dynamic_cast<DecoderModel*>(&m);
  if (!d)
    fail("{}: `shrink {}` needs a decoder (LLaMA or GPT-2) but this is {}; use `shrink classify`", m.source().string(),
         command, m.config().architecture);
  return *d;
}

void DecoderFlags::add_to(CLI::App* sub) {
  sub->add_option("--kv-cache", kv_cache, "KV cache type: f32 or int8 (INT8 KV8, ~3.8x smaller)")
      ->check(CLI::IsMember({"f32", "int8"}));
  sub->add_option("--tokenizer", tokenizer, "tokenizer file (needed for llama2.c .bin models)");
}

std::unique_ptr<Model> DecoderFlags::open(const char* command) const {
  auto model = open_model(path, tokenizer);
  as_decoder(*model, command).set_kv_cache_type(parse_kv_cache_type(kv_cache));
  return model;
}

EncoderModel& as_encoder(Model& m, const char* command) {
  auto* e = dynamic_cast<EncoderModel*>(&m);
  if (!e)
    fail("{}: `shrink {}` needs an encoder (BERT or DistilBERT) but this is {}; use `shrink generate`",
         m.source().string(), command, m.config().architecture);
  return *e;
}

void print_json(const nlohmann::json& j) {
  const std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

bool stderr_is_tty() {
  return ::isatty(2) == 1;
}

Progress::Progress(std::string label, int64_t total, bool quiet)
    : label_(std::move(label)), total_(total), quiet_(quiet), tty_(stderr_is_tty()), start_ms_(now_ms()) {}

void Progress::update(int64_t done) {
  if (quiet_) return;
  const double t = now_ms();
  if (t - last_ms_ < (tty_ ? 100 : 5000) && done < total_) return;
  last_ms_ = t;
  const double frac = total_ > 0 ? static_cast<double>(done) / total_ : 0;
  const double elapsed_s = (t - start_ms_) / 1000;
  const double eta_s = frac > 0 ? elapsed_s * (1 - frac) / frac : 0;
  if (tty_) {
    const int width = 30, filled = static_cast<int>(frac * width);
    std::fprintf(stderr, "\r%s [%s%s] %3d%% %lld/%lld ETA %.0fs ", label_.c_str(), std::string(filled, '#').c_str(),
                 std::string(width - filled, ' ').c_str(), static_cast<int>(frac * 100), static_cast<long long>(done),
                 static_cast<long long>(total_), eta_s);
  } else {
    std::fprintf(stderr, "%s: %lld/%lld (%d%%), %.0fs elapsed, ETA %.0fs\n", label_.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total_), static_cast<int>(frac * 100), elapsed_s,
                 eta_s);
  }
}

void Progress::finish() {
  if (!quiet_ && tty_) std::fprintf(stderr, "\n");
}

}  // namespace shrink::cli
