// Hugging Face config.json, normalised across LLaMA, GPT-2, BERT and DistilBERT spellings.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace shrink {

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM", "GPT2LMHeadModel", "BertForSequenceClassification", ...
  std::string model_type;    // "llama", "gpt2", "bert", "distilbert"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;  // == num_heads unless grouped-query attention
  int head_dim = 0;      // hidden_size / num_heads unless given
  int max_position_embeddings = 0;
  int type_vocab_size = 0;  // BERT token types (0 when the model has none)
  int image_size = 0, patch_size = 0, num_channels = 0;  // ViT image classifiers (0 for text models)
  float norm_eps = 1e-5f;
  float rope_theta = 10000.f;
  bool rope_interleaved = false;  // llama2.c rotates adjacent pairs; HF rotates halves
  bool tie_word_embeddings = false;
  std::string hidden_act;  // "silu", "gelu", "gelu_new", ...
  int num_labels = 0;      // sequence-classification heads
  std::vector<std::string> id2label;
  int bos_token_id = -1, eos_token_id = -1, pad_token_id = -1;
  nlohmann::json raw;  // the whole file, written back through on save
};

// Throws shrink::Error naming `source` and the field when a required field is missing or has the
// wrong type, or the architecture is not supported (the message lists the supported ones).
ModelConfig parse_config(const nlohmann::json& j, const std::string& source);
ModelConfig parse_config_text(std::string_view text, const std::string& source);  // JSON text (fuzzer entry)
ModelConfig read_config(const std::filesystem::path& config_json);
nlohmann::json config_to_json(const ModelConfig& c);  // raw with normalised fields applied

const std::vector<std::string>& supported_architectures();

// Parses JSON text from an untrusted file: shrink::Error naming `source` on a syntax error, and on
// nesting deeper than kMaxJsonDepth (nlohmann's copy and dump recurse, so depth is bounded up front).
constexpr int kMaxJsonDepth = 256;
nlohmann::json parse_json_text(std::string_view text, const std::string& source);

}  // namespace shrink
