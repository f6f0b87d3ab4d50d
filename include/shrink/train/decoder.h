// A trainable LLaMA-family causal language model (RMSNorm, HF half-rotation RoPE, grouped-query attention, SwiGLU,
// tied or untied lm_head) on the autograd tape with Hugging Face names, computing what the engine's
// LlamaForCausalLM computes; save() writes a LlamaForCausalLM directory every shrink command loads.
#pragma once

#include <shrink/core/tensor.h>
#include <shrink/formats/config.h>
#include <shrink/train/autograd.h>
#include <shrink/train/optim.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace shrink::train {

struct DecoderForward {
  Var logits;               // [batch * seq, vocab]
  std::vector<Var> hidden;  // residual stream after the embeddings and after every layer, [batch * seq, hidden]
};

class TrainableDecoder {
 public:
  // Fresh weights (normal, std 0.02; norm weights 1), deterministic in seed. config.model_type "llama".
  TrainableDecoder(ModelConfig config, uint64_t seed);
  // From checkpoint tensors (any float dtype; llama2.c's interleaved q/k rows, config.rope_interleaved, are put in
  // Hugging Face order, so the trained model always uses the half-rotation layout). A missing or mis-shaped
  // tensor is an error naming it; no lm_head.weight means tied embeddings.
  TrainableDecoder(ModelConfig config, const TensorMap& tensors);

  const ModelConfig& config() const { return config_; }
  // `batch` sequences of `seq` tokens each (ids.size() == batch * seq), positions 0..seq-1, causal.
  DecoderForward forward(const std::vector<int32_t>& ids, int64_t batch, int64_t seq) const;
  std::vector<NamedParam> parameters() const;  // decay off for norm weights; then extra_parameters
  TensorMap state() const;                     // current weights, Hugging Face names (copies; tied: no lm_head)
  int64_t parameter_count() const;             // elements of the model's own weights (tied counted once)
  // config.json + model.safetensors (+ the tokenizer file copied; a llama2.c tokenizer .bin as tokenizer.bin)
  // into `dir`, atomically per file.
  void save(const std::filesystem::path& dir, const std::filesystem::path& tokenizer_file = {}) const;

  // As TrainableEncoder::linear_hook: replaces every Linear (slot "model.layers.0.self_attn.q_proj", "lm_head").
  std::function<Var(const std::string& slot, const Var& x, const Var& weight, const Var& bias)> linear_hook;
  std::vector<NamedParam> extra_parameters;
  const Var& param(const std::string& name) const;
  bool has_param(const std::string& name) const { return p_.count(name) != 0; }

 private:
  ModelConfig config_;
  std::map<std::string, Var> p_;
  std::vector<std::pair<std::string, Shape>> expected_shapes() const;
  void check_config() const;
  Var lin(const std::string& slot, const Var& x) const;
};

// Permutes the rows of a q/k projection weight ([heads * head_dim, in]) from llama2.c's interleaved RoPE order
// (row 2k + part of a head) to Hugging Face's halves (row k + part * head_dim / 2).
Tensor interleaved_to_half_rope_rows(const Tensor& w, int64_t head_dim);

}  // namespace shrink::train
