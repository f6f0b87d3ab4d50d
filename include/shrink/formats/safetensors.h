// safetensors read (mmap, validated) and write (atomic), single files and sharded directories.
#pragma once

#include <shrink/core/tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

namespace shrink {

struct SafetensorsFile {
  TensorMap tensors;                            // views into the mapping
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

// The safetensors reference reader refuses headers above this size; so do we.
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Maps `path` and validates the header: JSON well-formed, every dtype known, shape * dtype size
// equal to the byte range, ranges inside the file, not overlapping, header length inside the file.
// Every failure is a shrink::Error naming the file and the tensor/field.
SafetensorsFile read_safetensors(const std::filesystem::path& path);

// The same validation over bytes in memory (the fuzzer's entry point). Tensors view `data` and hold
// `owner` alive; a tensor whose bytes are not aligned to its element size is copied instead.
// `name` is the file name used in error messages.
SafetensorsFile parse_safetensors(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                                  const std::string& name);

// A directory holding model.safetensors or model.safetensors.index.json (+ shards), or a single
// .safetensors file. Tensors of all shards are merged; metadata of the first shard is returned.
SafetensorsFile read_safetensors_model(const std::filesystem::path& path);

// Writes one file atomically (temp + rename); header padded with spaces to a multiple of 8, the data
// ranges contiguous (as the reference reader requires) and each tensor 8-byte aligned whenever its byte
// size is a multiple of 8, always aligned to its element size (see docs/formats.md).
void write_safetensors(const std::filesystem::path& path, const TensorMap& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes `dir`/model.safetensors, or shards model-0000i-of-0000n.safetensors plus
// model.safetensors.index.json when the total exceeds max_shard_bytes.
void write_safetensors_model(const std::filesystem::path& dir, const TensorMap& tensors,
                             const std::map<std::string, std::string>& metadata = {},
                             uint64_t max_shard_bytes = uint64_t{5} << 30);

}  // namespace shrink
