// Recipes: parsing and validation against a hand-written option table (values, types and line numbers counted by
// hand), sweep-space expansion, every file in recipes/ through the real CLI, and a tiny recipe end to end (results
// rows checked against separate `shrink eval/info` runs and the files on disk, resume, a bad recipe's message).
#include <gtest/gtest.h>
#include <shrink/compress/pipeline.h>
#include <shrink/compress/recipe.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "unit/test_util.h"

namespace shrink {
namespace {

namespace fs = std::filesystem;
using testing::fixture;
using testing::run_cli;
using testing::temp_dir;

CommandTable table() {
  const FlagSpec text{FlagType::Text, false, false}, num{FlagType::Number, false, false},
      integer{FlagType::Int, false, false}, flag{FlagType::Bool, false, false};
  CommandTable t;
  t["prune"].flags = {{"method", text},     {"sparsity", num}, {"steps", integer},
                      {"heads-only", flag}, {"data", text},    {"out", {FlagType::Text, false, true}},
                      {"threads", integer}};
  t["quantize"].flags = {{"scheme", {FlagType::Text, false, true}},
                         {"method", text},
                         {"calib", text},
                         {"skip", {FlagType::Text, true, false}},
                         {"out", text}};
  t["distill"].flags = {{"student-layers", {FlagType::Int, false, true}},
                        {"data", {FlagType::Text, false, true}},
                        {"teacher", {FlagType::Text, false, true}},
                        {"epochs", integer}};
  for (const char* k : {"lowrank", "qat", "train"}) t[k].flags = {{"epochs", integer}};
  t["eval"].flags = {{"limit", integer}, {"data", text}, {"stress", flag}};
  t["bench"].flags = {{"iters", integer}, {"batch", integer}};
  return t;
}

std::string error_of(const std::string& yaml) {
  try {
    parse_recipe(yaml, "r.yaml", table());
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Recipe, ParsesStagesWithTypesAndLines) {
  const std::string yaml =
      "# comment\n"                        // 1
      "task: classify\n"                   // 2
      "data: train.tsv\n"                  // 3
      "eval: {limit: 200, stress: yes}\n"  // 4
      "stages:\n"                          // 5
      "  - kind: prune\n"                  // 6
      "    method: structured\n"           // 7
      "    sparsity: 0.3\n"                // 8
      "    steps: 2\n"                     // 9
      "    heads-only: true\n"             // 10
      "  - kind: quantize\n"               // 11
      "    scheme: w8a8\n"                 // 12
      "    skip: [classifier, pooler]\n";  // 13
  const Recipe r = parse_recipe(yaml, "r.yaml", table());
  EXPECT_EQ(r.in.task, "classify");
  EXPECT_EQ(r.in.data, "train.tsv");
  EXPECT_EQ(r.eval, nlohmann::json({{"limit", 200}, {"stress", true}}));
  ASSERT_EQ(r.stages.size(), 2u);
  EXPECT_EQ(r.stages[0].kind, "prune");
  EXPECT_EQ(r.stages[0].line, 6);
  EXPECT_EQ(r.stages[1].line, 11);
  EXPECT_EQ(r.stages[0].params,
            nlohmann::json({{"method", "structured"}, {"sparsity", 0.3}, {"steps", 2}, {"heads-only", true}}));
  EXPECT_TRUE(r.stages[0].params["steps"].is_number_integer());
  EXPECT_EQ(r.stages[1].params["skip"], nlohmann::json({"classifier", "pooler"}));
  // Flags in key order (nlohmann objects are sorted), booleans bare, lists repeated, numbers as written.
  EXPECT_EQ(flag_args(r.stages[0].params),
            (std::vector<std::string>{"--heads-only", "--method", "structured", "--sparsity", "0.3", "--steps", "2"}));
  EXPECT_EQ(flag_args(r.stages[1].params),
            (std::vector<std::string>{"--scheme", "w8a8", "--skip", "classifier", "--skip", "pooler"}));
  EXPECT_EQ(flag_args({{"stress", false}}), std::vector<std::string>{});
}

TEST(Recipe, InputsReachTheStagesThatTakeThem) {
  const Recipe r = parse_recipe(
      "task: classify\ndata: d.tsv\nstages:\n  - {kind: distill, student-layers: 2}\n"
      "  - {kind: quantize, scheme: w8a8-static}\n  - {kind: quantize, scheme: w8a8}\n"
      "  - {kind: prune, data: other.tsv}\n",
      "r.yaml", table());
  const CommandTable t = table();
  EXPECT_EQ(resolved_stage_params(r, r.stages[0], t.at("distill")),
            nlohmann::json({{"student-layers", 2}, {"data", "d.tsv"}}));
  // Calibrated quantization gets the data as --calib; dynamic does not.
  EXPECT_EQ(resolved_stage_params(r, r.stages[1], t.at("quantize"))["calib"], "d.tsv");
  EXPECT_FALSE(resolved_stage_params(r, r.stages[2], t.at("quantize")).contains("calib"));
  // A stage's own data wins over the recipe's.
  EXPECT_EQ(resolved_stage_params(r, r.stages[3], t.at("prune"))["data"], "other.tsv");
  // Command-line inputs override the recipe's.
  const Recipe o = parse_recipe("task: classify\ndata: d.tsv\nstages: [{kind: prune}]\n", "r.yaml", table(),
                                RecipeInputs{"", "cli.tsv", "", "", ""});
  EXPECT_EQ(o.in.data, "cli.tsv");
}

TEST(Recipe, ErrorsNameFileLineAndKey) {
  const std::string head = "task: classify\ndata: d.tsv\nstages:\n";  // lines 1-3
  std::string e = error_of(head + "  - kind: prune\n    sparsty: 0.5\n");
  EXPECT_HAS(e, "r.yaml:5:");
  EXPECT_HAS(e, "unknown key `sparsty` for `prune`");
  EXPECT_HAS(e, "allowed keys: data, heads-only, method, sparsity, steps");  // out/threads are the pipeline's
  e = error_of(head + "  - kind: prune\n  - kind: prunee\n");
  EXPECT_HAS(e, "r.yaml:5:");
  EXPECT_HAS(e, "unknown kind `prunee`");
  EXPECT_HAS(e, "distill, prune, lowrank, quantize, qat, train");
  e = error_of(head + "  - kind: distill\n    student-layers: two\n");
  EXPECT_HAS(e, "r.yaml:5:");
  EXPECT_HAS(e, "`student-layers` expects an integer, found `two`");
  e = error_of(head + "  - kind: prune\n    sparsity: half\n");
  EXPECT_HAS(e, "expects a number, found `half`");
  e = error_of(head + "  - kind: prune\n    heads-only: maybe\n");
  EXPECT_HAS(e, "expects true or false, found `maybe`");
  e = error_of(head + "  - kind: prune\n    method: [a, b]\n");
  EXPECT_HAS(e, "r.yaml:5:");
  EXPECT_HAS(e, "takes one value");
  e = error_of(head + "  - kind: prune\n    out: x\n");
  EXPECT_HAS(e, "`out` of `prune` is set by the pipeline");
  e = error_of(head + "  - kind: quantize\n    method: rtn\n");  // scheme is required
  EXPECT_HAS(e, "r.yaml:4:");
  EXPECT_HAS(e, "needs `scheme`");
  e = error_of("task: classify\nstages:\n  - kind: prune\n");
  EXPECT_HAS(e, "needs `data`");
  e = error_of("task: classify\ndata: d\neval:\n  limit: 1\n  data: x\nstages: [{kind: prune}]\n");
  EXPECT_HAS(e, "r.yaml:5:");
  EXPECT_HAS(e, "comes from the recipe's top level");
  e = error_of("task: clasify\ndata: d\nstages: [{kind: prune}]\n");
  EXPECT_HAS(e, "r.yaml:1:");
  EXPECT_HAS(e, "classify, image, lm");
  e = error_of("task: classify\ndata: d\nstage: [{kind: prune}]\n");
  EXPECT_HAS(e, "r.yaml:3:");
  EXPECT_HAS(e, "unknown key `stage`");
  e = error_of("task: classify\ndata: d\nstages:\n  - kind: prune\n   method: x\n");  // bad indentation
  EXPECT_HAS(e, "r.yaml:5:");
  EXPECT_HAS(e, "not valid YAML");
  e = error_of("task: classify\ndata: d\nstages: []\n");
  EXPECT_HAS(e, "non-empty list");
}

TEST(SweepSpace, GridIsTheCartesianProductLastKeyFastest) {
  const std::string yaml =
      "base: {task: classify, data: d.tsv}\n"
      "configs:\n"
      "  - id: hand\n"
      "    stages: [{kind: quantize, scheme: w8a8}]\n"
      "grids:\n"
      "  - stages: [{kind: prune, method: structured}, {kind: quantize}]\n"
      "    vary:\n"
      "      prune.sparsity: [~, 0.3, 0.5]\n"
      "      quantize.scheme: [w8a8, w4a16-g32]\n";
  const auto configs = parse_sweep_space(yaml, "s.yaml", table());
  std::vector<std::string> ids;
  for (const auto& c : configs) ids.push_back(c.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"hand", "quantize-w8a8", "quantize-w4a16-g32", "prune-0.3+quantize-w8a8",
                                           "prune-0.3+quantize-w4a16-g32", "prune-0.5+quantize-w8a8",
                                           "prune-0.5+quantize-w4a16-g32"}));
  ASSERT_EQ(configs[5].recipe.stages.size(), 2u);
  EXPECT_EQ(configs[5].recipe.stages[0].params, nlohmann::json({{"method", "structured"}, {"sparsity", 0.5}}));
  EXPECT_EQ(configs[1].recipe.stages.size(), 1u);  // the null sparsity dropped the prune stage
  EXPECT_EQ(configs[3].recipe.in.data, "d.tsv");
}

TEST(SweepSpace, Errors) {
  auto err = [](const std::string& yaml) {
    try {
      parse_sweep_space(yaml, "s.yaml", table());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const std::string base = "base: {task: classify, data: d.tsv}\n";  // line 1
  std::string e = err(base + "grids:\n  - stages: [{kind: quantize}]\n    vary:\n      quantize.shceme: [w8a8]\n");
  EXPECT_HAS(e, "s.yaml:5:");
  EXPECT_HAS(e, "`shceme` is not a key of `quantize`");
  e = err(base + "grids:\n  - stages: [{kind: quantize}]\n    vary:\n      prune.sparsity: [0.5]\n");
  EXPECT_HAS(e, "the grid has no `prune` stage");
  e = err(base +
          "configs:\n  - id: a\n    stages: [{kind: quantize, scheme: w8a8}]\n  - id: a\n"
          "    stages: [{kind: quantize, scheme: w8a16}]\n");
  EXPECT_HAS(e, "s.yaml:5:");
  EXPECT_HAS(e, "`a` already used at line 3");
  e = err(base + "configs:\n  - id: a/b\n    stages: [{kind: quantize, scheme: w8a8}]\n");
  EXPECT_HAS(e, "s.yaml:3:");
  e = err(base + "grids:\n  - stages: [{kind: quantize}]\n    vary:\n      quantize.scheme: [~]\n");
  EXPECT_HAS(e, "no configurations");
  e = err("base: {task: classify}\nconfigs:\n  - id: a\n    stages: [{kind: prune}]\n");
  EXPECT_HAS(e, "configuration `a`");
  EXPECT_HAS(e, "needs `data`");
}

// ---- through the real CLI (its own option table) ----

const std::string kSst2 = fixture("sst2/train.tsv").string();

TEST(RecipeFiles, EveryRecipeValidatesAgainstTheCli) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(fs::path(SHRINK_SOURCE_DIR) / "recipes")) {
    if (e.path().extension() != ".yaml" || e.path().filename().string().rfind("sweep-", 0) == 0) continue;
    ++n;
    const auto r = run_cli("compress model-unused --recipe " + e.path().string() + " --data " + kSst2 + " --text " +
                           kSst2 + " --check --json");
    ASSERT_EQ(r.code, 0) << e.path() << "\n" << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_GE(j["stages"].size(), 1u) << e.path();
  }
  EXPECT_GE(n, 4);  // fastest, smallest, llm-int4, bert-int8-static
}

TEST(RecipeFiles, DefaultSweepSpaceHasAtLeast15Configurations) {
  const auto r = run_cli("sweep model-unused --space " + std::string(SHRINK_SOURCE_DIR) +
                         "/recipes/sweep-default.yaml --data " + kSst2 + " --list --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GE(j["configs"].size(), 15u);
  std::set<std::string> kinds;
  for (const auto& id : j["configs"]) {
    const std::string s = id.get<std::string>();
    for (const char* k : {"quantize", "prune", "lowrank", "distill", "qat"})
      if (s.find(k) != std::string::npos) kinds.insert(k);
  }
  EXPECT_EQ(kinds.size(), 5u);
}

// A tiny classifier trained by shrink (a few steps), shared by the end-to-end tests.
const fs::path& tiny_classifier() {
  static const fs::path dir = [] {
    const fs::path d = temp_dir("recipe-model") / "clf";
    const auto r = run_cli("train --task classify --data " + kSst2 +
                           " --preset bert-tiny --vocab-size 600 --limit 400 --epochs 1 --max-length 24 --batch 32 "
                           "--seed 1 --quiet --out " +
                           d.string());
    EXPECT_EQ(r.code, 0) << r.err;
    return d;
  }();
  return dir;
}

std::string tiny_recipe(double sparsity) {
  return fmt::format(
      "task: classify\n"
      "eval: {{limit: 120, max-length: 24}}\n"
      "bench: {{iters: 5, warmup: 1, batch: 1, seq: 16}}\n"
      "stages:\n"
      "  - kind: prune\n"
      "    method: structured\n"
      "    sparsity: {}\n"
      "    epochs: 0\n"
      "    limit: 400\n"
      "    max-length: 24\n"
      "  - kind: quantize\n"
      "    scheme: w8a8\n",
      sparsity);
}

uint64_t dir_bytes(const fs::path& d) {
  uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(d))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

TEST(Compress, TinyRecipeEndToEndAndResume) {
  const fs::path model = tiny_classifier();
  const fs::path dir = temp_dir("recipe-run"), out = dir / "out", recipe = dir / "r.yaml";
  testing::write_bytes(recipe, tiny_recipe(0.3));
  const std::string cmd = "compress " + model.string() + " --recipe " + recipe.string() + " --data " + kSst2 +
                          " --threads 1 --out " + out.string();
  const auto r1 = run_cli(cmd + " --json");
  ASSERT_EQ(r1.code, 0) << r1.err;
  const auto s1 = nlohmann::json::parse(r1.out);
  EXPECT_EQ(s1["stages_run"], 2);
  EXPECT_EQ(s1["stages_skipped"], 0);

  const auto rows = read_jsonl(out / "results.jsonl");
  ASSERT_EQ(rows.size(), 3u);
  const std::vector<std::string> names = {"baseline", "prune", "prune+quantize"};
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i]["schema"], "shrink.result/1");
    EXPECT_EQ(rows[i]["name"], names[i]);
    EXPECT_EQ(rows[i]["baseline"], i == 0);
    EXPECT_EQ(rows[i]["task"], "classify");
    EXPECT_EQ(rows[i]["stages"].size(), i);
    EXPECT_EQ(rows[i]["quality"]["name"], "accuracy");
    EXPECT_GT(rows[i]["bench"]["latency_ms"]["p99"].get<double>(), 0);
    // Size on disk: the measured model directory's files, summed here.
    EXPECT_EQ(rows[i]["size_bytes"].get<uint64_t>(), dir_bytes(rows[i]["model"].get<std::string>()));
  }
  // Structured pruning removed parameters; w8a8 made the model smaller on disk.
  EXPECT_LT(rows[1]["parameters"].get<int64_t>(), rows[0]["parameters"].get<int64_t>());
  EXPECT_LT(rows[2]["size_bytes"].get<int64_t>(), rows[1]["size_bytes"].get<int64_t>());
  // Quality equals a separate `shrink eval` of the same model with the same options.
  const auto ev = run_cli("eval " + (out / "stages/02-quantize/model").string() + " --data " + kSst2 +
                          " --limit 120 --max-length 24 --json");
  ASSERT_EQ(ev.code, 0) << ev.err;
  EXPECT_DOUBLE_EQ(rows[2]["quality"]["value"].get<double>(), nlohmann::json::parse(ev.out)["accuracy"].get<double>());
  // Stage costs: each stage loaded the model, so its peak RSS is at least the model's size; time was spent.
  for (const auto& st : rows[2]["stages"]) {
    EXPECT_GT(st["seconds"].get<double>(), 0);
    EXPECT_GE(st["peak_rss_bytes"].get<uint64_t>(), dir_bytes(model) / 2) << st;
  }
  EXPECT_EQ(rows[2]["stages"][0]["params"]["sparsity"], 0.3);
  EXPECT_EQ(fs::canonical(out / "final"), fs::canonical(out / "stages/02-quantize/model"));

  // Second run: both stages skipped (markers untouched), the same rows rebuilt.
  struct stat before {};
  ASSERT_EQ(::stat((out / "stages/01-prune/stage.json").c_str(), &before), 0);
  const auto r2 = run_cli(cmd + " --json");
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_EQ(nlohmann::json::parse(r2.out)["stages_skipped"], 2);
  EXPECT_HAS(r2.err, "stage 1/2 01-prune: skipped");
  EXPECT_HAS(r2.err, "stage 2/2 02-quantize: skipped");
  struct stat after {};
  ASSERT_EQ(::stat((out / "stages/01-prune/stage.json").c_str(), &after), 0);
  EXPECT_EQ(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
  EXPECT_EQ(read_jsonl(out / "results.jsonl").size(), 3u);

  // Changed parameters of stage 1: both stages are redone (stage 2's input changed).
  testing::write_bytes(recipe, tiny_recipe(0.5));
  const auto r3 = run_cli(cmd + " --json");
  ASSERT_EQ(r3.code, 0) << r3.err;
  EXPECT_EQ(nlohmann::json::parse(r3.out)["stages_run"], 2);
  EXPECT_EQ(read_jsonl(out / "results.jsonl")[1]["stages"][0]["params"]["sparsity"], 0.5);

  // An interrupted stage (directory without its marker) is redone, the others skipped.
  fs::remove(out / "stages/02-quantize/stage.json");
  const auto r4 = run_cli(cmd + " --json");
  ASSERT_EQ(r4.code, 0) << r4.err;
  const auto s4 = nlohmann::json::parse(r4.out);
  EXPECT_EQ(s4["stages_skipped"], 1);
  EXPECT_EQ(s4["stages_run"], 1);
}

TEST(Compress, BadRecipeNamesTheLineAndRunsNothing) {
  const fs::path dir = temp_dir("recipe-bad"), recipe = dir / "bad.yaml";
  testing::write_bytes(recipe,
                       "task: classify\n"
                       "stages:\n"
                       "  - kind: prune\n"
                       "    method: structured\n"
                       "    sparsityy: 0.5\n");
  const auto r = run_cli("compress model-unused --recipe " + recipe.string() + " --data " + kSst2 + " --out " +
                         (dir / "out").string());
  EXPECT_NE(r.code, 0);
  EXPECT_HAS(r.err, recipe.string() + ":5:");
  EXPECT_HAS(r.err, "unknown key `sparsityy` for `prune`");
  EXPECT_HAS(r.err, "sparsity");
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST(Compress, FailingStageNamesTheStageAndItsError) {
  const fs::path model = tiny_classifier();
  const fs::path dir = temp_dir("recipe-fail"), recipe = dir / "r.yaml";
  testing::write_bytes(recipe,
                       "task: classify\neval: {limit: 50}\nbench: {iters: 3, warmup: 0, seq: 8}\n"
                       "stages:\n  - {kind: quantize, scheme: w3a99}\n");
  const auto r = run_cli("compress " + model.string() + " --recipe " + recipe.string() + " --data " + kSst2 +
                         " --out " + (dir / "out").string());
  EXPECT_NE(r.code, 0);
  EXPECT_HAS(r.err, "stage 1/1 01-quantize failed");
  EXPECT_HAS(r.err, "w3a99");
  EXPECT_HAS(r.err, "stage.log");
  EXPECT_FALSE(fs::exists(dir / "out/stages/01-quantize/stage.json"));
}

}  // namespace
}  // namespace shrink
