// libFuzzer target: arbitrary bytes as a recipe (first byte even) or a sweep space (odd), validated against a fixed
// option table. Only shrink::Error may come out; whatever parses must turn into flags without throwing.
#include <shrink/compress/recipe.h>
#include <shrink/core/error.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace {

const shrink::CommandTable& table() {
  static const shrink::CommandTable t = [] {
    using shrink::FlagSpec;
    using shrink::FlagType;
    const FlagSpec text{FlagType::Text, false, false}, num{FlagType::Number, false, false},
        integer{FlagType::Int, false, false}, flag{FlagType::Bool, false, false}, list{FlagType::Text, true, false};
    shrink::CommandTable c;
    for (const char* k : {"distill", "prune", "lowrank", "quantize", "qat", "train"})
      c[k].flags = {{"method", text}, {"sparsity", num}, {"epochs", integer}, {"heads-only", flag},
                    {"skip", list},   {"data", text},    {"out", text},       {"threads", integer}};
    c["quantize"].flags["scheme"] = {FlagType::Text, false, true};
    c["eval"].flags = {{"limit", integer}, {"data", text}};
    c["bench"].flags = {{"iters", integer}};
    return c;
  }();
  return t;
}

void check_stages(const shrink::Recipe& r) {
  for (const auto& st : r.stages) {
    const auto p = shrink::resolved_stage_params(r, st, table().at(st.kind));
    if (!p.is_object()) std::abort();
    (void)shrink::flag_args(p);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if (data[0] % 2 == 0) {
      check_stages(shrink::parse_recipe(text, "fuzz/recipe.yaml", table()));
    } else {
      for (const auto& c : shrink::parse_sweep_space(text, "fuzz/space.yaml", table())) check_stages(c.recipe);
    }
  } catch (const shrink::Error&) {
  }
  return 0;
}
