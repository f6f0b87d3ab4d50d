// Result records (docs/results.md): one JSON object per line of DIR/results.jsonl, written by compress, sweep and
// demo, read by `shrink report`. Parsing validates the required fields and names file, line and field on error.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace shrink {

inline constexpr const char* kResultSchema = "shrink.result/1";

struct ResultRow {
  int line = 0;  // 1-based line in the file
  std::string name, model, task;
  bool baseline = false;
  std::string error;  // non-empty: a failed configuration (listed, never plotted or on the frontier)
  // Headline metric (absent for error rows).
  std::string quality_name;
  double quality = 0;
  bool higher_is_better = true;
  double p99_ms = 0;
  int64_t size_bytes = 0;
  bool pareto = false;    // set by mark_pareto
  nlohmann::json record;  // the whole record, for the optional fields (eval, bench details, stages, ...)
};

// One line of `file` (line_no 1-based). Rows with `error` need only schema, name and error; the others need every
// required field of docs/results.md. Throws shrink::Error "FILE:LINE: field `F`: expected ..., found ...".
ResultRow parse_result_line(std::string_view line, const std::string& file, int line_no);

// Every non-blank line of `path`; also rejects a name used twice and more than one baseline (naming both lines).
std::vector<ResultRow> read_results(const std::filesystem::path& path);

// Sets ResultRow::pareto (and record["pareto"]) from pareto_frontier over (quality, p99, size); error rows: false.
void mark_pareto(std::vector<ResultRow>& rows);

}  // namespace shrink
