// A trainable BERT / DistilBERT sequence classifier or ViT image classifier (HF ViTForImageClassification: patch
// projection, [CLS] token, pre-LayerNorm blocks) on the autograd tape, with Hugging Face tensor names, so a
// checkpoint it saves is a BertForSequenceClassification / DistilBertForSequenceClassification directory that every
// shrink command (and Hugging Face tooling) loads; and it starts from any such checkpoint (fine-tuning, teachers,
// students initialised from chosen teacher layers). Structurally pruned checkpoints (fewer heads / a narrower FFN
// per layer, recorded in config.json by shrink prune) train too, so pruning can recover by fine-tuning.
#pragma once

#include <shrink/core/tensor.h>
#include <shrink/formats/config.h>
#include <shrink/train/autograd.h>
#include <shrink/train/optim.h>

#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace shrink::train {

struct EncoderBatch {
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> ids, type_ids, mask;  // [batch][seq]; type_ids may be empty (zeros)
  // ViT: [batch][patches][channels * patch * patch] pixel values (ids/mask unused; seq = patches + 1 with [CLS]).
  std::vector<float> patches;
};

struct EncoderForward {
  Var logits;               // [batch, num_labels]
  std::vector<Var> hidden;  // output of the embeddings and of every layer, [batch * seq, hidden] each
};

class TrainableEncoder {
 public:
  // Fresh weights (normal, std 0.02; LayerNorm 1 / 0; biases 0), deterministic in seed. config.model_type is
  // "bert", "distilbert" or "vit" (with image_size, patch_size, num_channels); num_labels > 0.
  TrainableEncoder(ModelConfig config, uint64_t seed);
  // From checkpoint tensors (any float dtype). Missing classifier tensors (a bare BertModel) are initialised fresh;
  // any other missing or mis-shaped tensor is an error naming it.
  TrainableEncoder(ModelConfig config, const TensorMap& tensors, uint64_t seed);

  const ModelConfig& config() const { return config_; }
  EncoderForward forward(const EncoderBatch& b, bool training, std::mt19937& rng) const;
  std::vector<NamedParam> parameters() const;  // decay off for biases and LayerNorm weights
  TensorMap state() const;                     // current weights, Hugging Face names (copies)
  // config.json + model.safetensors (+ `tokenizer_file` copied when given) into `dir`, atomically per file.
  void save(const std::filesystem::path& dir, const std::filesystem::path& tokenizer_file = {}) const;

  float dropout = 0.1f;  // hidden and attention-output dropout while training

  // When set, replaces every Linear of the encoder (slot = Hugging Face name without ".weight", e.g.
  // "bert.encoder.layer.0.attention.self.query"; ViT's patch projection is passed as a [hidden, pixels] matrix):
  // QAT wraps input and weight in fake quantization, low-rank recovery computes through its factors, pruning masks
  // weights. It receives the slot's input and its current weight and bias parameters.
  std::function<Var(const std::string& slot, const Var& x, const Var& weight, const Var& bias)> linear_hook;
  // Parameters a hook owns (learned quantization ranges, low-rank factors); parameters() lists them after the
  // model's own, so the optimizer trains them.
  std::vector<NamedParam> extra_parameters;
  // The parameter under a Hugging Face name (throws naming it when absent).
  const Var& param(const std::string& name) const { return at(name); }
  bool has_param(const std::string& name) const { return p_.count(name) != 0; }

 private:
  ModelConfig config_;
  std::map<std::string, Var> p_;
  bool bert_ = true, vit_ = false;
  std::string pre_;
  std::vector<int> heads_;    // per layer: heads present (config.json pruned_heads)
  std::vector<int64_t> ffn_;  // per layer: FFN width (shrink_pruning.intermediate_sizes)
  int64_t attention_width(int layer) const;
  Var sublayer_bias(const Var& h, const std::string& bias) const;
  void set_family();
  const Var& at(const std::string& name) const;
  Var lin(const std::string& slot, const Var& x, const Var& w, const Var& b) const;
  EncoderForward forward_vit(const EncoderBatch& b, bool training, std::mt19937& rng) const;
  void init_fresh(uint64_t seed, bool only_missing);
  std::vector<std::pair<std::string, Shape>> expected_shapes() const;
};

}  // namespace shrink::train
