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

// Which KV cache a sequence keeps: fp32 rows, or INT8 (format KV8 of kernels/quant.h: int8 symmetric, one fp32
// scale per (token, KV head) row of head_dim values; about 3.8x smaller at head_dim 64).
enum class KvCacheType { F32, Int8 };
const char* kv_cache_type_name(KvCacheType t);  // "f32", "int8"
// "f32" | "int8" (also "fp32"); throws naming the accepted values otherwise.
KvCacheType parse_kv_cache_type(const std::string& name);

// Per-sequence decoder state: the KV cache of every layer and scratch buffers. The cache's type is chosen per
// cache, so one model can serve fp32 and int8 sequences side by side.
struct KvCache {
  int64_t max_seq = 0;
  int64_t pos = 0;  // tokens already in the cache
  int64_t kv_dim = 0;
  KvCacheType type = KvCacheType::F32;
  int n_kv_heads = 0, head_dim = 0;
  std::vector<float> k, v;  // F32: [layer][pos][kv_dim]
  // Int8: codes [layer][pos][kv_dim]; scales [layer][kv head][pos] (one head's scales contiguous over positions).
  std::vector<int8_t> k8, v8;
  std::vector<float> k_scale, v_scale;
  std::vector<float> scratch;
  void reset() { pos = 0; }
  float* k_layer(int layer) { return k.data() + static_cast<size_t>(layer) * max_seq * kv_dim; }
  float* v_layer(int layer) { return v.data() + static_cast<size_t>(layer) * max_seq * kv_dim; }
  // Bytes the keys and values (with their scales) occupy.
  size_t kv_bytes() const;
  // Writes n rows of keys and values (RoPE already applied to keys) at positions p .. p+n-1 of `layer`, quantizing
  // them for an Int8 cache. Rows are kv_dim values, ld floats apart.
  void store(int layer, int64_t p, int64_t n, const float* k_rows, const float* v_rows, int64_t ld);
  // Causal attention of n query rows ([n][n_heads * head_dim]) at positions p .. p+n-1 against this layer's cache
  // (ops::attention_causal or ops::attention_causal_kv8); out like q.
  void attend(int layer, const float* q, int64_t n, int64_t p, int n_heads, float scale, float* out) const;
};

// One sequence's share of a forward call: tokens[0..n) fed at positions cache->pos.. of its own cache.
struct SeqTokens {
  KvCache* cache = nullptr;
  const int32_t* tokens = nullptr;
  int64_t n = 0;
};

class DecoderModel : public Model {
 public:
  ModelKind kind() const override { return ModelKind::Decoder; }
  int64_t max_context() const { return config_.max_position_embeddings; }
  // max_seq <= 0: the model's context length. The one-argument form gives a cache of kv_cache_type().
  KvCache new_cache(int64_t max_seq = 0) const;
  KvCache new_cache(int64_t max_seq, KvCacheType type) const;
  // KvCache::kv_bytes() of such a cache, without allocating it.
  size_t kv_cache_bytes(int64_t max_seq, KvCacheType type) const;
  // The type new_cache(max_seq) gives (generate, ppl and bench take their caches from it); F32 unless set.
  KvCacheType kv_cache_type() const { return kv_cache_type_; }
  void set_kv_cache_type(KvCacheType t) { kv_cache_type_ = t; }

  // Feeds tokens[0..n) at positions cache.pos.., appends them to the cache. logits: [n][vocab] when
  // all_logits, else [vocab] for the last token. Throws when the context would overflow.
  void forward(KvCache& cache, const int32_t* tokens, int64_t n, float* logits, bool all_logits) const;

  // Several sequences in one pass (continuous batching): every linear runs once over the rows of all of them, so
  // a decode step of B sequences reads the weights once instead of B times; RoPE, the KV cache and attention are
  // per sequence. Each sequence may bring several tokens (a prompt joining the batch) or one (a decode step).
  // logits: [seqs.size()][vocab], the next-token logits after each sequence's last token. The caches must be
  // distinct; scratch is resized as needed. Every sequence is checked before any cache is touched. Equal to
  // forward() on each sequence alone up to the summation order of the batched GEMM.
  void forward_batch(const std::vector<SeqTokens>& seqs, float* logits, std::vector<float>& scratch) const;

  // Block-level entry points: forward is embed -> run_block for every block -> head. Sequential calibration
  // (compress/sequential.h) runs one block at a time over a calibration set with them. hidden: [n][hidden_size].
  int num_blocks() const { return config_.num_layers; }
  // Token (and learned position) embeddings of tokens[0..n) at positions pos0...
  virtual void embed(const int32_t* tokens, int64_t n, int64_t pos0, float* hidden) const = 0;
  // Block i on n rows in place, at positions cache.pos..: writes block i's keys/values, does not advance cache.pos.
  // hidden must not live in cache.scratch.
  void run_block(int i, KvCache& cache, float* hidden, int64_t n) const;
  // Final norm and lm_head of n rows: logits [n][vocab].
  void head(const float* hidden, int64_t n, float* logits) const;
  // The linears of block i in execution order, grouped by shared input: LLaMA {q,k,v} {o} {gate,up} {down}.
  virtual std::vector<std::vector<LinearSlot*>> block_linears(int i) = 0;

 protected:
  // Checks a forward call before it touches the cache: tokens present, in the vocabulary, and fitting
  // in the context.
  void check_forward(const KvCache& cache, const int32_t* tokens, int64_t n) const;
  KvCacheType kv_cache_type_ = KvCacheType::F32;

  // What an architecture implements. block: block `layer` in place on x, the rows of seqs one after the other
  // ([sum n][hidden_size]), each sequence at its own cache's positions (the caches are not advanced); work holds
  // block_scratch_per_row() floats per row.
  virtual int64_t block_scratch_per_row() const = 0;
  virtual void block(int layer, const std::vector<SeqTokens>& seqs, float* x, int64_t n, float* work) const = 0;
  // Final norm and lm_head of n rows; work: n * hidden_size floats.
  virtual void head_rows(const float* x, int64_t n, float* logits, float* work) const = 0;
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
  // Image classifiers (ViT): pixel values [batch][channels][image_size][image_size], scaled as in training
  // (shrink's Fashion-MNIST models: pixel / 255). Text encoders throw, naming the architecture.
  virtual EncoderOutput forward_images(const float* pixels, int64_t batch) const;
  bool takes_images() const { return config_.image_size > 0; }

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
