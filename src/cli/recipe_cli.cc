// The CLI side of recipes: CLI11's option table -> CommandTable, input overrides, pipeline options.
#include "cli/recipe_cli.h"

namespace shrink::cli {

CommandTable command_table(CLI::App& root) {
  CommandTable table;
  for (CLI::App* sub : root.get_subcommands([](CLI::App*) { return true; })) {
    CommandSpec spec;
    for (const CLI::Option* o : sub->get_options()) {
      if (o->get_lnames().empty()) continue;  // positional arguments are filled by the pipeline
      FlagSpec f;
      if (o->get_type_size() == 0) {
        f.type = FlagType::Bool;
      } else {
        const std::string t = o->get_type_name().substr(0, o->get_type_name().find(':'));
        f.type = t == "INT" || t == "UINT"       ? FlagType::Int
                 : t == "FLOAT" || t == "NUMBER" ? FlagType::Number
                                                 : FlagType::Text;
        f.repeatable = o->get_expected_max() > 1 || o->get_items_expected_max() > 1;
      }
      f.required = o->get_required();
      for (const auto& name : o->get_lnames())
        if (name != "help") spec.flags[name] = f;
    }
    table[sub->get_name()] = std::move(spec);
  }
  return table;
}

void add_input_flags(CLI::App* sub, RecipeInputs& in) {
  sub->add_option("--task", in.task, "classify | image | lm (overrides the recipe's)");
  sub->add_option("--data", in.data, "TSV sentence<TAB>label: evaluation set and stage data (overrides the recipe's)");
  sub->add_option("--images", in.images, "image data set directory (overrides the recipe's)");
  sub->add_option("--text", in.text, "plain text for LMs: perplexity and calibration (overrides the recipe's)");
  sub->add_option("--tokenizer", in.tokenizer, "tokenizer file for llama2.c .bin models");
}

PipelineOptions pipeline_options(CLI::App* sub, const std::string& model, const std::string& out,
                                 const CommonFlags& f) {
  PipelineOptions p;
  p.model = model;
  p.out = out;
  p.commands = command_table(*sub->get_parent());
  p.threads = f.threads;
  p.quiet = f.quiet;
  return p;
}

}  // namespace shrink::cli
