// shrink report: the Pareto frontier on hand-made rows, result-record validation, the CSV columns (parsed back by
// Python's csv module), escaping of hostile names, nice axis ticks by hand, and report.html rendered by headless
// Chromium with the plots checked in the rendered DOM.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/report/pareto.h>
#include <shrink/report/report.h>
#include <shrink/report/results.h>
#include <shrink/report/svg.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "unit/test_util.h"

namespace shrink {
namespace {

using testing::error_of;
using testing::run_cli;
using testing::temp_dir;
using testing::write_bytes;

// A record in the schema of docs/results.md, written the way compress/sweep do (the test's own helper); `extra` is
// merged in last (eval, size_breakdown, bench additions, stages).
nlohmann::json record(const std::string& name, double quality = 0.9, double p99 = 10, int64_t size = 1000000,
                      bool baseline = false, const nlohmann::json& extra = nlohmann::json::object(),
                      bool higher_is_better = true) {
  nlohmann::json j = {
      {"schema", "shrink.result/1"},
      {"name", name},
      {"baseline", baseline},
      {"model", "/m/" + name},
      {"stages", nlohmann::json::array()},
      {"task", "classify"},
      {"quality",
       {{"name", higher_is_better ? "accuracy" : "ppl"}, {"value", quality}, {"higher_is_better", higher_is_better}}},
      {"bench",
       {{"latency_ms", {{"p50", p99 / 2}, {"p90", p99}, {"p95", p99}, {"p99", p99}, {"max", p99}}},
        {"throughput_per_s", 1000 / p99}}},
      {"size_bytes", size}};
  j.merge_patch(extra);
  return j;
}

// A configuration that failed: only what such a row must carry.
nlohmann::json failed_record(const std::string& name, const std::string& error) {
  return {{"schema", "shrink.result/1"},       {"name", name},       {"baseline", false}, {"model", "/m/" + name},
          {"stages", nlohmann::json::array()}, {"task", "classify"}, {"error", error}};
}

std::filesystem::path write_results(const std::vector<nlohmann::json>& recs, const std::string& tag = "report") {
  auto dir = temp_dir(tag);
  std::string text;
  for (const auto& j : recs) {
    if (!j.is_null()) text += j.dump();  // null: a blank line
    text += '\n';
  }
  write_bytes(dir / "results.jsonl", text);
  return dir;
}

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + needle.size())) ++n;
  return n;
}

TEST(Pareto, HandMadeRowsWithTiesEqualPointsAndErrors) {
  // a and d are equal: neither dominates the other, both stay. c is dominated by a (better quality, same rest) and
  // by b (faster, same rest). e is the smallest. f (error) and g (excluded, though best everywhere) never count.
  std::vector<ParetoPoint> p = {
      {0.90, true, 10, 100, false},  // a
      {0.85, true, 5, 100, false},   // b
      {0.85, true, 10, 100, false},  // c
      {0.90, true, 10, 100, false},  // d
      {0.80, true, 20, 10, false},   // e
      {0.80, true, 20, 10, true},    // f
      {0.99, true, 1, 1, true},      // g
  };
  EXPECT_EQ(pareto_frontier(p), (std::vector<bool>{true, true, false, true, true, false, false}));
  EXPECT_TRUE(dominates(p[0], p[2]));
  EXPECT_TRUE(dominates(p[1], p[2]));
  EXPECT_FALSE(dominates(p[0], p[3]));
  EXPECT_FALSE(dominates(p[3], p[0]));
  EXPECT_FALSE(dominates(p[6], p[4]));  // excluded points dominate nothing
  // Lower-is-better quality (perplexity): 10 beats 12 at equal latency and size.
  std::vector<ParetoPoint> lm = {{10, false, 5, 5, false}, {12, false, 5, 5, false}, {12, false, 4, 5, false}};
  EXPECT_EQ(pareto_frontier(lm), (std::vector<bool>{true, false, true}));
}

TEST(Results, ReadMarksFrontierAndAcceptsErrorRows) {
  // A blank line after the first record is skipped, and line numbers keep counting.
  auto dir = write_results({record("baseline", 0.90, 10, 400, true), nlohmann::json(), record("int8", 0.89, 5, 100),
                            record("slow", 0.88, 12, 400), failed_record("broken", "GPTQ: oops")});
  std::vector<ResultRow> rows = read_results(dir / "results.jsonl");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[1].line, 3);
  mark_pareto(rows);
  EXPECT_TRUE(rows[0].pareto);   // best quality
  EXPECT_TRUE(rows[1].pareto);   // fastest, smallest
  EXPECT_FALSE(rows[2].pareto);  // dominated by the baseline
  EXPECT_FALSE(rows[3].pareto);
  EXPECT_EQ(rows[3].error, "GPTQ: oops");
  EXPECT_EQ(rows[1].record["pareto"], true);
}

TEST(Results, ErrorsNameFileLineAndField) {
  const nlohmann::json good = record("a");
  auto err = [&](const std::string& second_line) {
    auto dir = temp_dir("bad-results");
    write_bytes(dir / "results.jsonl", good.dump() + "\n" + second_line + "\n");
    return error_of([&] { read_results(dir / "results.jsonl"); });
  };
  // A valid record "b" changed by `edit`, as line 2.
  auto err_after = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = record("b");
    edit(j);
    return err(j.dump());
  };
  std::string e = err("{not json");
  EXPECT_NE(e.find("results.jsonl:2: not valid JSON"), std::string::npos) << e;
  e = err_after([](nlohmann::json& j) { j["quality"].erase("value"); });
  EXPECT_NE(e.find(":2: field `quality.value` is missing"), std::string::npos) << e;
  e = err_after([](nlohmann::json& j) { j["size_bytes"] = "12 MB"; });
  EXPECT_NE(e.find(":2: field `size_bytes`: expected a non-negative integer, found string"), std::string::npos) << e;
  e = err_after([](nlohmann::json& j) { j["bench"]["latency_ms"].erase("p99"); });
  EXPECT_NE(e.find("`bench.latency_ms.p99`"), std::string::npos) << e;
  e = err_after([](nlohmann::json& j) { j["schema"] = "shrink.result/9"; });
  EXPECT_NE(e.find("expected \"shrink.result/1\", found \"shrink.result/9\""), std::string::npos) << e;
  e = err(record("a").dump());
  EXPECT_NE(e.find(":2: field `name`: \"a\" is already used on line 1"), std::string::npos) << e;
  e = err("[1, 2]");
  EXPECT_NE(e.find(":2: expected a JSON object, found array"), std::string::npos) << e;
  auto dir = write_results({record("a", 0.9, 1, 1, true), record("b", 0.9, 1, 1, true)});
  e = error_of([&] { read_results(dir / "results.jsonl"); });
  EXPECT_NE(e.find(":2: field `baseline`: a second baseline (the first is on line 1)"), std::string::npos) << e;
  e = error_of([&] { read_results(dir / "missing.jsonl"); });
  EXPECT_NE(e.find("missing.jsonl: no such file"), std::string::npos) << e;
}

TEST(Report, CsvHasTheFixedColumnsAndParsesBack) {
  const nlohmann::json extra = {{"eval", {{"kld", 0.0123}, {"top1_agreement", 0.97}}},
                                {"stages",
                                 {{{"kind", "prune"}, {"seconds", 12.5}, {"peak_rss_bytes", 3000000}},
                                  {{"kind", "quantize"}, {"seconds", 2.5}, {"peak_rss_bytes", 5000000}}}},
                                {"bench",
                                 {{"energy", {{"joules_per_inference", 0.25}, {"estimated", true}}},
                                  {"cost", {{"usd_per_1k", 0.0001}}},
                                  {"concurrency", {{{"throughput_per_s", 400.0}}, {{"throughput_per_s", 900.0}}}}}}};
  auto dir = write_results(
      {record("baseline", 0.9, 10, 4000000, true), record("w4, \"g32\"", 0.8765, 7.5, 2500000, false, extra)});
  write_report(dir);
  // Python's csv module reads it back: header, then per row the cells keyed by header.
  const std::string py =
      "import csv,json,sys; rows=list(csv.reader(open(sys.argv[1], newline=''))); "
      "print(json.dumps({'header': rows[0], 'rows': [dict(zip(rows[0], r)) for r in rows[1:]], "
      "'widths': [len(r) for r in rows]}))";
  const std::string cmd = "/usr/bin/python3 -c \"" + py + "\" " + (dir / "report.csv").string();
  FILE* f = popen(cmd.c_str(), "r");
  ASSERT_NE(f, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  ASSERT_EQ(pclose(f), 0) << out;
  const nlohmann::json csv = nlohmann::json::parse(out);
  const std::vector<std::string> expected = {"name",
                                             "pareto",
                                             "baseline",
                                             "task",
                                             "stages",
                                             "quality_name",
                                             "quality",
                                             "kld",
                                             "top1_agreement",
                                             "p50_ms",
                                             "p99_ms",
                                             "throughput_per_s",
                                             "size_bytes",
                                             "joules_per_inference",
                                             "energy_estimated",
                                             "usd_per_1k",
                                             "compress_seconds",
                                             "compress_peak_rss_bytes",
                                             "error"};
  EXPECT_EQ(csv["header"].get<std::vector<std::string>>(), expected);
  EXPECT_EQ(report_columns(), expected);
  for (const auto& w : csv["widths"]) EXPECT_EQ(w, expected.size());
  const auto& row = csv["rows"][1];
  EXPECT_EQ(row["name"], "w4, \"g32\"");  // the comma and quotes survived quoting
  EXPECT_EQ(row["stages"], "prune+quantize");
  EXPECT_EQ(row["quality"], "0.8765");
  EXPECT_EQ(row["kld"], "0.0123");
  EXPECT_EQ(row["p99_ms"], "7.5");
  EXPECT_EQ(row["throughput_per_s"], "900.0");  // the best of the bench loop (133.3) and the concurrency levels
  EXPECT_EQ(row["size_bytes"], "2500000");
  EXPECT_EQ(row["energy_estimated"], "true");
  EXPECT_EQ(row["compress_seconds"], "15.0");            // 12.5 + 2.5
  EXPECT_EQ(row["compress_peak_rss_bytes"], "5000000");  // the larger stage
  EXPECT_EQ(row["error"], "");
  EXPECT_EQ(csv["rows"][0]["kld"], "");  // not measured: empty, not 0
  EXPECT_EQ(csv["rows"][0]["pareto"], "true");
}

TEST(Report, HostileNamesAreEscaped) {
  const std::string evil = "<script>alert(\"x\")</script>&'<img src=x onerror=1>";
  const nlohmann::json extra = {
      {"size_breakdown", {{"<b>w8</b>", 60}, {"fp32", 40}}},
      {"eval", {{"segments", {{"<i>len</i>", {{{"segment", "<=12 & <u>"}, {"accuracy", 0.7}}}}}}}}};
  auto dir = write_results({record("baseline", 0.9, 10, 400, true), record(evil, 0.8, 5, 100, false, extra),
                            failed_record("bad<svg>", "<script>boom</script>")});
  write_report(dir);
  const std::string html = read_text_file(dir / "report.html"), md = read_text_file(dir / "report.md");
  for (const std::string& doc : {html, md}) {
    EXPECT_EQ(doc.find("<script"), std::string::npos);
    EXPECT_EQ(doc.find("<img"), std::string::npos);
    EXPECT_EQ(doc.find("<b>w8"), std::string::npos);
    EXPECT_EQ(doc.find("<i>len"), std::string::npos);
  }
  EXPECT_NE(html.find("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"), std::string::npos);
  EXPECT_NE(html.find("&lt;=12 &amp; &lt;u&gt;"), std::string::npos);
  EXPECT_EQ(html_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
  // Self-contained: nothing fetched from anywhere.
  for (const char* ext : {"http://", "https://", "<link", "@import", "src=\"", "url("})
    EXPECT_EQ(html.find(ext), std::string::npos) << ext;
}

TEST(Report, NiceAxisTicksByHand) {
  // 0..93.7 with ~5 ticks: range rounds up to 100, step 100/4 = 25 -> nice 20: 0, 20, ..., 100.
  NiceAxis a = nice_axis(0, 93.7, 5);
  EXPECT_EQ(a.ticks, (std::vector<double>{0, 20, 40, 60, 80, 100}));
  EXPECT_EQ(a.decimals, 0);
  // 0.81..0.87: range 0.06 -> 0.1, step 0.025 -> 0.02; from floor(40.5) x 0.02 to ceil(43.5) x 0.02.
  a = nice_axis(0.81, 0.87, 5);
  ASSERT_EQ(a.ticks.size(), 5u);
  EXPECT_NEAR(a.ticks.front(), 0.80, 1e-12);
  EXPECT_NEAR(a.ticks.back(), 0.88, 1e-12);
  EXPECT_NEAR(a.step, 0.02, 1e-15);
  EXPECT_EQ(a.decimals, 2);
  EXPECT_EQ(tick_label(a.ticks[1], a.decimals), "0.82");
  // One value: a window around it; never empty.
  a = nice_axis(5, 5, 5);
  EXPECT_LE(a.lo, 4.5);
  EXPECT_GE(a.hi, 5.5);
  EXPECT_EQ(tick_label(-0.0001, 2), "0.00");
  EXPECT_EQ(log_ticks(0.3, 30), (std::vector<double>{0.5, 1, 2, 5, 10, 20}));
}

TEST(Report, HeadlessChromiumRendersThePlots) {
  // Three measured variants (with histograms, one segment dimension, size breakdowns) and one failed.
  auto hist = [](double ms) { return nlohmann::json::array({{ms, 5}, {ms * 1.02, 20}, {ms * 1.5, 2}}); };
  auto seg = [](double a, double b) {
    return nlohmann::json{{"length", {{{"segment", "<=12"}, {"accuracy", a}}, {{"segment", ">12"}, {"accuracy", b}}}}};
  };
  std::vector<nlohmann::json> recs;
  const nlohmann::json base = {{"bench", {{"latency_histogram", hist(18)}}},
                               {"eval", {{"segments", seg(0.93, 0.89)}}},
                               {"size_breakdown", {{"fp32", 4000000}}}};
  const nlohmann::json w8 = {{"bench", {{"latency_histogram", hist(7)}}},
                             {"eval", {{"segments", seg(0.92, 0.88)}, {"kld", 0.01}}},
                             {"size_breakdown", {{"w8", 1000000}, {"fp32", 100000}}}};
  const nlohmann::json w4 = {{"bench", {{"latency_histogram", hist(8)}}},
                             {"eval", {{"segments", seg(0.88, 0.84)}}},
                             {"size_breakdown", {{"w4a16-g32", 600000}, {"fp32", 100000}}}};
  auto dir =
      write_results({record("baseline", 0.91, 20, 4000000, true, base), record("w8a8", 0.90, 8, 1100000, false, w8),
                     record("w4a16-g32", 0.86, 9, 700000, false, w4), failed_record("awq", "failed")},
                    "chromium");
  const ReportPaths p = write_report(dir);
  auto profile = temp_dir("chromium-profile");
  const std::string cmd =
      "timeout 120 chromium --headless --disable-gpu --no-sandbox --user-data-dir=" + profile.string() +
      " --dump-dom file://" + p.html.string() + " 2>/dev/null";
  FILE* f = popen(cmd.c_str(), "r");
  ASSERT_NE(f, nullptr);
  std::string dom;
  char buf[65536];
  while (size_t n = fread(buf, 1, sizeof buf, f)) dom.append(buf, n);
  const int status = pclose(f);
  ASSERT_EQ(status, 0) << "chromium failed or is missing (scripts/install-deps.sh installs it); exit " << status;
  ASSERT_NE(dom.find("</html>"), std::string::npos) << dom.substr(0, 400);
  // The scatter: one circle per measured (non-error) row. By hand all three are on the frontier: the baseline has
  // the best quality, w8a8 the lowest p99, w4a16-g32 the smallest size (w8a8 beats it on quality and p99 only).
  const size_t s0 = dom.find("id=\"pareto-scatter\""), s1 = dom.find("</svg>", s0);
  ASSERT_NE(s0, std::string::npos);
  const std::string scatter = dom.substr(s0, s1 - s0);
  EXPECT_EQ(count(scatter, "<circle"), 3u);
  EXPECT_EQ(count(scatter, "class=\"point frontier\""), 3u);
  EXPECT_EQ(count(scatter, "<polyline"), 1u);
  EXPECT_NE(scatter.find(">w4a16-g32</text>"), std::string::npos);
  // A latency histogram per measured row, one segment chart (length), the size breakdown with 5 stacked parts.
  EXPECT_EQ(count(dom, "class=\"plot latency-hist\""), 3u);
  EXPECT_EQ(count(dom, "class=\"plot segment-bars\""), 1u);
  const size_t b0 = dom.find("id=\"size-breakdown\""), b1 = dom.find("</svg>", b0);
  ASSERT_NE(b0, std::string::npos);
  EXPECT_EQ(count(dom.substr(b0, b1 - b0), "<rect"), 5u);
  // The table lists all four rows, the failed one included.
  EXPECT_EQ(count(dom, "<tr class=\"frontier\">"), 3u);
  EXPECT_EQ(count(dom, "<tr class=\"error\">"), 1u);
}

TEST(ReportCli, WritesFilesPrintsPathsAndFailsCleanly) {
  auto dir = write_results({record("baseline", 0.9, 10, 400, true), record("small", 0.8, 10, 100)}, "cli");
  auto r = run_cli("report " + dir.string() + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  for (const char* k : {"markdown", "json", "csv", "html"})
    EXPECT_TRUE(std::filesystem::exists(j[k].get<std::string>())) << k;
  EXPECT_EQ(j["frontier"], (nlohmann::json{"baseline", "small"}));
  const nlohmann::json rep = nlohmann::json::parse(read_text_file(dir / "report.json"));
  EXPECT_EQ(rep["rows"].size(), 2u);
  EXPECT_EQ(rep["table"][1]["size_bytes"], 100);
  // A broken line: one error naming the line, and no report file written.
  auto bad = temp_dir("cli-bad");
  write_bytes(bad / "results.jsonl", record("a").dump() + "\n{\"schema\": \"shrink.result/1\"}\n");
  r = run_cli("report " + bad.string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("results.jsonl:2: field `name` is missing"), std::string::npos) << r.err;
  for (const char* f : {"report.md", "report.json", "report.csv", "report.html"})
    EXPECT_FALSE(std::filesystem::exists(bad / f)) << f;
  r = run_cli("report " + (bad / "nope").string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("not a directory"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace shrink
