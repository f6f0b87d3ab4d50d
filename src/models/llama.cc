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
  void forward(KvCache& cache, const int32_t* tokens, int64_t n, float* logits, bool all_logits) const override {
    const ModelConfig& c = config_;
    check_forward(cache, tokens, n);
    const int64_t d = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
    const int64_t qdim = nh * hd, kvdim = nkv * hd, ff = c.intermediate_size;
    const size_t need = static_cast<size_t>(n) * (2 * d + 2 * qdim + 2 * ff + 2 * kvdim);
    if (cache.scratch.size() < need) cache.scratch.resize(need);
    float* x = cache.scratch.data();
    float* xb = x + n * d;
    float* q = xb + n * d;
    float* att = q + n * qdim;
    float* h1 = att + n * qdim;
    float* h2 = h1 + n * ff;
    float* kb = h2 + n * ff;
    float* vb = kb + n * kvdim;

    for (int64_t t = 0; t < n; ++t) std::memcpy(x + t * d, embed_ + int64_t{tokens[t]} * d, d * sizeof(float));
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    for (size_t li = 0; li < layers_.size(); ++li) {
      const Layer& l = layers_[li];
      const int layer = static_cast<int>(li);
      ops::rmsnorm(x, l.attn_norm, c.norm_eps, n, d, xb);
      // Decode runs q/k/v (and below gate/up) in one parallel region (ops::linear_fused).
      ops::linear_fused(xb, n, {{l.q->impl.get(), q}, {l.k->impl.get(), kb}, {l.v->impl.get(), vb}});
      for (int64_t t = 0; t < n; ++t) {
        ops::rope(q + t * qdim, nh, hd, cache.pos + t, c.rope_theta, c.rope_interleaved);
        ops::rope(kb + t * kvdim, nkv, hd, cache.pos + t, c.rope_theta, c.rope_interleaved);
      }
      cache.store(layer, cache.pos, n, kb, vb, kvdim);
      cache.attend(layer, q, n, cache.pos, static_cast<int>(nh), scale, att);
      ops::linear_fused(att, n, {{l.o->impl.get(), xb}});
      ops::add(x, xb, n * d);
      ops::rmsnorm(x, l.ffn_norm, c.norm_eps, n, d, xb);
      ops::linear_fused(xb, n, {{l.gate->impl.get(), h1}, {l.up->impl.get(), h2}});
      ops::swiglu(h1, h2, n * ff);
      ops::linear_fused(h1, n, {{l.down->impl.get(), xb}});
      ops::add(x, xb, n * d);
    }
    cache.pos += n;
    if (all_logits) {
      ops::rmsnorm(x, final_norm_, c.norm_eps, n, d, xb);
      ops::linear_fused(xb, n, {{lm_head_->impl.get(), logits}});
    } else {
      ops::rmsnorm(x + (n - 1) * d, final_norm_, c.norm_eps, 1, d, xb);
      ops::linear_fused(xb, 1, {{lm_head_->impl.get(), logits}});
    }
  }

 private:
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
