// GPT-2 decoder: learned positions, pre-LayerNorm blocks, fused Conv1D QKV, gelu_new MLP, lm_head
// tied to the token embedding.
#include <shrink/core/error.h>
#include <shrink/ops/ops.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "models/architectures.h"

namespace shrink::models {

namespace {

class Gpt2 final : public DecoderModel {
  struct Layer {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    LinearSlot *qkv, *proj, *fc, *fc_proj;
  };

  void init() override {
    ModelConfig& c = config_;
    const int64_t d = c.hidden_size;
    p_ = detect_prefix(tensors_, "wte.weight", {"transformer.", ""});
    wte_ = f32(p_ + "wte.weight", {c.vocab_size, d});
    wpe_ = f32(p_ + "wpe.weight", {c.max_position_embeddings, d});
    lnf_w_ = f32(p_ + "ln_f.weight", {d});
    lnf_b_ = f32(p_ + "ln_f.bias", {d});
    for (int i = 0; i < c.num_layers; ++i) {
      const std::string p = p_ + "h." + std::to_string(i) + ".";
      Layer l{};
      l.ln1_w = f32(p + "ln_1.weight", {d});
      l.ln1_b = f32(p + "ln_1.bias", {d});
      l.ln2_w = f32(p + "ln_2.weight", {d});
      l.ln2_b = f32(p + "ln_2.bias", {d});
      l.qkv = add_linear(p + "attn.c_attn", true, true);
      l.proj = add_linear(p + "attn.c_proj", true, true);
      l.fc = add_linear(p + "mlp.c_fc", true, true);
      l.fc_proj = add_linear(p + "mlp.c_proj", true, true);
      expect_linear(*l.qkv, d, 3 * d);
      expect_linear(*l.proj, d, d);
      expect_linear(*l.fc, d, c.intermediate_size);
      expect_linear(*l.fc_proj, c.intermediate_size, d);
      layers_.push_back(l);
    }
    lm_head_ = add_linear("lm_head", false, false, has("lm_head.weight") ? nullptr : &tensors_.at(p_ + "wte.weight"));
    expect_linear(*lm_head_, d, c.vocab_size);
  }

 public:
  void embed(const int32_t* tokens, int64_t n, int64_t pos0, float* hidden) const override {
    const int64_t d = config_.hidden_size;
    for (int64_t t = 0; t < n; ++t) {
      const float* e = wte_ + int64_t{tokens[t]} * d;
      const float* pe = wpe_ + (pos0 + t) * d;
      for (int64_t i = 0; i < d; ++i) hidden[t * d + i] = e[i] + pe[i];
    }
  }

  std::vector<std::vector<LinearSlot*>> block_linears(int i) override {
    check(i >= 0 && i < static_cast<int>(layers_.size()), "block_linears: block {} of a {}-block model", i,
          layers_.size());
    const Layer& l = layers_[i];
    return {{l.qkv}, {l.proj}, {l.fc}, {l.fc_proj}};
  }

 private:
  int64_t block_scratch_per_row() const override {
    const int64_t d = config_.hidden_size;
    return 5 * d + std::max<int64_t>(config_.intermediate_size, d);
  }

  void block(int layer, const std::vector<SeqTokens>& seqs, float* x, int64_t n, float* work) const override {
    const ModelConfig& c = config_;
    const int64_t d = c.hidden_size, hd = c.head_dim, nh = c.num_heads, ff = c.intermediate_size;
    float* xb = work;
    float* att = xb + n * d;
    float* qkv = att + n * d;
    float* h = qkv + 3 * n * d;
    float* q = h;  // q is copied out of qkv before h is used
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const Layer& l = layers_[static_cast<size_t>(layer)];
    ops::layernorm(x, l.ln1_w, l.ln1_b, c.norm_eps, n, d, xb);
    // Decode-sized calls go through ops::linear_fused: one region each, outputs handed out dynamically.
    ops::linear_fused(xb, n, {{l.qkv->impl.get(), qkv}});
    for (int64_t t = 0; t < n; ++t) std::memcpy(q + t * d, qkv + t * 3 * d, d * sizeof(float));
    int64_t r = 0;  // first row of the sequence
    for (const SeqTokens& s : seqs) {
      KvCache& cache = *s.cache;
      cache.store(layer, cache.pos, s.n, qkv + r * 3 * d + d, qkv + r * 3 * d + 2 * d, 3 * d);
      cache.attend(layer, q + r * d, s.n, cache.pos, static_cast<int>(nh), scale, att + r * d);
      r += s.n;
    }
    ops::linear_fused(att, n, {{l.proj->impl.get(), xb}});
    ops::add(x, xb, n * d);
    ops::layernorm(x, l.ln2_w, l.ln2_b, c.norm_eps, n, d, xb);
    ops::linear_fused(xb, n, {{l.fc->impl.get(), h}});
    ops::gelu_tanh(h, n * ff);
    ops::linear_fused(h, n, {{l.fc_proj->impl.get(), xb}});
    ops::add(x, xb, n * d);
  }

  void head_rows(const float* x, int64_t n, float* logits, float* xb) const override {
    ops::layernorm(x, lnf_w_, lnf_b_, config_.norm_eps, n, config_.hidden_size, xb);
    ops::linear_fused(xb, n, {{lm_head_->impl.get(), logits}});
  }

  std::string p_;
  const float *wte_ = nullptr, *wpe_ = nullptr, *lnf_w_ = nullptr, *lnf_b_ = nullptr;
  std::vector<Layer> layers_;
  LinearSlot* lm_head_ = nullptr;
};

}  // namespace

std::unique_ptr<Model> make_gpt2() {
  return std::make_unique<Gpt2>();
}

}  // namespace shrink::models
