// Sweep space YAML -> the list of configurations (each a Recipe): explicit configs, then grids expanded as cartesian
// products of the `vary` values. Every configuration is validated like a recipe before the sweep starts.
#include <shrink/compress/recipe.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <set>

#include "compress/recipe_yaml.h"

namespace shrink {

namespace {

// The characters a configuration id may hold: it names a directory and a results row.
bool valid_id(const std::string& id) {
  if (id.empty() || id == "." || id == ".." || id == "baseline") return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == '_' || c == '+' || c == '=';
  });
}

std::string value_label(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "on" : "off";
  return v.dump();
}

struct VaryKey {
  size_t stage = 0;  // index into the grid's stages
  std::string flag;
  std::vector<nlohmann::json> values;  // null: drop the stage
};

std::vector<RecipeStage> parse_stage_list(const YamlWhere& where, const YAML::Node& seq, const CommandTable& commands) {
  if (!seq || !seq.IsSequence() || seq.size() == 0)
    where.fail(seq, "`stages` must be a non-empty list of stages (`- kind: prune ...`), found a {}", yaml_kind(seq));
  std::vector<RecipeStage> stages;
  for (size_t i = 0; i < seq.size(); ++i)
    stages.push_back(parse_stage(where, seq[i], static_cast<int>(i + 1), commands));
  return stages;
}

// "prune.sparsity" (the grid's only prune stage) or "2.sparsity" (its second stage).
VaryKey parse_vary_key(const YamlWhere& where, const YAML::Node& key_node, const YAML::Node& values,
                       const std::vector<RecipeStage>& stages, const CommandTable& commands) {
  const std::string key = key_node.as<std::string>();
  const auto dot = key.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == key.size())
    where.fail(key_node, "vary key `{}`: expected STAGE.KEY, e.g. `quantize.scheme` or `2.sparsity`", key);
  const std::string stage_name = key.substr(0, dot);
  VaryKey v;
  v.flag = key.substr(dot + 1);
  if (std::all_of(stage_name.begin(), stage_name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    const size_t n = std::stoul(stage_name);
    if (n < 1 || n > stages.size())
      where.fail(key_node, "vary key `{}`: the grid has stages 1..{}", key, stages.size());
    v.stage = n - 1;
  } else {
    size_t found = 0;
    for (size_t i = 0; i < stages.size(); ++i)
      if (stages[i].kind == stage_name) {
        v.stage = i;
        ++found;
      }
    if (found == 0) where.fail(key_node, "vary key `{}`: the grid has no `{}` stage", key, stage_name);
    if (found > 1)
      where.fail(key_node, "vary key `{}`: the grid has {} `{}` stages; name one by position (`N.{}`)", key, found,
                 stage_name, v.flag);
  }
  const std::string& kind = stages[v.stage].kind;
  const CommandSpec& spec = commands.at(kind);
  const auto it = spec.flags.find(v.flag);
  if (it == spec.flags.end() || recipe_reserved_key(v.flag))
    where.fail(key_node, "vary key `{}`: `{}` is not a key of `{}` stages", key, v.flag, kind);
  if (!values.IsSequence() || values.size() == 0)
    where.fail(values, "vary key `{}` expects a non-empty list of values (`~` drops the stage), found a {}", key,
               yaml_kind(values));
  for (const auto& x : values)
    v.values.push_back(x.IsNull() ? nlohmann::json() : flag_value(where, x, v.flag, it->second));
  return v;
}

void expand_grid(const YamlWhere& where, const YAML::Node& grid, const Recipe& base, const CommandTable& commands,
                 std::vector<SweepConfig>& out) {
  if (!grid.IsMap()) where.fail(grid, "a grid is a map with `stages` and `vary`, found a {}", yaml_kind(grid));
  for (const auto& kv : grid) {
    const std::string k = kv.first.as<std::string>();
    if (k != "stages" && k != "vary") where.fail(kv.first, "unknown key `{}` in a grid; allowed keys: stages, vary", k);
  }
  const std::vector<RecipeStage> stages = parse_stage_list(where, grid["stages"], commands);
  std::vector<VaryKey> vary;
  const YAML::Node vary_node = grid["vary"];
  if (vary_node) {
    if (!vary_node.IsMap())
      where.fail(vary_node, "`vary` must be a map of STAGE.KEY: [values], found a {}", yaml_kind(vary_node));
    for (const auto& kv : vary_node) vary.push_back(parse_vary_key(where, kv.first, kv.second, stages, commands));
  }
  std::vector<size_t> pick(vary.size(), 0);
  while (true) {
    std::vector<RecipeStage> st = stages;
    std::vector<bool> dropped(st.size(), false);
    std::vector<std::string> labels(st.size());
    for (size_t i = 0; i < vary.size(); ++i) {
      const auto& value = vary[i].values[pick[i]];
      if (value.is_null()) {
        dropped[vary[i].stage] = true;
        continue;
      }
      st[vary[i].stage].params[vary[i].flag] = value;
      labels[vary[i].stage].append(1, '-').append(value_label(value));
    }
    SweepConfig c{"", base};
    for (size_t s = 0; s < st.size(); ++s) {
      if (dropped[s]) continue;
      c.id += (c.id.empty() ? "" : "+") + st[s].kind + labels[s];
      c.recipe.stages.push_back(st[s]);
    }
    // Every stage dropped is the baseline, which every sweep measures anyway.
    if (!c.recipe.stages.empty()) out.push_back(std::move(c));
    size_t i = vary.size();
    while (i > 0 && ++pick[i - 1] == vary[i - 1].values.size()) pick[--i] = 0;
    if (i == 0) break;
  }
}

}  // namespace

std::vector<SweepConfig> parse_sweep_space(std::string_view yaml, const std::string& file, const CommandTable& commands,
                                           const RecipeInputs& overrides) {
  const YamlWhere where{file};
  const YAML::Node root = yaml_load(yaml, file);
  std::vector<SweepConfig> out;
  std::vector<int> lines;  // where each configuration was written, for duplicate ids
  try {
    if (!root.IsMap())
      where.fail(root, "a sweep space is a map with `base`, `configs` and/or `grids`, found a {}", yaml_kind(root));
    for (const auto& kv : root) {
      const std::string k = kv.first.as<std::string>();
      if (k != "description" && k != "base" && k != "configs" && k != "grids")
        where.fail(kv.first, "unknown key `{}`; allowed keys: description, base, configs, grids", k);
    }
    Recipe base;
    base.file = file;
    if (root["base"]) parse_recipe_top(where, root["base"], commands, base, false);
    apply_inputs(base.in, overrides);
    if (const YAML::Node configs = root["configs"]) {
      if (!configs.IsSequence()) where.fail(configs, "`configs` must be a list of {{id, stages}}");
      for (const auto& c : configs) {
        if (!c.IsMap() || !c["id"] || !c["id"].IsScalar())
          where.fail(c, "a configuration is a map with `id` (a name) and `stages`");
        for (const auto& kv : c) {
          const std::string k = kv.first.as<std::string>();
          if (k != "id" && k != "stages")
            where.fail(kv.first, "unknown key `{}` in a configuration; allowed keys: id, stages", k);
        }
        SweepConfig sc{c["id"].Scalar(), base};
        if (!valid_id(sc.id))
          where.fail(c["id"], "configuration id `{}`: use letters, digits and . - _ + = (not `baseline`)", sc.id);
        sc.recipe.stages = parse_stage_list(where, c["stages"], commands);
        out.push_back(std::move(sc));
        lines.push_back(c.Mark().line + 1);
      }
    }
    if (const YAML::Node grids = root["grids"]) {
      if (!grids.IsSequence()) where.fail(grids, "`grids` must be a list of {{stages, vary}}");
      for (const auto& g : grids) {
        const size_t before = out.size();
        expand_grid(where, g, base, commands, out);
        lines.resize(out.size(), g.Mark().line + 1);
        for (size_t i = before; i < out.size(); ++i)
          if (!valid_id(out[i].id))
            where.fail(g,
                       "grid configuration id `{}` has characters a directory name cannot carry; give string "
                       "values of letters, digits and . - _ + =",
                       out[i].id);
      }
    }
    if (out.empty()) where.fail(root, "the space has no configurations; add `configs` or `grids`");
  } catch (const YAML::Exception& e) {
    fail("{}:{}: {}", file, e.mark.line + 1, e.msg);
  }
  std::map<std::string, int> seen;
  for (size_t i = 0; i < out.size(); ++i) {
    const auto [it, fresh] = seen.emplace(out[i].id, lines[i]);
    if (!fresh)
      fail("{}:{}: configuration id `{}` already used at line {}; ids must be unique", file, lines[i], out[i].id,
           it->second);
  }
  for (const auto& c : out) {
    try {
      validate_recipe(c.recipe, commands);
    } catch (const Error& e) {
      fail("configuration `{}`: {}", c.id, e.what());
    }
  }
  return out;
}

std::vector<SweepConfig> load_sweep_space(const std::filesystem::path& path, const CommandTable& commands,
                                          const RecipeInputs& overrides) {
  if (!std::filesystem::is_regular_file(path))
    fail("{}: sweep space not found; give a YAML file (see recipes/sweep-default.yaml and docs/sweep.md)",
         path.string());
  return parse_sweep_space(read_text_file(path), path.string(), commands, overrides);
}

}  // namespace shrink
