// Helpers shared by the subcommands: common flags, model opening, JSON output, progress lines.
#pragma once

#include <shrink/models/model.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace shrink::cli {

struct CommonFlags {
  bool json = false;
  bool quiet = false;
  int threads = 0;  // 0: all cores
};

// --json, --quiet, --threads on `sub`; apply() sets the thread count.
void add_common_flags(CLI::App* sub, CommonFlags& f);
void apply(const CommonFlags& f);

std::unique_ptr<Model> open_model(const std::string& path, const std::string& tokenizer);
DecoderModel& as_decoder(Model& m, const char* command);
EncoderModel& as_encoder(Model& m, const char* command);

// What a command that runs a decoder (generate, ppl) takes besides its own flags: the model (positional, added by the
// command so that it comes first in the help), --kv-cache and --tokenizer.
struct DecoderFlags {
  std::string path, tokenizer, kv_cache = "f32";
  // Adds --kv-cache and --tokenizer to `sub`.
  void add_to(CLI::App* sub);
  // The model at `path`, checked to be a decoder (errors name `command`), with the --kv-cache type set.
  std::unique_ptr<Model> open(const char* command) const;
};

void print_json(const nlohmann::json& j);  // one object, one line, stdout
bool stderr_is_tty();
// "\r[####    ] 40% 12/30 ETA 5s" on a terminal, plain periodic lines when piped; silent when quiet.
class Progress {
 public:
  Progress(std::string label, int64_t total, bool quiet);
  void update(int64_t done);
  void finish();

 private:
  std::string label_;
  int64_t total_;
  bool quiet_, tty_;
  double start_ms_, last_ms_ = -1e9;
};

}  // namespace shrink::cli
