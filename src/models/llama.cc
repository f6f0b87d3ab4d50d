// LLaMA family decoder: RMSNorm, RoPE (HF half-rotation or llama2.c interleaved), grouped-query
// attention with a KV cache, SwiGLU MLP, tied or untied lm_head.
#include <shrink/core/error.h>
#include <shrink/ops/ops.h>

#include <cmath>
#include <cstring>

#include "models/architectures.h"

namespace shrink::models {

namespace {

class Llama final : public DecoderModel {
  struct Layer {
    const float* attn_norm;
    const float* ffn_norm;
    LinearSlot *q, *k, *v, *o, *gate, *up, *down;
  };

  void init() override {
    ModelConfig& c = config_;
    check(c.head_dim > 0 && c.num_kv_heads > 0, "{}: config has no heads", source_.string());
    const int64_t d = c.hidden_size;
    embed_ = f32("model.embed_tokens.weight", {c.vocab_size, d});
    final_norm_ = f32("model.norm.weight", {d});
    for (int i = 0; i < c.num_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      Layer l{};
      l.attn_norm = f32(p + "input_layernorm.weight", {d});
      l.ffn_norm = f32(p + "post_attention_layernorm.weight", {d});
      l.q = add_linear(p + "self_attn.q_proj");
      l.k = add_linear(p + "self_attn.k_proj");
      l.v = add_linear(p + "self_attn.v_proj");
      l.o = add_linear(p + "self_attn.o_proj");
      l.gate = add_linear(p + "mlp.gate_proj");
      l.up = add_linear(p + "mlp.up_proj");
      l.down = add_linear(p + "mlp.down_proj");
      expect_linear(*l.q, d, int64_t{c.num_heads} * c.head_dim);
      expect_linear(*l.k, d, int64_t{c.num_kv_heads} * c.head_dim);
      expect_linear(*l.v, d, int64_t{c.num_kv_heads} * c.head_dim);
      expect_linear(*l.o, int64_t{c.num_heads} * c.head_dim, d);
      expect_linear(*l.gate, d, c.intermediate_size);
      expect_linear(*l.up, d, c.intermediate_size);
      expect_linear(*l.down, c.intermediate_size, d);
      layers_.push_back(l);
    }
    const bool tied = !has("lm_head.weight");  // the classifier reads the embedding matrix
    lm_head_ = add_linear("lm_head", false, false, tied ? &tensors_.at("model.embed_tokens.weight") : nullptr);
    config_.tie_word_embeddings = tied;
    expect_linear(*lm_head_, d, c.vocab_size);
  }

 public:
  void embed(const int32_t* tokens, int64_t n, int64_t /*pos0*/, float* hidden) const override {
    const int64_t d = config_.hidden_size;
    for (int64_t t = 0; t < n; ++t) std::memcpy(hidden + t * d, embed_ + int64_t{tokens[t]} * d, d * sizeof(float));
  }

  std::vector<std::vector<LinearSlot*>> block_linears(int i) override {
    check(i >= 0 && i < static_cast<int>(layers_.size()), "block_linears: block {} of a {}-block model", i,
          layers_.size());
    const Layer& l = layers_[i];
    return {{l.q, l.k, l.v}, {l.o}, {l.gate, l.up}, {l.down}};
  }

 private:
  int64_t block_scratch_per_row() const override {
    const ModelConfig& c = config_;
    const int64_t qdim = int64_t{c.num_heads} * c.head_dim, kvdim = int64_t{c.num_kv_heads} * c.head_dim;
    return c.hidden_size + 2 * qdim + 2 * c.intermediate_size + 2 * kvdim;
  }

  void block(int layer, const std::vector<SeqTokens>& seqs, float* x, int64_t n, float* work) const override {
    const ModelConfig& c = config_;
    const int64_t d = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
    const int64_t qdim = nh * hd, kvdim = nkv * hd, ff = c.intermediate_size;
    float* xb = work;
    float* q = xb + n * d;
    float* att = q + n * qdim;
    float* h1 = att + n * qdim;
    float* h2 = h1 + n * ff;
    float* kb = h2 + n * ff;
    float* vb = kb + n * kvdim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const Layer& l = layers_[static_cast<size_t>(layer)];
    ops::rmsnorm(x, l.attn_norm, c.norm_eps, n, d, xb);
    // Decode runs q/k/v (and below gate/up) in one parallel region (ops::linear_fused).
    ops::linear_fused(xb, n, {{l.q->impl.get(), q}, {l.k->impl.get(), kb}, {l.v->impl.get(), vb}});
    int64_t r = 0;  // first row of the sequence
    for (const SeqTokens& s : seqs) {
      KvCache& cache = *s.cache;
      for (int64_t t = r; t < r + s.n; ++t) {
        ops::rope(q + t * qdim, nh, hd, cache.pos + t - r, c.rope_theta, c.rope_interleaved);
        ops::rope(kb + t * kvdim, nkv, hd, cache.pos + t - r, c.rope_theta, c.rope_interleaved);
      }
      cache.store(layer, cache.pos, s.n, kb + r * kvdim, vb + r * kvdim, kvdim);
      cache.attend(layer, q + r * qdim, s.n, cache.pos, static_cast<int>(nh), scale, att + r * qdim);
      r += s.n;
    }
    ops::linear_fused(att, n, {{l.o->impl.get(), xb}});
    ops::add(x, xb, n * d);
    ops::rmsnorm(x, l.ffn_norm, c.norm_eps, n, d, xb);
    ops::linear_fused(xb, n, {{l.gate->impl.get(), h1}, {l.up->impl.get(), h2}});
    ops::swiglu(h1, h2, n * ff);
    ops::linear_fused(h1, n, {{l.down->impl.get(), xb}});
    ops::add(x, xb, n * d);
  }

  void head_rows(const float* x, int64_t n, float* logits, float* xb) const override {
    ops::rmsnorm(x, final_norm_, config_.norm_eps, n, config_.hidden_size, xb);
    ops::linear_fused(xb, n, {{lm_head_->impl.get(), logits}});
  }

  const float* embed_ = nullptr;
  const float* final_norm_ = nullptr;
  std::vector<Layer> layers_;
  LinearSlot* lm_head_ = nullptr;
};

}  // namespace

std::unique_ptr<Model> make_llama() {
  return std::make_unique<Llama>();
}

}  // namespace shrink::models
