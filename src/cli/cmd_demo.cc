// shrink demo: the whole story on the built-in default. Trains (or takes from the cache) a ViT teacher on
// Fashion-MNIST from the Debian package, then runs distillation, structured pruning and quantization alone and
// chained as a sweep (every variant its own resumable recipe run, measured the same way), prints one table and
// writes the HTML report.
#include <fmt/format.h>
#include <shrink/compress/pipeline.h>
#include <shrink/compress/recipe.h>
#include <shrink/core/build_info.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/core/subprocess.h>
#include <shrink/core/timer.h>
#include <shrink/report/report.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/recipe_cli.h"

namespace shrink::cli {

namespace fs = std::filesystem;

namespace {

// The teacher: a 4-layer ViT on 7x7 patches (16 patches + [CLS]), 6 epochs without a time budget (so a loaded
// machine trains the same teacher, only slower): about 4 minutes on 2 quiet cores.
const std::vector<std::string> kTeacherArgs = {
    "train", "--task",  "image", "--patch", "7",    "--hidden", "64",     "--layers",  "4", "--heads", "4", "--ff",
    "128",   "--batch", "64",    "--lr",    "1e-3", "--decay",  "cosine", "--dropout", "0", "--seed",  "1"};
// Bump when the cached teacher's files change meaning (a new model format, a different trainer) while the
// arguments stay the same.
constexpr int kTeacherFormat = 2;

// The whole `shrink train` command of the teacher but --out and --threads (which do not change the model): the cache
// key is its hash, so any change of settings, data, epochs, limit or budget trains a new teacher.
std::vector<std::string> teacher_args(const std::string& images, double max_minutes, int64_t limit) {
  std::vector<std::string> a = kTeacherArgs;
  if (!images.empty())  // train --task image: the IDX directory (absolute: the key must not depend on the cwd)
    a.insert(a.end(), {"--data", fs::absolute(images).lexically_normal().string()});
  a.insert(a.end(), {"--epochs", limit > 0 ? "2" : "6"});
  if (limit > 0) a.insert(a.end(), {"--limit", std::to_string(limit)});
  if (max_minutes > 0) a.insert(a.end(), {"--max-minutes", fmt::format("{}", max_minutes)});
  return a;
}

// The variants: each technique alone, then chained. Keys are the commands' own flags (docs/recipes.md). `limit`
// (0: all) caps the training images of the stages that train and the test images evaluated (--quick).
std::string demo_space(int64_t limit) {
  const std::string lim = limit > 0 ? fmt::format(", limit: {}", limit) : "";
  const std::string distill = "{kind: distill, student-layers: 2, epochs: 1, seed: 1" + lim + "}";
  // max-drop 100: show what 50% pruning costs after recovery instead of falling back to the dense model.
  const std::string prune =
      "{kind: prune, method: structured, sparsity: 0.5, epochs: 1, max-drop: 100, seed: 1" + lim + "}";
  std::string y =
      "description: shrink demo - a Fashion-MNIST ViT distilled, pruned and quantized\n"
      "base:\n  task: image\n  bench:\n    batch: 1\n";
  if (limit > 0)  // --quick: fewer test images, shorter timing loops
    y += fmt::format("    seconds: 1\n    concurrency-seconds: 0.25\n    rounds: 1\n  eval:\n    limit: {}\n", limit);
  y += "configs:\n";
  y += "  - id: distill-2-layers\n    stages:\n      - " + distill + "\n";
  y += "  - id: prune-50\n    stages:\n      - " + prune + "\n";
  y += "  - id: quantize-w8a8\n    stages:\n      - {kind: quantize, scheme: w8a8}\n";
  y += "  - id: quantize-w4a16-g32\n    stages:\n      - {kind: quantize, scheme: w4a16-g32}\n";
  y += "  - id: distill+prune+w8a8\n    stages:\n      - " + distill + "\n      - " + prune +
       "\n      - {kind: quantize, scheme: w8a8}\n";
  return y;
}

fs::path default_cache_dir() {
  if (const char* d = std::getenv("SHRINK_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return fs::path(d) / "shrink";
  if (const char* d = std::getenv("HOME"); d && *d) return fs::path(d) / ".cache" / "shrink";
  return fs::path(".cache") / "shrink";
}

bool is_model_dir(const fs::path& d) {
  return fs::exists(d / "config.json") && fs::exists(d / "model.safetensors");
}

// Trains the teacher into a temporary directory beside `dir` and renames it into place, so an interrupted run never
// leaves a half-written teacher in the cache.
void train_teacher(const fs::path& dir, const std::vector<std::string>& args, int threads) {
  const fs::path tmp = dir.string() + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(dir.parent_path());
  ProcessOptions p;
  p.args = args;
  p.args.insert(p.args.end(), {"--out", tmp.string()});
  if (threads > 0) p.args.insert(p.args.end(), {"--threads", std::to_string(threads)});
  std::fprintf(stderr, "demo: training the teacher (first run only; cached in %s)\n  %s\n", dir.c_str(),
               format_command("shrink", p.args).c_str());
  const ProcessResult r = run_process(p);
  if (!r.ok()) fail("demo: training the teacher failed: {}", r.describe_failure());
  fs::rename(tmp, dir);
  std::fprintf(stderr, "demo: teacher trained in %.0f s (peak RSS %.0f MB)\n", r.wall_s, r.peak_rss_bytes / 1e6);
}

// The console table's columns: the ones a reader decides on.
const std::vector<std::string> kTableColumns = {
    "name",       "quality",         "top1_agreement", "p50_ms", "p99_ms", "size_bytes", "joules_per_inference",
    "usd_per_1k", "compress_seconds"};

}  // namespace

void register_demo(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "demo", "the whole story: train a Fashion-MNIST ViT teacher (cached), distill, prune, quantize, report");
  static std::string out = "out/demo", cache, images;
  static bool fresh = false, quick = false;
  static double teacher_minutes = 0;
  static CommonFlags f;
  sub->add_option("--out", out, "output directory: the variants, results.jsonl and report.html")->capture_default_str();
  sub->add_option("--cache", cache,
                  "where the trained teacher is kept (default $SHRINK_CACHE_DIR, else ~/.cache/shrink)");
  sub->add_option("--images", images, "Fashion-MNIST IDX directory (default: the dataset-fashion-mnist package)");
  sub->add_option("--teacher-minutes", teacher_minutes, "time budget of the teacher's training (0: none)")
      ->capture_default_str();
  sub->add_flag("--fresh", fresh, "redo every variant (the cached teacher is kept; delete the cache to retrain it)");
  sub->add_flag("--quick", quick,
                "a fast check of the whole flow: 2,000 training and test images, a 2-epoch teacher (cached apart)");
  add_common_flags(sub, f);
  sub->callback([sub] {
    apply(f);
    Timer total;
    std::fprintf(stderr, "shrink demo  commit %s  threads %d  %s\n", commit(), num_threads(),
                 machine_json()["cpu"].get<std::string>().c_str());
    const std::string img = images.empty() ? "fashion-mnist" : images;  // the recipes' --images
    const int64_t limit = quick ? 2000 : 0;
    const std::vector<std::string> targs = teacher_args(images, quick ? 0 : teacher_minutes, limit);
    const fs::path teacher = (cache.empty() ? default_cache_dir() : fs::path(cache)) /
                             command_cache_key("demo-vit-fashion-mnist", kTeacherFormat, targs);
    if (!is_model_dir(teacher))
      train_teacher(teacher, targs, f.threads);
    else
      std::fprintf(stderr, "demo: teacher from the cache: %s\n", teacher.c_str());

    SweepOptions so;
    so.pipeline = pipeline_options(sub, teacher.string(), out, f);
    std::error_code ec;
    if (fresh) fs::remove_all(so.pipeline.out, ec);
    RecipeInputs in;
    in.images = img;
    const std::vector<SweepConfig> configs =
        parse_sweep_space(demo_space(limit), "(built-in demo space)", so.pipeline.commands, in);
    run_sweep_rank(configs, so);
    merge_sweep_results(configs, so);
    const ReportPaths paths = write_report(so.pipeline.out);
    const ReportInput rep = load_report_input(so.pipeline.out / "results.jsonl");
    if (f.json) {
      nlohmann::json j = render_json(rep);
      j["html"] = paths.html.string();
      j["seconds"] = total.elapsed_ms() / 1000;
      return print_json(j);
    }
    std::printf("\nFashion-MNIST ViT teacher (%s) and its compressed variants, test set; latency at batch 1:\n\n",
                teacher.c_str());
    std::printf("%s(* on the Pareto frontier of accuracy, p99 latency and size)\n",
                render_console_table(rep, kTableColumns).c_str());
    std::printf("\nreport: %s\n        %s\n", fs::absolute(paths.html).c_str(), fs::absolute(paths.markdown).c_str());
    std::printf("demo done in %.0f s\n", total.elapsed_ms() / 1000);
  });
}

}  // namespace shrink::cli
