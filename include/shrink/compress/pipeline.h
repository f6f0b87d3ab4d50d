// Running recipes: each stage is a shrink subcommand in its own process (honest per-stage time and peak RSS, the
// commands' own validation), resumable through per-stage completion markers; after a stage the model is evaluated
// and benchmarked the same way and one result record (docs/results.md) is appended to DIR/results.jsonl.
// Sweeps run many recipes into DIR/configs/<id>/, split across MPI ranks by the caller.
#pragma once

#include <shrink/compress/recipe.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace shrink {

struct PipelineOptions {
  std::filesystem::path exe = "/proc/self/exe";  // the shrink binary the stages run as
  std::string model;                             // the input model (directory or .bin)
  std::filesystem::path out;                     // DIR
  CommandTable commands;                         // the subcommands of `exe` and their flags
  int threads = 0;                               // --threads for every child (0: the children's default)
  bool quiet = false;                            // no progress lines; children's stderr only in the logs
  bool measure_baseline = true;                  // measure the input model first (the `baseline` row)
  bool measure_every_stage = true;               // false: only the last stage is evaluated and benchmarked
  std::string final_name;                        // name of the last stage's row (default: the chain of kinds)
  std::filesystem::path results;                 // where rows are appended (default DIR/results.jsonl; rewritten)
  bool run_report = true;                        // `shrink report DIR` at the end when `exe` has it
};

struct PipelineResult {
  std::vector<nlohmann::json> records;  // the rows written, in order
  std::filesystem::path final_model;    // the last stage's model (DIR/final links to it)
  int stages_run = 0, stages_skipped = 0;
};

// Runs the recipe; a stage whose marker holds the same parameter hash is skipped, anything else is redone.
// Throws shrink::Error naming the failed stage, its command, its last stderr lines and its log file.
PipelineResult run_pipeline(const Recipe& recipe, const PipelineOptions& opt);

// The `baseline` row of opt.model, measured into DIR/baseline/ (reused there when the settings did not change).
nlohmann::json measure_baseline(const Recipe& recipe, const PipelineOptions& opt);

// A cache name for what `shrink ARGS...` produces: "<prefix>-" + the first 16 hex digits of the SHA-256 of the compact
// JSON {"args":[ARGS...],"version":V}, so changed arguments or a new format version never reuse an old result.
std::string command_cache_key(const std::string& prefix, int version, const std::vector<std::string>& args);

// What a model's files are, cheaply: 16 hex digits of the SHA-256 of each file's name, size and modification time
// (a directory's regular files, or the one file). A model retrained or replaced at the same path changes it, so stage
// markers and sweep rows made from the old one are not reused.
std::string model_fingerprint(const std::string& model);

// The identity of a result row: the model's fingerprint, the measurement settings and (unless `baseline`) the stages
// with their resolved parameters. A sweep reuses a row only when its `key` equals this.
std::string sweep_row_key(const Recipe& recipe, const PipelineOptions& opt, bool baseline);

// The stage directory name: "01-prune".
std::string stage_dir_name(size_t index, const std::string& kind);

// Appends one JSON object as one line (O_APPEND; a reader never sees half a line from a finished write).
void append_jsonl(const std::filesystem::path& file, const nlohmann::json& row);
// Every row of a results file (missing file: none). Throws naming the file and line on bad JSON.
std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& file);

struct SweepOptions {
  PipelineOptions pipeline;  // exe, model, commands, threads, quiet; `out` is the sweep's DIR
  int rank = 0, ranks = 1;   // this process takes the configurations with index % ranks == rank
};

// The results file a rank writes: DIR/results.jsonl for a single rank, DIR/results-rank-R.jsonl under MPI.
std::filesystem::path sweep_results_file(const std::filesystem::path& out, int rank, int ranks);

// Runs this rank's share of `configs` (rank 0 also measures the baseline), skipping ids already in DIR/results.jsonl
// or any rank file with the same `key` (sweep_row_key). Rows of those ids with another key (an earlier sweep of a
// different model or settings into the same DIR) are stale: rank 0 removes them from DIR/results.jsonl, saying so,
// and they are measured again. A configuration that fails becomes a row with `error`; the sweep goes on.
// Returns the ids run.
std::vector<std::string> run_sweep_rank(const std::vector<SweepConfig>& configs, const SweepOptions& opt);

// After every rank is done: DIR/results.jsonl = its old rows + the rank files' rows (baseline first, each name once,
// configurations in space order, stale rows of `configs` dropped); the rank files are removed. Returns the number of
// rows.
size_t merge_sweep_results(const std::vector<SweepConfig>& configs, const SweepOptions& opt);

// `shrink report DIR` as a child when the build has it; otherwise a note on stderr. Never throws on its failure.
void run_report(const PipelineOptions& opt);

}  // namespace shrink
