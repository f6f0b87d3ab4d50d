// Recipe YAML -> Recipe, validated against the CLI's own option table; errors carry FILE:LINE and the key.
#include <shrink/compress/recipe.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <set>

#include "compress/recipe_yaml.h"

namespace shrink {

namespace {

// Filled by the pipeline or the command line: input model, output, teacher/init, task, tokenizer, threads.
const std::set<std::string, std::less<>> kReserved = {"model",    "out",  "teacher",   "init",   "json",
                                                      "baseline", "task", "tokenizer", "threads"};
const std::vector<std::string> kInputs = {"data", "images", "text"};
const std::vector<std::string> kTasks = {"classify", "image", "lm"};

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

const char* type_word(FlagType t) {
  switch (t) {
    case FlagType::Bool: return "true or false";
    case FlagType::Int: return "an integer";
    case FlagType::Number: return "a number";
    case FlagType::Text: break;
  }
  return "a string";
}

// The keys a recipe may set for a command: its flags minus the ones the pipeline fills.
std::vector<std::string> allowed_keys(const CommandSpec& spec, bool inputs_allowed) {
  std::vector<std::string> keys;
  for (const auto& [name, f] : spec.flags) {
    if (recipe_reserved_key(name)) continue;
    if (!inputs_allowed && std::find(kInputs.begin(), kInputs.end(), name) != kInputs.end()) continue;
    keys.push_back(name);
  }
  return keys;
}

nlohmann::json scalar_value(const YamlWhere& where, const YAML::Node& v, const std::string& key, FlagType type) {
  if (!v.IsScalar()) where.fail(v, "key `{}` expects {}, found a {}", key, type_word(type), yaml_kind(v));
  const std::string s = v.Scalar();
  switch (type) {
    case FlagType::Bool: {
      bool b = false;
      if (!YAML::convert<bool>::decode(v, b)) where.fail(v, "key `{}` expects true or false, found `{}`", key, s);
      return b;
    }
    case FlagType::Int: {
      long long i = 0;
      if (!YAML::convert<long long>::decode(v, i)) where.fail(v, "key `{}` expects an integer, found `{}`", key, s);
      return i;
    }
    case FlagType::Number: {
      double d = 0;
      if (!YAML::convert<double>::decode(v, d)) where.fail(v, "key `{}` expects a number, found `{}`", key, s);
      return d;
    }
    case FlagType::Text: break;
  }
  return s;
}

}  // namespace

// ---- YAML helpers shared with the sweep space parser ----

const char* yaml_kind(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: return "map";
    case YAML::NodeType::Sequence: return "list";
    case YAML::NodeType::Null: return "null (no value)";
    case YAML::NodeType::Scalar: return "value";
    case YAML::NodeType::Undefined: break;
  }
  return "nothing";
}

YAML::Node yaml_load(std::string_view text, const std::string& file) {
  try {
    return YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    fail("{}:{}:{}: not valid YAML: {}; fix the syntax (indentation, ':' after keys, quotes)", file, e.mark.line + 1,
         e.mark.column + 1, e.msg);
  }
}

nlohmann::json flag_value(const YamlWhere& where, const YAML::Node& v, const std::string& key, const FlagSpec& spec) {
  if (v.IsNull()) where.fail(v, "key `{}` has no value; give {} or remove the key", key, type_word(spec.type));
  if (v.IsSequence()) {
    if (!spec.repeatable)
      where.fail(v, "key `{}` takes one value ({}), found a list; only repeatable flags take lists", key,
                 type_word(spec.type));
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& item : v) arr.push_back(scalar_value(where, item, key, spec.type));
    return arr;
  }
  return scalar_value(where, v, key, spec.type);
}

nlohmann::json command_params(const YamlWhere& where, const YAML::Node& map, const std::string& command,
                              const CommandSpec& spec, bool inputs_allowed, const std::string& skip_key) {
  if (!map.IsMap()) where.fail(map, "`{}` options must be a map of key: value, found a {}", command, yaml_kind(map));
  nlohmann::json params = nlohmann::json::object();
  for (const auto& kv : map) {
    const std::string key = kv.first.as<std::string>();
    if (key == skip_key) continue;
    const auto it = spec.flags.find(key);
    const bool input = std::find(kInputs.begin(), kInputs.end(), key) != kInputs.end();
    if (it != spec.flags.end() && recipe_reserved_key(key))
      where.fail(kv.first,
                 "key `{}` of `{}` is set by the pipeline (input model, output directory, task, tokenizer "
                 "come from the command line and the recipe's top level); remove it",
                 key, command);
    if (it != spec.flags.end() && input && !inputs_allowed)
      where.fail(kv.first, "key `{}` of `{}` comes from the recipe's top level (`{}: FILE`); move it there", key,
                 command, key);
    if (it == spec.flags.end())
      where.fail(kv.first, "unknown key `{}` for `{}`; allowed keys: {}", key, command,
                 join(allowed_keys(spec, inputs_allowed)));
    if (params.contains(key)) where.fail(kv.first, "key `{}` given twice", key);
    params[key] = flag_value(where, kv.second, key, it->second);
  }
  return params;
}

RecipeStage parse_stage(const YamlWhere& where, const YAML::Node& node, int index, const CommandTable& commands) {
  if (!node.IsMap())
    where.fail(node, "stage {} must be a map with `kind` and its options (e.g. `- kind: prune`), found a {}", index,
               yaml_kind(node));
  const YAML::Node kind_node = node["kind"];
  if (!kind_node || !kind_node.IsScalar())
    where.fail(node, "stage {} has no `kind`; set one of: {}", index, join(recipe_stage_kinds()));
  RecipeStage st;
  st.kind = kind_node.Scalar();
  st.line = node.Mark().line + 1;
  const auto& kinds = recipe_stage_kinds();
  if (std::find(kinds.begin(), kinds.end(), st.kind) == kinds.end())
    where.fail(kind_node, "stage {}: unknown kind `{}`; allowed kinds: {}", index, st.kind, join(kinds));
  const auto cmd = commands.find(st.kind);
  if (cmd == commands.end())
    where.fail(kind_node, "stage {}: this build of shrink has no `{}` command", index, st.kind);
  st.params = command_params(where, node, st.kind, cmd->second, true, "kind");
  return st;
}

void parse_recipe_top(const YamlWhere& where, const YAML::Node& root, const CommandTable& commands, Recipe& r,
                      bool stages_allowed) {
  static const std::vector<std::string> kTop = {"description", "task", "data",  "images", "text",
                                                "tokenizer",   "eval", "bench", "stages"};
  if (!root.IsMap()) where.fail(root, "expected a map of recipe keys ({}), found a {}", join(kTop), yaml_kind(root));
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (std::find(kTop.begin(), kTop.end(), key) == kTop.end() || (key == "stages" && !stages_allowed))
      where.fail(kv.first, "unknown key `{}`; allowed keys: {}", key, join(kTop));
    if (key == "eval" || key == "bench") {
      const auto cmd = commands.find(key);
      if (cmd == commands.end()) where.fail(kv.first, "this build of shrink has no `{}` command", key);
      (key == "eval" ? r.eval : r.bench) = command_params(where, v, key, cmd->second, false, "");
    } else if (key == "stages") {
      if (!v.IsSequence() || v.size() == 0)
        where.fail(v, "`stages` must be a non-empty list of stages (`- kind: prune ...`), found a {}", yaml_kind(v));
      for (size_t i = 0; i < v.size(); ++i)
        r.stages.push_back(parse_stage(where, v[i], static_cast<int>(i + 1), commands));
    } else {
      if (!v.IsScalar()) where.fail(v, "key `{}` expects a string, found a {}", key, yaml_kind(v));
      const std::string s = v.Scalar();
      if (key == "task" && std::find(kTasks.begin(), kTasks.end(), s) == kTasks.end())
        where.fail(v, "key `task` expects one of {}, found `{}`", join(kTasks), s);
      std::string* dst = key == "description" ? &r.description
                         : key == "task"      ? &r.in.task
                         : key == "data"      ? &r.in.data
                         : key == "images"    ? &r.in.images
                         : key == "text"      ? &r.in.text
                                              : &r.in.tokenizer;
      *dst = s;
    }
  }
}

// ---- public ----

const std::vector<std::string>& recipe_stage_kinds() {
  static const std::vector<std::string> kinds = {"distill", "prune", "lowrank", "quantize", "qat", "train"};
  return kinds;
}

const std::string& recipe_eval_input(const RecipeInputs& in) {
  return in.task == "lm" ? in.text : in.task == "image" ? in.images : in.data;
}

bool recipe_reserved_key(std::string_view key) {
  return kReserved.count(key) > 0;
}

void apply_inputs(RecipeInputs& in, const RecipeInputs& o) {
  for (auto [dst, src] : {std::pair{&in.task, &o.task}, std::pair{&in.data, &o.data}, std::pair{&in.images, &o.images},
                          std::pair{&in.text, &o.text}, std::pair{&in.tokenizer, &o.tokenizer}})
    if (!src->empty()) *dst = *src;
}

Recipe parse_recipe(std::string_view yaml, const std::string& file, const CommandTable& commands,
                    const RecipeInputs& overrides) {
  const YamlWhere where{file};
  const YAML::Node root = yaml_load(yaml, file);
  Recipe r;
  r.file = file;
  try {
    parse_recipe_top(where, root, commands, r, true);
  } catch (const YAML::Exception& e) {  // e.g. a key that is itself a list
    fail("{}:{}: {}", file, e.mark.line + 1, e.msg);
  }
  if (r.stages.empty())
    where.fail(root, "no `stages`; a recipe lists at least one (`stages: [{{kind: quantize, ...}}]`)");
  apply_inputs(r.in, overrides);
  validate_recipe(r, commands);
  return r;
}

Recipe load_recipe(const std::filesystem::path& path, const CommandTable& commands, const RecipeInputs& overrides) {
  if (!std::filesystem::is_regular_file(path))
    fail("{}: recipe not found; give a YAML file (see recipes/ and docs/recipes.md)", path.string());
  return parse_recipe(read_text_file(path), path.string(), commands, overrides);
}

void validate_recipe(const Recipe& r, const CommandTable& commands) {
  auto where = [&](const RecipeStage& st) { return fmt::format("{}:{}", r.file, st.line); };
  if (r.in.task.empty())
    fail("{}: no `task`; set `task: classify` (text classifier), `task: image` (ViT) or `task: lm` (language model)",
         r.file);
  const std::string& main_input = recipe_eval_input(r.in);
  const char* main_key = r.in.task == "lm" ? "text" : r.in.task == "image" ? "images" : "data";
  if (main_input.empty())
    fail(
        "{}: task `{}` needs `{}` (the evaluation set) at the top level of the recipe or as --{} on the command "
        "line",
        r.file, r.in.task, main_key, main_key);
  for (const auto& st : r.stages) {
    const auto cmd = commands.find(st.kind);
    if (cmd == commands.end()) fail("{}: this build of shrink has no `{}` command", where(st), st.kind);
    const nlohmann::json p = resolved_stage_params(r, st, cmd->second);
    for (const auto& [name, f] : cmd->second.flags) {
      if (!f.required || recipe_reserved_key(name) || p.contains(name)) continue;
      fail("{}: stage `{}` needs `{}` ({}); add `{}: ...` to the stage{}", where(st), st.kind, name, type_word(f.type),
           name,
           std::find(kInputs.begin(), kInputs.end(), name) != kInputs.end() ? " or to the recipe's top level" : "");
    }
  }
}

nlohmann::json resolved_stage_params(const Recipe& r, const RecipeStage& st, const CommandSpec& spec) {
  nlohmann::json p = st.params;
  auto has = [&](const char* flag) { return spec.flags.count(flag) > 0; };
  auto give = [&](const char* flag, const std::string& value) {
    if (!value.empty() && has(flag) && !p.contains(flag)) p[flag] = value;
  };
  give("data", r.in.data);
  give("images", r.in.images);
  give("text", r.in.text);
  // Commands that read their training text or images through --data (distill, train, prune on LMs / ViTs).
  if (r.in.task == "lm") give("data", r.in.text);
  // (Commands that take --images get the images there only: --data and --images exclude each other.)
  if (r.in.task == "image" && !p.contains("images")) give("data", r.in.images);
  // Calibrated quantization reads the evaluation inputs unless the stage names its own calibration set.
  if (st.kind == "quantize") {
    const std::string method = p.value("method", std::string());
    const std::string scheme = p.value("scheme", std::string());
    if (method == "static" || method == "gptq" || method == "smoothquant" || method == "awq" ||
        scheme.find("static") != std::string::npos)
      // Image models calibrate from --images (quantize's alias of --calib-images).
      if (!(r.in.task == "image" && p.contains("images"))) give("calib", recipe_eval_input(r.in));
  }
  return p;
}

std::vector<std::string> flag_args(const nlohmann::json& params) {
  std::vector<std::string> args;
  auto one = [&](const std::string& key, const nlohmann::json& v) {
    if (v.is_boolean()) {
      if (v.get<bool>()) args.push_back("--" + key);
      return;
    }
    args.push_back("--" + key);
    args.push_back(v.is_string() ? v.get<std::string>() : v.dump());
  };
  for (const auto& [key, v] : params.items()) {
    if (v.is_array()) {
      for (const auto& x : v) one(key, x);
    } else {
      one(key, v);
    }
  }
  return args;
}

}  // namespace shrink
