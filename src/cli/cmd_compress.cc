// shrink compress MODEL --recipe R.yaml --out DIR: run a recipe's stages (each one shrink subcommand), measure each
// result, write DIR/results.jsonl, DIR/final and the report. Resumes: finished stages with unchanged parameters are
// skipped.
#include <shrink/compress/pipeline.h>
#include <shrink/compress/recipe.h>
#include <shrink/core/error.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/recipe_cli.h"

namespace shrink::cli {

void register_compress(CLI::App& app) {
  auto* sub = app.add_subcommand("compress", "run a recipe (YAML stages), measure every stage, write model + report");
  static std::string model, recipe_file, out;
  static RecipeInputs in;
  static bool check = false;
  static CommonFlags f;
  sub->add_option("model", model, "model directory (Hugging Face style or written by shrink) or llama2.c .bin")
      ->required();
  sub->add_option("--recipe", recipe_file, "recipe YAML (see recipes/ and docs/recipes.md)")->required();
  sub->add_option("--out", out, "output directory: stages/NN-kind/, results.jsonl, final -> last stage's model");
  sub->add_flag("--check", check, "validate the recipe and print the stage commands, run nothing");
  add_input_flags(sub, in);
  add_common_flags(sub, f);
  sub->callback([sub] {
    PipelineOptions p = pipeline_options(sub, model, out, f);
    const Recipe r = load_recipe(recipe_file, p.commands, in);
    if (check) {
      nlohmann::json stages = nlohmann::json::array();
      for (const auto& st : r.stages)
        stages.push_back({{"kind", st.kind},
                          {"line", st.line},
                          {"params", resolved_stage_params(r, st, p.commands.at(st.kind))},
                          {"args", flag_args(resolved_stage_params(r, st, p.commands.at(st.kind)))}});
      if (f.json) return print_json({{"recipe", recipe_file}, {"task", r.in.task}, {"stages", stages}});
      std::printf("%s: valid, task %s, %zu stage(s)\n", recipe_file.c_str(), r.in.task.c_str(), r.stages.size());
      for (size_t i = 0; i < r.stages.size(); ++i) {
        std::string line = fmt::format("  {}:", stage_dir_name(i, r.stages[i].kind));
        for (const auto& a : stages[i]["args"]) line.append(1, ' ').append(a.get<std::string>());
        std::printf("%s\n", line.c_str());
      }
      return;
    }
    if (out.empty()) fail("shrink compress: --out DIR is required (unless --check)");
    const PipelineResult res = run_pipeline(r, p);
    if (f.json)
      return print_json({{"out", out},
                         {"final", res.final_model.string()},
                         {"results", (p.out / "results.jsonl").string()},
                         {"rows", res.records.size()},
                         {"stages_run", res.stages_run},
                         {"stages_skipped", res.stages_skipped}});
    std::printf("%-28s %12s %12s %14s\n", "name", "quality", "p99 ms", "size bytes");
    for (const auto& rec : res.records)
      std::printf("%-28s %12.4f %12.3f %14lld\n", rec["name"].get<std::string>().c_str(),
                  rec["quality"]["value"].get<double>(),
                  rec["bench"].value("latency_ms", nlohmann::json::object()).value("p99", 0.0),
                  static_cast<long long>(rec.value("size_bytes", int64_t{0})));
    std::printf("final model: %s/final -> %s\nresults: %s/results.jsonl (%d stage(s) run, %d skipped)\n", out.c_str(),
                res.final_model.c_str(), out.c_str(), res.stages_run, res.stages_skipped);
  });
}

}  // namespace shrink::cli
