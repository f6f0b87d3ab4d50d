// shrink synth --preset NAME --out DIR: a random-weight model of a real shape, with a tokenizer.
#include <shrink/core/build_info.h>
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/models/synth.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"

namespace shrink::cli {

void register_synth(CLI::App& app) {
  auto* sub = app.add_subcommand("synth", "write a random-weight model of a real shape (no download needed)");
  static std::string preset, out, arch, dtype = "f32";
  static uint64_t seed = 1;
  static CommonFlags f;
  std::string names;
  for (auto& p : synth_presets()) names += (names.empty() ? "" : ", ") + p.name;
  sub->add_option("--preset", preset, "one of: " + names)->required();
  sub->add_option("--arch", arch, "llama|gpt2|bert|distilbert (checked against the preset)");
  sub->add_option("--out", out, "output directory")->required();
  sub->add_option("--seed", seed, "random seed");
  sub->add_option("--dtype", dtype, "stored weight type: f32, bf16, f16");
  add_common_flags(sub, f);
  sub->callback([] {
    apply(f);
    const SynthPreset& p = find_synth_preset(preset);
    if (!arch.empty() && arch != p.arch) fail("--arch {} does not match preset {} (a {} model)", arch, preset, p.arch);
    DType dt = dtype == "f32" ? DType::F32 : dtype == "bf16" ? DType::BF16 : dtype == "f16" ? DType::F16 : DType::I8;
    if (dt == DType::I8) fail("--dtype {}: expected f32, bf16 or f16", dtype);
    Timer t;
    synth_model(p, out, seed, dt);
    nlohmann::json j = {{"out", out},
                        {"preset", p.name},
                        {"arch", p.arch},
                        {"size_bytes", path_size_bytes(out)},
                        {"seconds", t.elapsed_ms() / 1000}};
    if (f.json) return print_json(j);
    if (!f.quiet)
      std::printf("wrote %s (%s, %.1f MB) in %.1f s\n", out.c_str(), p.name.c_str(), path_size_bytes(out) / 1e6,
                  t.elapsed_ms() / 1000);
  });
}

}  // namespace shrink::cli
