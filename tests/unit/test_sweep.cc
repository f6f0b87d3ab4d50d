// `shrink sweep`: a 4-configuration space on the stories260K model (quantization only, so each configuration takes
// seconds) under `mpirun -n 2` (every id exactly once in the merged file, baseline first, rank files gone), then
// single-rank resume (nothing rerun) and a failing configuration recorded as an error row while the others finish.
#include <gtest/gtest.h>
#include <shrink/compress/pipeline.h>
#include <shrink/core/mmap.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>

#include "unit/test_util.h"

namespace shrink {
namespace {

namespace fs = std::filesystem;

std::string space(const std::string& extra_config = "") {
  return "base:\n"
         "  task: lm\n"
         "  eval: {max-bytes: 4096, max-tokens: 512, ctx: 256}\n"
         "  bench: {prompt-len: 8, gen: 8, iters: 3, warmup: 1}\n"
         "configs:\n" +
         extra_config +
         "  - id: bf16\n"
         "    stages: [{kind: quantize, scheme: bf16}]\n"
         "grids:\n"
         "  - stages: [{kind: quantize}]\n"
         "    vary:\n"
         "      quantize.scheme: [w8a16, w8a8, w4a16-g32]\n";
}

std::string sweep_args(const fs::path& space_file, const fs::path& out) {
  return "sweep " + testing::fixture("stories260K/stories260K.bin").string() + " --tokenizer " +
         testing::fixture("stories260K/tok512.bin").string() + " --text " +
         testing::fixture("text/tinyshakespeare.txt").string() + " --space " + space_file.string() + " --out " +
         out.string();
}

std::vector<std::string> names(const std::vector<nlohmann::json>& rows) {
  std::vector<std::string> n;
  for (const auto& r : rows) n.push_back(r["name"].get<std::string>());
  return n;
}

TEST(Sweep, MpirunTwoRanksMergesEveryIdOnce) {
  const fs::path dir = testing::temp_dir("sweep-mpi"), space_file = dir / "space.yaml", out = dir / "out";
  testing::write_bytes(space_file, space());
  const std::string cmd = "mpirun --allow-run-as-root --oversubscribe -n 2 " + std::string(SHRINK_CLI_PATH) + " " +
                          sweep_args(space_file, out) + " 2>" + (dir / "err.txt").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_text_file(dir / "err.txt");
  const auto rows = read_jsonl(out / "results.jsonl");
  const auto n = names(rows);
  ASSERT_EQ(n.size(), 5u) << read_text_file(dir / "err.txt");
  EXPECT_EQ(n[0], "baseline");
  EXPECT_EQ(std::set<std::string>(n.begin(), n.end()),
            (std::set<std::string>{"baseline", "bf16", "quantize-w8a16", "quantize-w8a8", "quantize-w4a16-g32"}));
  EXPECT_FALSE(fs::exists(out / "results-rank-0.jsonl"));
  EXPECT_FALSE(fs::exists(out / "results-rank-1.jsonl"));
  // Both ranks worked: rank r ran configurations i % 2 == r (bf16 is 0, quantize-w8a16 is 1).
  const std::string err = read_text_file(dir / "err.txt");
  EXPECT_HAS(err, "[shrink sweep rank 0] bf16 (1/4): running");
  EXPECT_HAS(err, "[shrink sweep rank 1] quantize-w8a16 (2/4): running");
  for (const auto& r : rows) {
    EXPECT_FALSE(r.contains("error")) << r["name"] << ": " << r.value("error", "");
    EXPECT_EQ(r["quality"]["name"], "ppl");
    EXPECT_GT(r["quality"]["value"].get<double>(), 1.0);
  }
  // Against the baseline, 4-bit weights disagree more than 8-bit ones.
  std::map<std::string, double> kld;
  for (const auto& r : rows)
    if (r["name"] != "baseline") kld[r["name"]] = r["eval"]["kld"].get<double>();
  EXPECT_GT(kld["quantize-w4a16-g32"], kld["quantize-w8a16"]);
}

TEST(Sweep, SingleRankResumesAndRecordsFailures) {
  const fs::path dir = testing::temp_dir("sweep-one"), space_file = dir / "space.yaml", out = dir / "out";
  testing::write_bytes(space_file, space("  - id: broken\n    stages: [{kind: quantize, scheme: w3a99}]\n"));
  const auto r1 = testing::run_cli(sweep_args(space_file, out) + " --json");
  ASSERT_EQ(r1.code, 0) << r1.err;
  auto rows = read_jsonl(out / "results.jsonl");
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(names(rows), (std::vector<std::string>{"baseline", "broken", "bf16", "quantize-w8a16", "quantize-w8a8",
                                                   "quantize-w4a16-g32"}));
  EXPECT_HAS(rows[1].value("error", std::string()), "w3a99");
  EXPECT_FALSE(rows[2].contains("error"));
  // A restart skips every id already written and leaves the file as it was.
  const std::string before = read_text_file(out / "results.jsonl");
  const auto r2 = testing::run_cli(sweep_args(space_file, out));
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_HAS(r2.err, "quantize-w4a16-g32 (5/5): skipped, already in the results");
  EXPECT_EQ(r2.err.find(": running"), std::string::npos) << r2.err;
  EXPECT_EQ(read_text_file(out / "results.jsonl"), before);
}

// A sweep into a DIR that holds rows of another model (here: the same file rewritten, so its fingerprint changes) must
// measure everything again and keep no row of the old one: the demo once showed a stale baseline this way.
TEST(Sweep, RowsOfAnotherModelAreMeasuredAgain) {
  const fs::path dir = testing::temp_dir("sweep-stale"), space_file = dir / "space.yaml", out = dir / "out",
                 model = dir / "model.bin";
  fs::copy_file(testing::fixture("stories260K/stories260K.bin"), model);
  testing::write_bytes(space_file,
                       "base:\n  task: lm\n  eval: {max-bytes: 2048, max-tokens: 256, ctx: 128}\n"
                       "  bench: {prompt-len: 4, gen: 4, iters: 2, warmup: 1}\n"
                       "configs:\n  - id: bf16\n    stages: [{kind: quantize, scheme: bf16}]\n");
  const std::string args = "sweep " + model.string() + " --tokenizer " +
                           testing::fixture("stories260K/tok512.bin").string() + " --text " +
                           testing::fixture("text/tinyshakespeare.txt").string() + " --space " + space_file.string() +
                           " --out " + out.string();
  const auto r1 = testing::run_cli(args);
  ASSERT_EQ(r1.code, 0) << r1.err;
  const auto first = read_jsonl(out / "results.jsonl");
  ASSERT_EQ(names(first), (std::vector<std::string>{"baseline", "bf16"}));
  ASSERT_TRUE(first[0].contains("key") && first[1].contains("key"));
  EXPECT_NE(first[0]["key"], first[1]["key"]);

  // Same path, new file: a later modification time is enough to make it another model.
  fs::last_write_time(model, fs::last_write_time(model) + std::chrono::seconds(5));
  const auto r2 = testing::run_cli(args);
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_HAS(r2.err, "came from another model or other settings: measuring them again");
  EXPECT_HAS(r2.err, "baseline: measuring");
  EXPECT_HAS(r2.err, "bf16 (1/1): running");
  EXPECT_HAS(r2.err, "stage 1/1 01-quantize: running");  // the stage marker is not reused either
  const auto second = read_jsonl(out / "results.jsonl");
  ASSERT_EQ(names(second), (std::vector<std::string>{"baseline", "bf16"}));
  EXPECT_NE(second[0]["key"], first[0]["key"]);
  EXPECT_NE(second[1]["key"], first[1]["key"]);

  // And unchanged, nothing runs.
  const auto r3 = testing::run_cli(args);
  ASSERT_EQ(r3.code, 0) << r3.err;
  EXPECT_EQ(r3.err.find(": running"), std::string::npos) << r3.err;
  EXPECT_EQ(r3.err.find("measuring them again"), std::string::npos) << r3.err;
}

}  // namespace
}  // namespace shrink
