// `shrink demo --quick`: the whole flow on a small slice of Fashion-MNIST (Debian package dataset-fashion-mnist):
// teacher trained and cached, five variants compressed, evaluated and benchmarked, results.jsonl and the report.
// The assertions come from outside the demo: sizes and parameter counts against what each technique must do to the
// teacher's shape, the Pareto marks recomputed here from the rows, and a rerun that must redo nothing.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace shrink
