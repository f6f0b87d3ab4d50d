// Internal to recipe.cc and recipe_sweep.cc: YAML nodes -> recipe parts, with FILE:LINE in every error.
#pragma once

#include <shrink/compress/recipe.h>
#include <shrink/core/error.h>
#include <yaml-cpp/yaml.h>

#include <string>
#include <string_view>

namespace shrink {

// Where errors point: the file name, and each node's 1-based line (yaml-cpp marks are 0-based).
struct YamlWhere {
  std::string file;
  template <typename... Args>
  [[noreturn]] void fail(const YAML::Node& at, fmt::format_string<Args...> format, Args&&... args) const {
    const int line = at.Mark().line;
    const std::string msg = fmt::format(format, std::forward<Args>(args)...);
    if (line < 0) shrink::fail("{}: {}", file, msg);
    shrink::fail("{}:{}: {}", file, line + 1, msg);
  }
};

const char* yaml_kind(const YAML::Node& n);  // "map", "list", "value", "null (no value)"
YAML::Node yaml_load(std::string_view text, const std::string& file);

// One flag's value (a scalar, or a list for a repeatable flag) as JSON of the flag's type.
nlohmann::json flag_value(const YamlWhere& where, const YAML::Node& v, const std::string& key, const FlagSpec& spec);
// A map of flag keys for `command` (skip_key is left out: a stage's `kind`). Unknown, reserved and (unless
// inputs_allowed) input keys are errors listing the allowed keys.
nlohmann::json command_params(const YamlWhere& where, const YAML::Node& map, const std::string& command,
                              const CommandSpec& spec, bool inputs_allowed, const std::string& skip_key);
RecipeStage parse_stage(const YamlWhere& where, const YAML::Node& node, int index, const CommandTable& commands);
// The recipe's top-level keys into `r` (`stages` only when stages_allowed: a sweep's `base` has none).
void parse_recipe_top(const YamlWhere& where, const YAML::Node& root, const CommandTable& commands, Recipe& r,
                      bool stages_allowed);

}  // namespace shrink
