// libFuzzer target: arbitrary bytes as one line of results.jsonl. Only shrink::Error may come out of the parser, and
// every record it accepts must render (Markdown, CSV, JSON, HTML) without any exception.
#include <shrink/core/error.h>
#include <shrink/report/report.h>
#include <shrink/report/results.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  shrink::ReportInput in;
  try {
    in.rows.push_back(shrink::parse_result_line(std::string_view(reinterpret_cast<const char*>(data), size),
                                                "fuzz/results.jsonl", 1));
  } catch (const shrink::Error&) {
    return 0;
  }
  shrink::mark_pareto(in.rows);
  // A second copy under another name exercises the frontier and the multi-row plots.
  in.rows.push_back(in.rows.front());
  in.rows.back().name += "-copy";
  shrink::mark_pareto(in.rows);
  (void)shrink::render_markdown(in);
  (void)shrink::render_csv(in);
  (void)shrink::render_json(in).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  (void)shrink::render_html(in);
  return 0;
}
