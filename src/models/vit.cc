// ViT image classifiers (Hugging Face ViTForImageClassification): patch projection (a convolution with stride =
// kernel = patch, i.e. a Linear over flattened [channel][row][col] patches), [CLS] token, learned positions,
// pre-LayerNorm blocks, final LayerNorm, classifier on [CLS]. What src/train/encoder.cc trains. Blocks may be
// structurally pruned: each layer runs the heads and FFN width config.json records (pruned_heads, shrink_pruning).
#include <shrink/compress/prune.h>
#include <shrink/core/error.h>
#include <shrink/ops/ops.h>

#include <cmath>
#include <cstring>

#include "models/architectures.h"

namespace shrink::models {

namespace {

class Vit final : public EncoderModel {
  struct Layer {
    LinearSlot *q, *k, *v, *o, *ffn_in, *ffn_out;
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    int heads = 0;    // attention heads present (0: the attention sublayer adds only o's bias)
    int64_t ffn = 0;  // FFN width (0: the FFN sublayer adds only ffn_out's bias)
  };

  // x[r] += the bias of `s` for every row: the output of a Linear whose inputs were all pruned.
  static void add_bias_rows(const LinearSlot& s, int64_t rows, int64_t d, float* x) {
    if (!s.bias.defined() || s.bias.numel() != d) return;
    const Tensor b = s.bias.to_f32();
    for (int64_t r = 0; r < rows; ++r) ops::add(x + r * d, b.data<float>(), d);
  }

  void init() override {
    const ModelConfig& c = config_;
    const int64_t d = c.hidden_size, p = c.patch_size, ch = c.num_channels;
    n_patches_ = int64_t{c.image_size / c.patch_size} * (c.image_size / c.patch_size);
    p_ = detect_prefix(tensors_, "embeddings.cls_token", {"vit.", ""});
    cls_ = f32(p_ + "embeddings.cls_token", {1, 1, d});
    pos_ = f32(p_ + "embeddings.position_embeddings", {1, n_patches_ + 1, d});
    // The convolution kernel [d, c, p, p] is the patch Linear's [d, c*p*p] weight.
    const std::string pw = p_ + "embeddings.patch_embeddings.projection.weight";
    check(has(pw), "{}: tensor '{}' is missing (ViTForImageClassification)", source_.string(), pw);
    check(tensors_.at(pw).shape() == Shape{d, ch, p, p}, "{}: tensor '{}' has shape {}; expected {} from config.json",
          source_.string(), pw, shape_str(tensors_.at(pw).shape()), shape_str(Shape{d, ch, p, p}));
    patch_weight_ = tensors_.at(pw).reshape({d, ch * p * p});
    patch_ = add_linear(p_ + "embeddings.patch_embeddings.projection", true, false, &patch_weight_);
    expect_linear(*patch_, ch * p * p, d);
    prune::EncoderShape shape;
    try {
      shape = prune::encoder_shape(c);
    } catch (const Error& e) {
      fail("{}: {}", source_.string(), e.what());
    }
    for (int i = 0; i < c.num_layers; ++i) {
      const std::string l = p_ + "encoder.layer." + std::to_string(i) + ".";
      Layer y{};
      y.heads = static_cast<int>(shape.heads[i].size());
      y.ffn = shape.ffn[i];
      y.q = add_linear(l + "attention.attention.query", true);
      y.k = add_linear(l + "attention.attention.key", true);
      y.v = add_linear(l + "attention.attention.value", true);
      y.o = add_linear(l + "attention.output.dense", true);
      y.ffn_in = add_linear(l + "intermediate.dense", true);
      y.ffn_out = add_linear(l + "output.dense", true);
      const int64_t a = int64_t{y.heads} * c.head_dim;
      for (LinearSlot* s : {y.q, y.k, y.v}) expect_linear(*s, d, a);
      expect_linear(*y.o, a, d);
      expect_linear(*y.ffn_in, d, y.ffn);
      expect_linear(*y.ffn_out, y.ffn, d);
      y.ln1_w = f32(l + "layernorm_before.weight", {d});
      y.ln1_b = f32(l + "layernorm_before.bias", {d});
      y.ln2_w = f32(l + "layernorm_after.weight", {d});
      y.ln2_b = f32(l + "layernorm_after.bias", {d});
      layers_.push_back(y);
    }
    ln_w_ = f32(p_ + "layernorm.weight", {d});
    ln_b_ = f32(p_ + "layernorm.bias", {d});
    check(c.hidden_act == "gelu" || c.hidden_act == "gelu_new" || c.hidden_act == "gelu_pytorch_tanh",
          "{}: ViT hidden_act '{}' is not supported; supported: gelu, gelu_new, gelu_pytorch_tanh", source_.string(),
          c.hidden_act);
    gelu_tanh_ = c.hidden_act != "gelu";
    if (has("classifier.weight")) {
      classifier_ = add_linear("classifier", true);
      expect_linear(*classifier_, d, c.num_labels);
    }
  }

 public:
  EncoderOutput forward(const BatchEncoding&) const override {
    fail(
        "{} is an image classifier (ViTForImageClassification); it takes images, not text (e.g. --images DIR of "
        "IDX files)",
        source_.string());
  }

  EncoderOutput forward_images(const float* pixels, int64_t B) const override {
    const ModelConfig& c = config_;
    check(B > 0 && pixels != nullptr, "ViT input is empty (no images)");
    const int64_t d = c.hidden_size, p = c.patch_size, ch = c.num_channels, side = c.image_size, per_row = side / p,
                  pix = ch * p * p, T = n_patches_ + 1, rows = B * T, ff = c.intermediate_size;
    // Patches in the convolution's [channel][row][col] order.
    std::vector<float> patches(static_cast<size_t>(B * n_patches_ * pix));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t n = 0; n < n_patches_; ++n) {
        float* dst = patches.data() + (b * n_patches_ + n) * pix;
        const int64_t py = n / per_row, px = n % per_row;
        for (int64_t cc = 0; cc < ch; ++cc)
          for (int64_t y = 0; y < p; ++y)
            std::memcpy(dst + (cc * p + y) * p, pixels + ((b * ch + cc) * side + py * p + y) * side + px * p,
                        p * sizeof(float));
      }
    std::vector<float> emb(static_cast<size_t>(B * n_patches_ * d));
    patch_->impl->forward(patches.data(), B * n_patches_, emb.data());
    EncoderOutput out;
    out.hidden = Tensor::empty(DType::F32, {B, T, d});
    float* x = out.hidden.data<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        const float* src = t == 0 ? cls_ : emb.data() + (b * n_patches_ + t - 1) * d;
        for (int64_t i = 0; i < d; ++i) x[(b * T + t) * d + i] = src[i] + pos_[t * d + i];
      }
    std::vector<float> buf(static_cast<size_t>(rows * (5 * d + ff)));
    float *a = buf.data(), *q = a + rows * d, *k = q + rows * d, *v = k + rows * d, *att = v + rows * d,
          *h = att + rows * d;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    for (const Layer& l : layers_) {
      const int64_t aw = int64_t{l.heads} * c.head_dim;  // attention width of this (possibly pruned) layer
      if (l.heads > 0) {
        ops::layernorm(x, l.ln1_w, l.ln1_b, c.norm_eps, rows, d, a);
        l.q->impl->forward(a, rows, q);
        l.k->impl->forward(a, rows, k);
        l.v->impl->forward(a, rows, v);
        for (int64_t b = 0; b < B; ++b)
          ops::attention_masked(q + b * T * aw, k + b * T * aw, v + b * T * aw, aw, T, nullptr, l.heads, c.head_dim,
                                scale, att + b * T * aw);
        l.o->impl->forward(att, rows, a);
        ops::add(x, a, rows * d);
      } else {
        add_bias_rows(*l.o, rows, d, x);
      }
      if (l.ffn > 0) {
        ops::layernorm(x, l.ln2_w, l.ln2_b, c.norm_eps, rows, d, a);
        l.ffn_in->impl->forward(a, rows, h);
        if (gelu_tanh_)
          ops::gelu_tanh(h, rows * l.ffn);
        else
          ops::gelu_erf(h, rows * l.ffn);
        l.ffn_out->impl->forward(h, rows, a);
        ops::add(x, a, rows * d);
      } else {
        add_bias_rows(*l.ffn_out, rows, d, x);
      }
    }
    if (classifier_) {
      std::vector<float> cls(static_cast<size_t>(B * d));
      for (int64_t b = 0; b < B; ++b) ops::layernorm(x + b * T * d, ln_w_, ln_b_, c.norm_eps, 1, d, &cls[b * d]);
      out.logits = Tensor::empty(DType::F32, {B, int64_t{c.num_labels}});
      classifier_->impl->forward(cls.data(), B, out.logits.data<float>());
    }
    return out;
  }

 private:
  std::string p_;
  int64_t n_patches_ = 0;
  bool gelu_tanh_ = false;
  const float *cls_ = nullptr, *pos_ = nullptr, *ln_w_ = nullptr, *ln_b_ = nullptr;
  Tensor patch_weight_;
  LinearSlot* patch_ = nullptr;
  std::vector<Layer> layers_;
};

}  // namespace

std::unique_ptr<Model> make_vit() {
  return std::make_unique<Vit>();
}

}  // namespace shrink::models
