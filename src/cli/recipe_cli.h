// Shared by `shrink compress` and `shrink sweep`: the CLI's option table as a CommandTable (so recipe keys are the
// very flags of the commands), the input-override flags, and the pipeline options from the common flags.
#pragma once

#include <shrink/compress/pipeline.h>
#include <shrink/compress/recipe.h>

#include <CLI/CLI.hpp>

#include "cli/common.h"

namespace shrink::cli {

// Every subcommand of `root` with its long flags, their types (from CLI11's type names), repeatability and
// whether they are required.
CommandTable command_table(CLI::App& root);

// --task --data --images --text --tokenizer on `sub`: override the recipe's (or the space's) inputs.
void add_input_flags(CLI::App* sub, RecipeInputs& in);

// exe (/proc/self/exe), model, out, commands, threads, quiet.
PipelineOptions pipeline_options(CLI::App* sub, const std::string& model, const std::string& out, const CommonFlags& f);

}  // namespace shrink::cli
