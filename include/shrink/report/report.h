// `shrink report DIR`: DIR/results.jsonl -> report.md, report.json, report.csv and one self-contained report.html
// (inline CSS and SVG: the Pareto scatter, latency histograms, per-segment bars, size breakdown, the table).
#pragma once

#include <shrink/report/results.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace shrink {

// The fixed columns of the table (report.csv header, in order): name, pareto, baseline, task, stages,
// quality_name, quality, kld, top1_agreement, p50_ms, p99_ms, throughput_per_s, size_bytes, joules_per_inference,
// energy_estimated, usd_per_1k, compress_seconds, compress_peak_rss_bytes, error. docs/report.md defines each.
std::vector<std::string> report_columns();

// One row's value per column: a number, a string, a bool, or null when the record does not carry it (optional
// fields of the wrong type count as absent).
nlohmann::json column_values(const ResultRow& row);
// What report.md and report.html show: titles with units, and the cells formatted for reading.
std::vector<std::string> report_column_titles();
std::vector<std::string> display_values(const ResultRow& row);

struct ReportInput;
// Compression cost per stage, one row per stage of every variant: {variant, stage kind, seconds, peak RSS MB}.
std::vector<std::vector<std::string>> stage_cost_rows(const ReportInput& in);
// True when some row's energy is the CPU-time estimate rather than RAPL.
bool any_estimated_energy(const ReportInput& in);
// "CPU (isa, N threads of M cores)" from ReportInput::machine.
std::string machine_line(const ReportInput& in);

struct ReportInput {
  std::filesystem::path source;  // the results.jsonl read
  std::vector<ResultRow> rows;   // pareto marked
  nlohmann::json machine;        // bench.machine of the baseline (else of the first row that has one)
  std::string commit;
};

ReportInput load_report_input(const std::filesystem::path& results_jsonl);

std::string render_markdown(const ReportInput& in);
std::string render_csv(const ReportInput& in);
nlohmann::json render_json(const ReportInput& in);  // {"schema","source","machine","commit","columns","rows",...}
std::string render_html(const ReportInput& in);

struct ReportPaths {
  std::filesystem::path markdown, json, csv, html;
};
// Reads DIR/results.jsonl and writes the four files into DIR, each atomically (temp name, renamed at the end).
ReportPaths write_report(const std::filesystem::path& dir);
// The same from rows already loaded (load_report_input(dir / "results.jsonl")).
ReportPaths write_report(const std::filesystem::path& dir, const ReportInput& in);

}  // namespace shrink
