// `shrink demo --quick`: the whole flow on a small slice of Fashion-MNIST (Debian package dataset-fashion-mnist):
// teacher trained and cached, five variants compressed, evaluated and benchmarked, results.jsonl and the report.
// The assertions come from outside the demo: sizes and parameter counts against what each technique must do to the
// teacher's shape, the Pareto marks recomputed here from the rows, and a rerun that must redo nothing. The console
// table: column alignment measured here in code points with an em-dash cell, accuracy shown as in the report. The
// teacher's cache key: a hash of its arguments, checked against Python's hashlib.
#include <gtest/gtest.h>
#include <shrink/compress/pipeline.h>
#include <shrink/core/error.h>
#include <shrink/report/report.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "unit/test_util.h"

namespace shrink {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::run_cli;

std::vector<json> read_rows(const fs::path& file) {
  std::ifstream in(file);
  EXPECT_TRUE(in) << file;
  std::vector<json> rows;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// a dominates b over (accuracy up, p99 down, size down).
bool dominates(const json& a, const json& b) {
  const double qa = a["quality"]["value"], qb = b["quality"]["value"];
  const double la = a["bench"]["latency_ms"]["p99"], lb = b["bench"]["latency_ms"]["p99"];
  const double sa = a["size_bytes"], sb = b["size_bytes"];
  return qa >= qb && la <= lb && sa <= sb && (qa > qb || la < lb || sa < sb);
}

TEST(Demo, QuickRunsEveryVariantAndResumes) {
  ASSERT_TRUE(fs::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"))
      << "Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (scripts/install-deps.sh)";
  const fs::path dir = testing::temp_dir("demo");
  const std::string cmd =
      "demo --quick --threads 2 --out " + (dir / "out").string() + " --cache " + (dir / "cache").string();
  const auto r = run_cli(cmd);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("report: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("distill+prune+w8a8"), std::string::npos) << r.out;
  // The cached teacher is named by the hash of its command (DemoTeacherKey), with no temporary left beside it.
  std::vector<std::string> cached;
  for (const auto& e : fs::directory_iterator(dir / "cache")) cached.push_back(e.path().filename().string());
  ASSERT_EQ(cached.size(), 1u);
  EXPECT_EQ(cached[0].rfind("demo-vit-fashion-mnist-", 0), 0u) << cached[0];
  EXPECT_EQ(cached[0].size(), std::string("demo-vit-fashion-mnist-").size() + 16) << cached[0];

  const std::vector<json> rows = read_rows(dir / "out" / "results.jsonl");
  std::map<std::string, json> by;
  for (const json& row : rows) by[row["name"].get<std::string>()] = row;
  ASSERT_EQ(rows.size(), 6u);
  for (const char* name :
       {"baseline", "distill-2-layers", "prune-50", "quantize-w8a8", "quantize-w4a16-g32", "distill+prune+w8a8"}) {
    ASSERT_TRUE(by.count(name)) << name;
    EXPECT_FALSE(by[name].contains("error")) << name << ": " << by[name].value("error", "");
  }
  ASSERT_TRUE(by["baseline"]["baseline"].get<bool>());
  const double base_size = by["baseline"]["size_bytes"];
  const double base_params = by["baseline"]["parameters"];
  // The teacher has 4 blocks; a 2-layer student keeps the embeddings and the head: fewer than 60% of the weights.
  EXPECT_LT(by["distill-2-layers"]["parameters"].get<double>(), 0.6 * base_params);
  // 50% of the heads and FFN neurons removed: the blocks lose about half their weights.
  EXPECT_LT(by["prune-50"]["parameters"].get<double>(), 0.8 * base_params);
  // int8 weights (4x smaller than fp32) with fp32 scales, embeddings and head: under 45% of the size; int4 smaller.
  EXPECT_LT(by["quantize-w8a8"]["size_bytes"].get<double>(), 0.45 * base_size);
  EXPECT_LT(by["quantize-w4a16-g32"]["size_bytes"].get<double>(), by["quantize-w8a8"]["size_bytes"].get<double>());
  EXPECT_LT(by["distill+prune+w8a8"]["size_bytes"].get<double>(), by["quantize-w8a8"]["size_bytes"].get<double>());
  // Dynamic W8A8 changes few predictions of the same network.
  EXPECT_GE(by["quantize-w8a8"]["eval"]["top1_agreement"].get<double>(), 0.95);
  // The report's Pareto marks are those recomputed here from the rows.
  const json report = json::parse(slurp(dir / "out" / "report.json"));
  ASSERT_EQ(report["rows"].size(), rows.size());
  for (const json& marked : report["rows"]) {
    const json& a = by[marked["name"].get<std::string>()];
    bool dominated = false;
    for (const json& b : rows) dominated = dominated || dominates(b, a);
    EXPECT_EQ(marked["pareto"].get<bool>(), !dominated) << a["name"];
  }
  const std::string html = slurp(dir / "out" / "report.html");
  EXPECT_NE(html.find("<svg"), std::string::npos);

  // A second run finds the cached teacher and every variant done: nothing is trained or compressed again.
  const auto stage_marker = dir / "out" / "configs" / "distill+prune+w8a8" / "stages" / "01-distill" / "stage.json";
  ASSERT_TRUE(fs::exists(stage_marker));
  const auto before = fs::last_write_time(stage_marker);
  const auto again = run_cli(cmd);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.err.find("teacher from the cache"), std::string::npos) << again.err;
  EXPECT_EQ(fs::last_write_time(stage_marker), before);
  EXPECT_EQ(read_rows(dir / "out" / "results.jsonl").size(), 6u);
}

// Display columns of UTF-8 text as a terminal shows it: one per code point (bytes that are not 10xxxxxx).
size_t columns_of(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(DemoTable, EmDashCellKeepsColumnsAligned) {
  const std::string dash = "\xE2\x80\x94";  // U+2014, 3 bytes, 1 column
  const std::vector<std::vector<std::string>> cells = {{"variant", "quality", "KLD", "size MB"},
                                                       {"baseline *", "87.43%", dash, "1.20"},
                                                       {"w4a16-g32", "85.10%", "0.0123", dash},
                                                       {dash, "9.00%", "12", "100.50"}};
  const std::vector<std::string> lines = lines_of(render_text_table(cells));
  ASSERT_EQ(lines.size(), cells.size() + 1);  // the titles are underlined
  EXPECT_EQ(lines[1], std::string(columns_of(lines[0]), '-'));
  // Widths by hand: column 0 is "baseline *" (10), then 7 ("quality"), 6 ("0.0123"), 7 ("size MB"), each right
  // column after two spaces: a line is 10 + 2+7 + 2+6 + 2+7 = 36 columns, and column c ends at 10, 19, 27, 36.
  const std::vector<size_t> ends = {10, 19, 27, 36};
  for (size_t r = 0; r < cells.size(); ++r) {
    const std::string& line = lines[r == 0 ? 0 : r + 1];
    EXPECT_EQ(columns_of(line), 36u) << line;
    EXPECT_EQ(line.rfind(cells[r][0], 0), 0u) << line;  // left-aligned first column
    // Each right-aligned cell ends at its column's end, counted in display columns from the line's start.
    size_t from = cells[r][0].size();
    for (size_t c = 1; c < cells[r].size(); ++c) {
      const size_t at = line.find(cells[r][c], from);
      ASSERT_NE(at, std::string::npos) << line;
      from = at + cells[r][c].size();
      EXPECT_EQ(columns_of(line.substr(0, from)), ends[c]) << "row " << r << " column " << c << ": " << line;
    }
  }
}

ResultRow table_row(const std::string& name, const std::string& metric, double quality, const json& eval) {
  ResultRow r;
  r.name = name;
  r.quality_name = metric;
  r.quality = quality;
  r.higher_is_better = metric != "ppl";
  r.record = {{"eval", eval}};
  return r;
}

// Accuracy is a percentage in the console table and in report.md alike (a fraction in the records and the CSV);
// perplexity stays a number; a value the record lacks is an em dash.
TEST(DemoTable, QualityAsPercentLikeTheReport) {
  ReportInput in;
  in.rows = {table_row("baseline", "accuracy", 0.8743, {{"top1_agreement", 1.0}}),
             table_row("w8a8", "accuracy", 0.86134, {{"top1_agreement", 0.9505}, {"kld", 0.0123}})};
  in.rows[0].pareto = true;
  const std::vector<std::string> lines =
      lines_of(render_console_table(in, {"name", "quality", "top1_agreement", "kld"}));
  ASSERT_EQ(lines.size(), 4u);
  // Titles "variant", "quality", "agreement", "KLD"; widths 10 ("baseline *"), 7, 9, 6.
  EXPECT_EQ(lines[0], "variant     quality  agreement     KLD");
  EXPECT_EQ(lines[2], "baseline *   87.43%    100.00%       \xE2\x80\x94");
  EXPECT_EQ(lines[3], "w8a8         86.13%     95.05%  0.0123");
  EXPECT_EQ(format_quality("ppl", 12.345678), "12.3457");
  EXPECT_EQ(format_quality("accuracy", 0.5), "50.00%");
  const std::string md = render_markdown(in);
  EXPECT_NE(md.find("- **baseline**: accuracy 87.43%,"), std::string::npos) << md;
  EXPECT_NE(md.find("| 86.13% |"), std::string::npos) << md;
  const std::string e = testing::error_of([&] { render_console_table(in, {"name", "accuracy"}); });
  EXPECT_NE(e.find("no column `accuracy`"), std::string::npos) << e;
}

// The teacher's cache key follows its arguments: the same list gives the same key, any change (a value, the order,
// one more flag, the format version) another; the digest is the one Python computes from the documented JSON.
TEST(DemoTeacherKey, HashOfArgumentsAndVersion) {
  const std::vector<std::string> a = {"train", "--task", "image", "--hidden", "64", "--epochs", "6"};
  std::vector<std::string> more = a, other = a, swapped = a;
  more.insert(more.end(), {"--limit", "2000"});
  other[4] = "65";
  std::swap(swapped[3], swapped[5]);
  const std::string k = command_cache_key("demo-vit", 2, a);
  EXPECT_EQ(k, command_cache_key("demo-vit", 2, a));
  for (const std::string& different : {command_cache_key("demo-vit", 2, more), command_cache_key("demo-vit", 2, other),
                                       command_cache_key("demo-vit", 2, swapped), command_cache_key("demo-vit", 3, a)})
    EXPECT_NE(k, different);
  const auto py = testing::run_command(
      "/usr/bin/python3 -c 'import hashlib, json, sys; print(hashlib.sha256(json.dumps({\"args\": sys.argv[1:], "
      "\"version\": 2}, separators=(\",\", \":\"), sort_keys=True).encode()).hexdigest()[:16])' "
      "train --task image --hidden 64 --epochs 6");
  ASSERT_EQ(py.code, 0) << py.err;
  EXPECT_EQ(k, "demo-vit-" + py.out.substr(0, 16)) << py.out;
}

}  // namespace
}  // namespace shrink
