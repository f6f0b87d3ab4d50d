// shrink info MODEL: architecture, parameters, per-layer scheme and bytes, size on disk vs the unquantized original.
#include <fmt/format.h>
#include <shrink/compress/lowrank.h>
#include <shrink/compress/prune.h>
#include <shrink/compress/quantize.h>
#include <shrink/core/build_info.h>
#include <shrink/ops/qlinear.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"

namespace shrink::cli {

namespace {

// The dtype the quantized layers had before quantization (written by save_model), F32 when unknown.
DType source_dtype(const ModelConfig& c) {
  const auto& raw = c.raw;
  if (raw.is_object() && raw.contains("quantization_config") && raw["quantization_config"].is_object()) {
    const auto& qc = raw["quantization_config"];
    if (qc.contains("shrink") && qc["shrink"].is_object() && qc["shrink"].contains("source_dtype") &&
        qc["shrink"]["source_dtype"].is_string())
      if (auto d = dtype_from_name(qc["shrink"]["source_dtype"].get<std::string>())) return *d;
  }
  return DType::F32;
}

// Per-layer heads and FFN widths of a structurally pruned encoder (empty when nothing was removed or the model is not
// a bert / distilbert / vit encoder).
nlohmann::json pruned_layers(const ModelConfig& c) {
  nlohmann::json out = nlohmann::json::array();
  if (c.model_type != "bert" && c.model_type != "distilbert" && c.model_type != "vit") return out;
  const prune::EncoderShape s = prune::encoder_shape(c);
  bool pruned = false;
  for (int l = 0; l < c.num_layers; ++l)
    pruned |= static_cast<int>(s.heads[l].size()) != c.num_heads || s.ffn[l] != c.intermediate_size;
  if (!pruned) return out;
  for (int l = 0; l < c.num_layers; ++l)
    out.push_back({{"layer", l}, {"heads", s.heads[l].size()}, {"head_ids", s.heads[l]}, {"ffn", s.ffn[l]}});
  return out;
}

}  // namespace

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
    const DType src = source_dtype(c);
    const size_t size_bytes = path_size_bytes(path);
    nlohmann::json layers = nlohmann::json::array();
    struct Row {
      std::string name, scheme, note;
      size_t bytes, file_bytes, original_bytes;
    };
    std::vector<Row> rows;
    int64_t original_delta = 0;  // original - stored bytes of the packed layers
    size_t linear_bytes = 0, linear_original = 0;
    for (const auto& s : model->linears()) {
      Row r{s.name, s.impl->scheme(), {}, s.impl->weight_bytes(), 0, 0};
      if (const PackedLinear* p = s.impl->packed()) {
        for (const auto& [n, t] : p->tensors) r.file_bytes += t.nbytes();
        const Tensor* b = p->find("bias");
        r.original_bytes = static_cast<size_t>(p->out * p->in + (b ? b->numel() : 0)) * dtype_size(src);
        r.note = quant_shape_note(p->spec, p->in);
        original_delta += static_cast<int64_t>(r.original_bytes) - static_cast<int64_t>(r.file_bytes);
      } else if (const LowRankLinear* lr = as_lowrank(s.impl.get())) {
        if (lr->quantized()) {  // both factors packed; B's holds the bias
          for (const PackedLinear* p : {lr->packed_a(), lr->packed_b()})
            for (const auto& [n, t] : p->tensors) r.file_bytes += t.nbytes();
        } else {
          r.file_bytes = lr->a().nbytes() + lr->b().nbytes() + (lr->bias().defined() ? lr->bias().nbytes() : 0);
        }
        r.original_bytes = static_cast<size_t>(lr->in_features() * lr->out_features()) * dtype_size(src) +
                           (lr->bias().defined() ? lr->bias().nbytes() : 0);
        r.note = fmt::format("rank {} of {}", lr->rank(), std::min(lr->in_features(), lr->out_features()));
        original_delta += static_cast<int64_t>(r.original_bytes) - static_cast<int64_t>(r.file_bytes);
      } else {
        auto w = model->tensors().find(s.name + ".weight");
        auto b = model->tensors().find(s.name + ".bias");
        r.file_bytes = w != model->tensors().end()
                           ? w->second.nbytes() + (b != model->tensors().end() ? b->second.nbytes() : 0)
                           : 0;  // 0: tied to the embedding
        r.original_bytes = r.file_bytes;
        if (r.file_bytes == 0) r.note = "tied to the embedding";
      }
      linear_bytes += r.file_bytes;
      linear_original += r.original_bytes;
      nlohmann::json l = {{"name", r.name},
                          {"scheme", r.scheme},
                          {"bytes", r.bytes},
                          {"file_bytes", r.file_bytes},
                          {"original_bytes", r.original_bytes},
                          {"in", s.impl->in_features()},
                          {"out", s.impl->out_features()}};
      if (!r.note.empty()) l["note"] = r.note;
      layers.push_back(l);
      rows.push_back(std::move(r));
    }
    const size_t original_size = static_cast<size_t>(static_cast<int64_t>(size_bytes) + original_delta);
    nlohmann::json j = {{"path", path},
                        {"architecture", c.architecture},
                        {"model_type", c.model_type},
                        {"parameters", model->parameters()},
                        {"size_bytes", size_bytes},
                        {"original_size_bytes", original_size},
                        {"compression_ratio", size_bytes ? static_cast<double>(original_size) / size_bytes : 1.0},
                        {"linear_file_bytes", linear_bytes},
                        {"linear_original_bytes", linear_original},
                        {"original_dtype", dtype_name(src)},
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
    if (c.image_size > 0) j.update({{"image_size", c.image_size}, {"patch_size", c.patch_size}});
    const nlohmann::json pruned = pruned_layers(c);
    if (!pruned.empty()) j["pruned_layers"] = pruned;
    if (f.json) return print_json(j);
    std::printf("%s  (%s)\n", path.c_str(), c.architecture.c_str());
    std::printf("  parameters      %.2f M\n", model->parameters() / 1e6);
    std::printf("  size on disk    %.3f MB (unquantized %s: %.3f MB, %.2fx)\n", size_bytes / 1e6,
                std::string(dtype_name(src)).c_str(), original_size / 1e6,
                size_bytes ? static_cast<double>(original_size) / size_bytes : 1.0);
    std::printf("  layers x hidden %d x %d, heads %d (kv %d), ffn %d, vocab %d, context %d\n", c.num_layers,
                c.hidden_size, c.num_heads, c.num_kv_heads, c.intermediate_size, c.vocab_size,
                c.max_position_embeddings);
    if (c.image_size > 0)
      std::printf("  images          %dx%d, %d channel(s), patch %d\n", c.image_size, c.image_size, c.num_channels,
                  c.patch_size);
    for (const auto& l : pruned)
      std::printf("  pruned layer %-2d heads %zu/%d, ffn %lld/%d\n", l["layer"].get<int>(), l["heads"].get<size_t>(),
                  c.num_heads, static_cast<long long>(l["ffn"].get<int64_t>()), c.intermediate_size);
    std::printf("  tokenizer       %s\n", model->tokenizer() ? "yes" : "none found");
    std::printf("  %-44s %-16s %12s %12s  %s\n", "linear", "scheme", "file bytes", "original", "note");
    for (const auto& r : rows)
      std::printf("  %-44s %-16s %12zu %12zu  %s\n", r.name.c_str(), r.scheme.c_str(), r.file_bytes, r.original_bytes,
                  r.note.c_str());
    std::printf("  %-44s %-16s %12zu %12zu\n", "all linears", "", linear_bytes, linear_original);
  });
}

}  // namespace shrink::cli
