// shrink info MODEL: architecture, parameters, per-layer scheme and bytes, size on disk.
#include <shrink/core/build_info.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"

namespace shrink::cli {

void register_info(CLI::App& app) {
  auto* sub = app.add_subcommand("info", "architecture, slots, dtypes, size");
  static std::string path, tokenizer;
  static CommonFlags f;
  sub->add_option("model", path, "model directory or llama2.c .bin")->required();
  sub->add_option("--tokenizer", tokenizer, "tokenizer file (llama2.c models)");
  add_common_flags(sub, f);
  sub->callback([] {
    apply(f);
    auto model = open_model(path, tokenizer);
    const ModelConfig& c = model->config();
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& s : model->linears())
      layers.push_back({{"name", s.name},
                        {"scheme", s.impl->scheme()},
                        {"bytes", s.impl->weight_bytes()},
                        {"in", s.impl->in_features()},
                        {"out", s.impl->out_features()}});
    nlohmann::json j = {{"path", path},
                        {"architecture", c.architecture},
                        {"model_type", c.model_type},
                        {"parameters", model->parameters()},
                        {"size_bytes", path_size_bytes(path)},
                        {"runtime_weight_bytes", model->weight_bytes()},
                        {"hidden_size", c.hidden_size},
                        {"num_layers", c.num_layers},
                        {"num_heads", c.num_heads},
                        {"num_kv_heads", c.num_kv_heads},
                        {"intermediate_size", c.intermediate_size},
                        {"vocab_size", c.vocab_size},
                        {"context", c.max_position_embeddings},
                        {"tokenizer", model->tokenizer() != nullptr},
                        {"layers", layers}};
    if (c.num_labels > 0) j["num_labels"] = c.num_labels;
    if (f.json) return print_json(j);
    std::printf("%s  (%s)\n", path.c_str(), c.architecture.c_str());
    std::printf("  parameters      %.2f M\n", model->parameters() / 1e6);
    std::printf("  size on disk    %.2f MB\n", path_size_bytes(path) / 1e6);
    std::printf("  layers x hidden %d x %d, heads %d (kv %d), ffn %d, vocab %d, context %d\n", c.num_layers,
                c.hidden_size, c.num_heads, c.num_kv_heads, c.intermediate_size, c.vocab_size,
                c.max_position_embeddings);
    std::printf("  tokenizer       %s\n", model->tokenizer() ? "yes" : "none found");
    std::printf("  %-50s %-8s %12s\n", "linear", "scheme", "bytes");
    for (const auto& s : model->linears())
      std::printf("  %-50s %-8s %12zu\n", s.name.c_str(), s.impl->scheme().c_str(), s.impl->weight_bytes());
  });
}

}  // namespace shrink::cli
