// shrink report DIR: DIR/results.jsonl -> report.md, report.json, report.csv, report.html (src/report/).
#include <shrink/core/error.h>
#include <shrink/report/report.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"

namespace shrink::cli {

void register_report(CLI::App& app) {
  auto* sub =
      app.add_subcommand("report", "Markdown, JSON, CSV and one self-contained HTML page from DIR/results.jsonl");
  static std::string dir;
  static CommonFlags f;
  sub->add_option("dir", dir, "directory holding results.jsonl (the --out of compress, sweep or demo)")->required();
  add_common_flags(sub, f);
  sub->callback([] {
    apply(f);
    if (!std::filesystem::is_directory(dir))
      fail("{}: not a directory; pass the --out directory of `shrink compress`, `sweep` or `demo`", dir);
    const ReportInput in = load_report_input(std::filesystem::path(dir) / "results.jsonl");
    const ReportPaths p = write_report(dir, in);
    nlohmann::json frontier = nlohmann::json::array();
    for (const ResultRow& r : in.rows)
      if (r.pareto) frontier.push_back(r.name);
    if (f.json)
      return print_json({{"markdown", p.markdown.string()},
                         {"json", p.json.string()},
                         {"csv", p.csv.string()},
                         {"html", p.html.string()},
                         {"rows", in.rows.size()},
                         {"frontier", frontier}});
    if (f.quiet) return;
    std::printf("%zu variants, %zu on the Pareto frontier: %s\n", in.rows.size(), frontier.size(),
                frontier.dump().c_str());
    for (const auto& path : {p.markdown, p.json, p.csv, p.html}) std::printf("%s\n", path.string().c_str());
  });
}

}  // namespace shrink::cli
