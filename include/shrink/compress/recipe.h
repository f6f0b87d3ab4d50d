// Recipes (YAML): an ordered list of compression stages, each one shrink subcommand with its flags as keys, plus the
// task, the data and the evaluation/benchmark options; and sweep spaces, which expand into many recipes.
// Validation happens before anything runs and names the file, the line and the key.
#pragma once

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace shrink {

// What one subcommand accepts, taken from the CLI's own option table (so recipe keys and flags never drift).
enum class FlagType { Bool, Int, Number, Text };
struct FlagSpec {
  FlagType type = FlagType::Text;
  bool repeatable = false;
  bool required = false;
};
struct CommandSpec {
  std::map<std::string, FlagSpec> flags;  // flag name without "--" ("student-layers"); positionals are not listed
};
using CommandTable = std::map<std::string, CommandSpec>;  // subcommand name -> its flags

struct RecipeStage {
  std::string kind;       // distill | prune | lowrank | quantize | qat | train (the subcommand of the same name)
  nlohmann::json params;  // key -> bool | number | string | array of those (repeatable flags), as written
  int line = 0;           // 1-based line of the stage in its file
};

// The task and the inputs handed to every stage, eval and bench that take them. On the command line
// (`shrink compress --data F`) they override the recipe's.
struct RecipeInputs {
  std::string task;  // classify | image | lm
  std::string data, images, text, tokenizer;
};

struct Recipe {
  std::string file;         // where it was read from (for messages)
  std::string description;  // free text
  RecipeInputs in;
  nlohmann::json eval = nlohmann::json::object();   // extra `shrink eval` flags
  nlohmann::json bench = nlohmann::json::object();  // extra `shrink bench` flags
  std::vector<RecipeStage> stages;
};

// The stage kinds and the keys a recipe may not set because the pipeline fills them (input model, output dir, ...).
const std::vector<std::string>& recipe_stage_kinds();
bool recipe_reserved_key(std::string_view key);
// The task's evaluation input: text (lm), images (image) or data (classify).
const std::string& recipe_eval_input(const RecipeInputs& in);

// Parses and validates YAML text against `commands` (which must list every stage kind plus eval and bench);
// non-empty fields of `overrides` replace the recipe's before validation.
// Throws shrink::Error "FILE:LINE: ..." naming the key and listing the allowed ones.
Recipe parse_recipe(std::string_view yaml, const std::string& file, const CommandTable& commands,
                    const RecipeInputs& overrides = {});
Recipe load_recipe(const std::filesystem::path& path, const CommandTable& commands, const RecipeInputs& overrides = {});
// Checks a recipe built in memory (a sweep configuration) the same way; `where` prefixes the messages.
void validate_recipe(const Recipe& recipe, const CommandTable& commands);

// A stage's params with the recipe's inputs filled in where its command takes them and the stage did not set them:
// data/images/text as --data/--images/--text (LM text and images also as --data), and a calibrated quantize stage's
// --calib from the task's evaluation input.
nlohmann::json resolved_stage_params(const Recipe& recipe, const RecipeStage& stage, const CommandSpec& spec);

// "--key value" arguments for a params object (true -> "--key", false -> nothing, arrays -> the flag repeated).
std::vector<std::string> flag_args(const nlohmann::json& params);

// One configuration of a sweep: an id (a directory name) and the recipe it runs.
struct SweepConfig {
  std::string id;
  Recipe recipe;
};

// A sweep space (YAML): `base` (recipe keys shared by every configuration), `configs` (explicit list of
// {id, stages}) and `grids` ({stages, vary: {"kind.key": [values]}}), expanded in file order, grids as the
// cartesian product with the last key varying fastest. A null value drops that stage from the configuration.
std::vector<SweepConfig> parse_sweep_space(std::string_view yaml, const std::string& file, const CommandTable& commands,
                                           const RecipeInputs& overrides = {});
std::vector<SweepConfig> load_sweep_space(const std::filesystem::path& path, const CommandTable& commands,
                                          const RecipeInputs& overrides = {});
// Non-empty fields of `overrides` replace those of `in`.
void apply_inputs(RecipeInputs& in, const RecipeInputs& overrides);

}  // namespace shrink
