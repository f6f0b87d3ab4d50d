// Model: named weight slots (Hugging Face names) + an architecture that runs them. Decoders (LLaMA,
// GPT-2) keep a per-sequence KV cache; encoders (BERT, DistilBERT) run padded batches.
#pragma once

#include <shrink/core/tensor.h>
#include <shrink/formats/config.h>
#include <shrink/ops/linear.h>
#include <shrink/tokenizers/tokenizer.h>

#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace shrink {

enum class ModelKind { Decoder, Encoder };

// A Linear under its Hugging Face name (the weight name without ".weight"). Compression passes
// replace `impl`; the architecture holds slot pointers, so the new implementation is used at once.
struct LinearSlot {
  std::string name;
  std::unique_ptr<Linear> impl;
  // The dense source weight [out, in] and bias [out] (views into the checkpoint, or GPT-2's transposed copy) that
  // passes quantize from; undefined when the layer was loaded already packed.
  Tensor weight, bias;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual ModelKind kind() const = 0;

  const ModelConfig& config() const { return config_; }
  const std::filesystem::path& source() const { return source_; }
  // Tensors as loaded (views into the mapped files where possible), Hugging Face names.
  const TensorMap& tensors() const { return tensors_; }
  std::deque<LinearSlot>& linears() { return linears_; }
  const std::deque<LinearSlot>& linears() const { return linears_; }
  LinearSlot* find_linear(const std::string& name);

  // nullptr when no tokenizer was found beside the model (commands that need one then fail clearly).
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  const Tokenizer& require_tokenizer() const;
  void set_tokenizer(std::unique_ptr<Tokenizer> t) { tokenizer_ = std::move(t); }

  int64_t parameters() const;   // elements of all stored tensors (tied weights once)
  size_t weight_bytes() const;  // bytes of the runtime weights (linears + other tensors)

 protected:
  // A slot from `name`.weight ([out, in]; GPT-2 Conv1D [in, out] when conv1d) and `name`.bias when
  // present (required when bias_required). `weight` overrides the tensor (tied embeddings).
  LinearSlot* add_linear(const std::string& name, bool bias_required = false, bool conv1d = false,
                         const Tensor* weight = nullptr);
  // Throws naming the slot's weight when it does not map `in` features to `out`.
  void expect_linear(const LinearSlot& s, int64_t in, int64_t out) const;
  // F32 copy of a tensor (any float dtype), kept in `owned_`; throws naming the tensor when missing
  // or when its shape is not `shape` (empty shape: no check).
  const float* f32(const std::string& name, const Shape& shape);
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }

  ModelConfig config_;
  std::filesystem::path source_;
  TensorMap tensors_;
  std::deque<LinearSlot> linears_;
  std::deque<Tensor> owned_;
  std::unique_ptr<Tokenizer> tokenizer_;

  // Creates the slots and checks every tensor the architecture needs (names and shapes).
  virtual void init() = 0;
  friend std::unique_ptr<Model> build_model(ModelConfig, TensorMap, std::filesystem::path);
};

// Per-sequence decoder state: KV cache [layer][pos][kv_dim] and scratch buffers.
struct KvCache {
  int64_t max_seq = 0;
  int64_t pos = 0;  // tokens already in the cache
  int64_t kv_dim = 0;
  std::vector<float> k, v;
  std::vector<float> scratch;
  void reset() { pos = 0; }
  float* k_layer(int layer) { return k.data() + static_cast<size_t>(layer) * max_seq * kv_dim; }
  float* v_layer(int layer) { return v.data() + static_cast<size_t>(layer) * max_seq * kv_dim; }
};

class DecoderModel : public Model {
 public:
  ModelKind kind() const override { return ModelKind::Decoder; }
  int64_t max_context() const { return config_.max_position_embeddings; }
  // max_seq <= 0: the model's context length.
  KvCache new_cache(int64_t max_seq = 0) const;

 protected:
  // Checks a forward call before it touches the cache: tokens present, in the vocabulary, and fitting
  // in the context.
  void check_forward(const KvCache& cache, const int32_t* tokens, int64_t n) const;

 public:
  // Feeds tokens[0..n) at positions cache.pos.., appends them to the cache. logits: [n][vocab] when
  // all_logits, else [vocab] for the last token. Throws when the context would overflow.
  virtual void forward(KvCache& cache, const int32_t* tokens, int64_t n, float* logits, bool all_logits) const = 0;
};

struct EncoderOutput {
  Tensor hidden;  // [batch][seq][hidden]
  Tensor pooled;  // [batch][hidden] (BERT pooler; DistilBERT: empty)
  Tensor logits;  // [batch][num_labels] for ...ForSequenceClassification, else empty
};

class EncoderModel : public Model {
 public:
  ModelKind kind() const override { return ModelKind::Encoder; }
  bool has_classifier() const { return config_.num_labels > 0 && classifier_ != nullptr; }
  virtual EncoderOutput forward(const BatchEncoding& batch) const = 0;

 protected:
  LinearSlot* classifier_ = nullptr;
};

struct LoadOptions {
  std::filesystem::path tokenizer;  // overrides the tokenizer found beside the model (needed for llama2.c .bin)
};

// A Hugging Face directory (config.json + safetensors [+ tokenizer]), a directory written by shrink,
// or a llama2.c .bin. The architecture comes from config.json `architectures` (registry in model.cc).
std::unique_ptr<Model> load_model(const std::filesystem::path& path, const LoadOptions& opt = {});
// From config + tensors already in memory (tests, synth, passes).
std::unique_ptr<Model> build_model(ModelConfig config, TensorMap tensors, std::filesystem::path source = {});

}  // namespace shrink
