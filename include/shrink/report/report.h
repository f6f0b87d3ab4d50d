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
// Metrics that are fractions in the records (accuracy, macro_f1, top1_agreement) and are shown as percentages.
bool is_fraction_metric(const std::string& name);
// A headline metric as every tool prints it: fractions as percentages with two decimals ("87.43%", like eval,
// train and the agreement column), anything else (ppl) with four decimals.
std::string format_quality(const std::string& name, double value);

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

// A plain-text table for a terminal: cells[0] holds the titles (underlined with dashes), the first column is
// left-aligned and the others right-aligned, two spaces apart. Widths count display columns (UTF-8 code points),
// so an em dash ("\u2014", 3 bytes) is one column wide, as the terminal shows it.
std::string render_text_table(const std::vector<std::vector<std::string>>& cells);
// The console table of `columns` (keys of report_columns(), in that order) with one row per variant, the name
// marked " *" on the Pareto frontier; cells as in report.md (display_values).
std::string render_console_table(const ReportInput& in, const std::vector<std::string>& columns);

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
