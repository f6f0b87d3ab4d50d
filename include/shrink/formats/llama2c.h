// llama2.c checkpoints (.bin: 7 x int32 header then float32 arrays) and tokenizer .bin files.
#pragma once

#include <shrink/core/tensor.h>
#include <shrink/formats/config.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace shrink {

struct Llama2cModel {
  ModelConfig config;  // architecture LlamaForCausalLM, rope_interleaved = true
  TensorMap tensors;   // Hugging Face names (model.embed_tokens.weight, ...), views into the mapping
};

// Shared classifier when the header's vocab_size > 0, separate lm_head.weight when < 0.
// Every failure (bad header, size not exactly what the header implies) is a shrink::Error naming the file.
Llama2cModel read_llama2c_model(const std::filesystem::path& path);
// The same over bytes in memory (the fuzzer's entry point); tensors view `data` and hold `owner`.
Llama2cModel parse_llama2c_model(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                                 const std::string& name);

struct Llama2cVocab {
  int max_token_length = 0;
  std::vector<std::string> pieces;
  std::vector<float> scores;
};
Llama2cVocab read_llama2c_vocab(const std::filesystem::path& path, int vocab_size);

// Writes a llama2.c checkpoint (used by tests and synth; legacy v0 layout) atomically. The classifier is
// shared when `tensors` has no lm_head.weight. q/k rows are written in llama2.c's interleaved RoPE order
// (un-permuted from the Hugging Face order when config.rope_interleaved is false).
void write_llama2c_model(const std::filesystem::path& path, const ModelConfig& config, const TensorMap& tensors);

}  // namespace shrink
