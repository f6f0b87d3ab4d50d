// Saving a Model as a Hugging Face style directory (the compressed model format of DESIGN.md): config.json with a
// compressed-tensors `quantization_config` (+ shrink's exact per-layer map), packed safetensors, tokenizer files.
#pragma once

#include <shrink/models/model.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace shrink {

constexpr int kModelDirFormatVersion = 1;

struct SaveOptions {
  uint64_t max_shard_bytes = uint64_t{2} << 30;  // above this the safetensors are sharded (with an index)
  // A tokenizer file to copy into the directory (a llama2.c tokenizer .bin is written as tokenizer.bin, anything
  // else under its own name). Empty: the tokenizer files beside the source model are copied.
  std::filesystem::path tokenizer;
  nlohmann::json recipe;  // how the model was made (e.g. {"method":"rtn","scheme":"w8a8"}); stored as metadata
  // Replace an existing non-empty `dir` only when it was written by shrink (its safetensors metadata carries
  // shrink_format_version); anything else is refused.
  bool replace_shrink_dir = true;
};

struct SaveResult {
  std::filesystem::path dir;
  size_t size_bytes = 0;  // all files written
  int shards = 1;
  std::string source_sha256;
};

// Writes `dir` atomically (a temporary directory beside it, renamed at the end; on any error nothing is left).
// Quantized slots are stored as `<slot>.<tensor>` from their PackedLinear ([out, in] order, also for GPT-2 Conv1D),
// every other checkpoint tensor unchanged. A llama2.c source becomes a LlamaForCausalLM directory with q/k rows in
// Hugging Face order and its tokenizer as tokenizer.bin.
SaveResult save_model(const Model& model, const std::filesystem::path& dir, const SaveOptions& opt = {});

// The `quantization_config` save_model writes for this model (compressed-tensors naming + "shrink" per-layer map).
nlohmann::json quantization_config_json(const Model& model);

// sha256 (hex) of the source model's config and tensor headers (names, dtypes, shapes): identifies what a
// compressed model was made from without reading every weight.
std::string model_source_hash(const Model& model);

// SHA-256 of bytes, lowercase hex (FIPS 180-4).
std::string sha256_hex(const void* data, size_t n);

}  // namespace shrink
