// shrink sweep MODEL [--space S.yaml] --out DIR: many configurations, each a recipe run into DIR/configs/<id>/, rows
// appended as they finish, restart skips finished ids. Under `mpirun -n K` (Open MPI) rank r takes the
// configurations i with i % K == r and rank 0 merges the rank files after a barrier, then runs the report.
#include <mpi.h>
#include <shrink/compress/pipeline.h>
#include <shrink/compress/recipe.h>
#include <shrink/core/error.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/recipe_cli.h"

namespace shrink::cli {

namespace {

// recipes/sweep-default.yaml from the working directory, else beside the build directory of this binary.
std::string default_space() {
  namespace fs = std::filesystem;
  const fs::path rel = fs::path("recipes") / "sweep-default.yaml";
  if (fs::exists(rel)) return rel.string();
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec)
    for (fs::path d = exe.parent_path(); !d.empty() && d != d.root_path(); d = d.parent_path())
      if (fs::exists(d / rel)) return (d / rel).string();
  fail(
      "no --space given and recipes/sweep-default.yaml was not found in the working directory or above the shrink "
      "binary; give --space FILE.yaml (see docs/sweep.md)");
}

// Open MPI sets OMPI_COMM_WORLD_SIZE in every process it starts; without it this is one rank and MPI stays off.
struct MpiSession {
  int rank = 0, ranks = 1;
  bool on = false;
  MpiSession() {
    if (!std::getenv("OMPI_COMM_WORLD_SIZE")) return;
    MPI_Init(nullptr, nullptr);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    on = true;
  }
  void barrier() const {
    if (on) MPI_Barrier(MPI_COMM_WORLD);
  }
  // A rank that cannot go on must not leave the others waiting at the barrier.
  [[noreturn]] void abort(const char* what) const {
    std::fprintf(stderr, "error (rank %d): %s\n", rank, what);
    if (on) MPI_Abort(MPI_COMM_WORLD, 1);
    std::exit(1);
  }
  ~MpiSession() {
    if (on) MPI_Finalize();
  }
};

}  // namespace

void register_sweep(CLI::App& app) {
  auto* sub = app.add_subcommand("sweep", "run many configurations (a space of recipes), anytime and resumable, MPI");
  static std::string model, space, out;
  static RecipeInputs in;
  static bool list = false;
  static CommonFlags f;
  sub->add_option("model", model, "model directory or llama2.c .bin")->required();
  sub->add_option("--space", space, "sweep space YAML (default: recipes/sweep-default.yaml; see docs/sweep.md)");
  sub->add_option("--out", out, "output directory: configs/<id>/, results.jsonl");
  sub->add_flag("--list", list, "validate the space and print the configuration ids, run nothing");
  add_input_flags(sub, in);
  add_common_flags(sub, f);
  sub->callback([sub] {
    SweepOptions so;
    so.pipeline = pipeline_options(sub, model, out, f);
    const std::string space_file = space.empty() ? default_space() : space;
    const std::vector<SweepConfig> configs = load_sweep_space(space_file, so.pipeline.commands, in);
    if (list) {
      nlohmann::json ids = nlohmann::json::array();
      for (const auto& c : configs) ids.push_back(c.id);
      if (f.json) return print_json({{"space", space_file}, {"configs", ids}});
      std::printf("%s: %zu configurations\n", space_file.c_str(), configs.size());
      for (const auto& c : configs) std::printf("  %s\n", c.id.c_str());
      return;
    }
    if (out.empty()) fail("shrink sweep: --out DIR is required (unless --list)");
    const MpiSession mpi;
    so.rank = mpi.rank;
    so.ranks = mpi.ranks;
    // K ranks on one machine share its cores unless told otherwise.
    if (so.pipeline.threads == 0 && mpi.ranks > 1)
      so.pipeline.threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / mpi.ranks);
    std::vector<std::string> ran;
    try {
      ran = run_sweep_rank(configs, so);
    } catch (const std::exception& e) {
      mpi.abort(e.what());
    }
    mpi.barrier();
    if (mpi.rank != 0) return;
    const size_t rows = merge_sweep_results(configs, so);
    run_report(so.pipeline);
    if (f.json)
      return print_json({{"out", out},
                         {"results", (so.pipeline.out / "results.jsonl").string()},
                         {"rows", rows},
                         {"configs", configs.size()},
                         {"ranks", mpi.ranks}});
    std::printf("sweep: %zu configurations over %d rank(s); %s/results.jsonl has %zu rows\n", configs.size(), mpi.ranks,
                out.c_str(), rows);
  });
}

}  // namespace shrink::cli
