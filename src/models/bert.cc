// BERT and DistilBERT encoders: embeddings + post-LayerNorm blocks over padded batches with key
// masks; BERT pooler (tanh) and ...ForSequenceClassification heads. Blocks may be structurally pruned: each layer
// runs the heads and FFN width its tensors hold (as config.json's pruned_heads / shrink_pruning record them).
#include <shrink/compress/prune.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/ops/ops.h>

#include <cmath>
#include <cstring>

#include "models/architectures.h"

namespace shrink::models {

namespace {

void apply_activation(const std::string& act, float* x, int64_t n) {
  if (act == "gelu" || act == "gelu_python") {
    ops::gelu_erf(x, n);
  } else if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") {
    ops::gelu_tanh(x, n);
  } else if (act == "relu") {
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.f ? x[i] : 0.f;
  } else if (act == "silu" || act == "swish") {
    ops::silu(x, n);
  } else {
    fail("hidden activation '{}' is not supported; supported: gelu, gelu_new, relu, silu", act);
  }
}

float tanh_of(float v) {
  return std::tanh(v);
}
float relu_of(float v) {
  return v > 0.f ? v : 0.f;
}

// Shared encoder block runner; BERT and DistilBERT differ only in names and the embedding/head.
class Encoder : public EncoderModel {
 protected:
  struct Layer {
    LinearSlot *q, *k, *v, *o, *ffn_in, *ffn_out;
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    int heads = 0;    // attention heads present (pruned layers have fewer; 0: the sublayer adds only o's bias)
    int64_t ffn = 0;  // FFN width (0: the sublayer adds only ffn_out's bias)
    std::vector<float> o_bias, ffn_out_bias;  // kept for a sublayer with nothing left to multiply
  };

  // Hugging Face names of one block's weights, relative to the block prefix.
  struct LayerNames {
    const char *q, *k, *v, *o, *ln1, *ffn_in, *ffn_out, *ln2;
  };

  void add_layer(const std::string& p, const LayerNames& n, const prune::EncoderShape& shape) {
    const int64_t d = config_.hidden_size;
    const size_t index = layers_.size();
    Layer l{};
    l.heads = static_cast<int>(shape.heads[index].size());
    l.ffn = shape.ffn[index];
    l.q = add_linear(p + n.q, true);
    l.k = add_linear(p + n.k, true);
    l.v = add_linear(p + n.v, true);
    l.o = add_linear(p + n.o, true);
    l.ln1_w = f32(p + n.ln1 + ".weight", {d});
    l.ln1_b = f32(p + n.ln1 + ".bias", {d});
    l.ffn_in = add_linear(p + n.ffn_in, true);
    l.ffn_out = add_linear(p + n.ffn_out, true);
    l.ln2_w = f32(p + n.ln2 + ".weight", {d});
    l.ln2_b = f32(p + n.ln2 + ".bias", {d});
    check_layer(l);
    auto bias_of = [&](const LinearSlot& s) {
      std::vector<float> b(static_cast<size_t>(d), 0.f);
      if (s.bias.defined() && s.bias.numel() == d) {
        const Tensor f = s.bias.to_f32();
        std::copy_n(f.data<float>(), d, b.data());
      }
      return b;
    };
    if (l.heads == 0) l.o_bias = bias_of(*l.o);
    if (l.ffn == 0) l.ffn_out_bias = bias_of(*l.ffn_out);
    max_ffn_ = std::max(max_ffn_, l.ffn);
    layers_.push_back(std::move(l));
  }

  // The head count and FFN width come from config.json (pruned_heads, shrink_pruning); the tensors must hold them.
  void check_layer(const Layer& l) const {
    const int64_t d = config_.hidden_size, a = int64_t{l.heads} * config_.head_dim, ff = l.ffn;
    expect_linear(*l.q, d, a);
    expect_linear(*l.k, d, a);
    expect_linear(*l.v, d, a);
    expect_linear(*l.o, a, d);
    expect_linear(*l.ffn_in, d, ff);
    expect_linear(*l.ffn_out, ff, d);
  }

  // Broadcasts a bias over rows (the output of a Linear with no inputs left).
  static void fill_rows(const std::vector<float>& bias, int64_t rows, float* y) {
    const int64_t d = static_cast<int64_t>(bias.size());
    for (int64_t r = 0; r < rows; ++r) std::copy_n(bias.data(), d, y + r * d);
  }

  // x: [rows][d] embeddings after their LayerNorm; runs every block in place.
  void run_blocks(float* x, const BatchEncoding& b) const {
    const ModelConfig& c = config_;
    const int64_t rows = b.batch * b.seq, d = c.hidden_size, ff = max_ffn_;
    // Activations live in per-thread buffers that only grow: fresh vectors per call cost a zero-fill and, at BERT
    // sizes (3 MiB), mmap page faults on every forward (measured ~1 ms of a 25 ms int8 forward).
    thread_local std::vector<float> scratch;
    const size_t need = static_cast<size_t>(rows * (5 * d + ff));
    if (scratch.size() < need) scratch.resize(need);
    float *q = scratch.data(), *k = q + rows * d, *v = k + rows * d, *att = v + rows * d, *tmp = att + rows * d,
          *h = tmp + rows * d;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    for (const Layer& l : layers_) {
      const int64_t a = int64_t{l.heads} * c.head_dim;  // attention width of this layer
      if (l.heads > 0) {
        l.q->impl->forward(x, rows, q);
        l.k->impl->forward(x, rows, k);
        l.v->impl->forward(x, rows, v);
        for (int64_t bi = 0; bi < b.batch; ++bi) {
          const int64_t off = bi * b.seq * a;
          ops::attention_masked(q + off, k + off, v + off, a, b.seq, b.attention_mask.data() + bi * b.seq, l.heads,
                                c.head_dim, scale, att + off);
        }
        l.o->impl->forward(att, rows, tmp);
      } else {
        fill_rows(l.o_bias, rows, tmp);
      }
      ops::add(tmp, x, rows * d);
      ops::layernorm(tmp, l.ln1_w, l.ln1_b, c.norm_eps, rows, d, x);
      if (l.ffn > 0) {
        l.ffn_in->impl->forward(x, rows, h);
        apply_activation(c.hidden_act, h, rows * l.ffn);
        l.ffn_out->impl->forward(h, rows, tmp);
      } else {
        fill_rows(l.ffn_out_bias, rows, tmp);
      }
      ops::add(tmp, x, rows * d);
      ops::layernorm(tmp, l.ln2_w, l.ln2_b, c.norm_eps, rows, d, x);
    }
  }

  // Per-layer heads and FFN widths from config.json; its errors name the config file.
  prune::EncoderShape layer_shape() const {
    try {
      return prune::encoder_shape(config_);
    } catch (const Error& e) {
      fail("{}: {}", source_.string(), e.what());
    }
  }

  void check_batch(const BatchEncoding& b) const {
    check(b.batch > 0 && b.seq > 0, "encoder input is empty (no texts or no tokens)");
    check(static_cast<int64_t>(b.ids.size()) == b.batch * b.seq &&
              static_cast<int64_t>(b.attention_mask.size()) == b.batch * b.seq,
          "encoder input: ids/attention_mask must hold batch x seq = {} x {} values", b.batch, b.seq);
    if (b.seq > config_.max_position_embeddings)
      fail("input of {} tokens exceeds the model's {} positions; truncate (e.g. --max-length {})", b.seq,
           config_.max_position_embeddings, config_.max_position_embeddings);
    for (int64_t i = 0; i < b.batch * b.seq; ++i)
      if (b.ids[i] < 0 || b.ids[i] >= config_.vocab_size)
        fail("token id {} (row {}, position {}) is outside the vocabulary of {} tokens", b.ids[i], i / b.seq, i % b.seq,
             config_.vocab_size);
  }

  // Hidden states [batch][seq][hidden]: word + position (+ token type) embeddings, their LayerNorm,
  // then every block. DistilBERT has no token types (type_ == nullptr).
  Tensor encode(const BatchEncoding& b) const {
    check_batch(b);
    const ModelConfig& c = config_;
    const int64_t d = c.hidden_size, rows = b.batch * b.seq;
    Tensor hidden = Tensor::empty(DType::F32, {b.batch, b.seq, d});
    float* x = hidden.data<float>();
    for (int64_t r = 0; r < rows; ++r) {
      const float* w = word_ + static_cast<int64_t>(b.ids[r]) * d;
      const float* p = pos_ + (r % b.seq) * d;
      const int32_t tt = b.type_ids.empty() ? 0 : b.type_ids[r];
      if (type_ && (tt < 0 || tt >= c.type_vocab_size))
        fail("token_type_id {} at row {} is outside [0, {})", tt, r / b.seq, c.type_vocab_size);
      const float* ty = type_ ? type_ + static_cast<int64_t>(tt) * d : nullptr;
      for (int64_t i = 0; i < d; ++i) x[r * d + i] = w[i] + p[i] + (ty ? ty[i] : 0.f);
    }
    ops::layernorm(x, emb_ln_w_, emb_ln_b_, c.norm_eps, rows, d, x);
    run_blocks(x, b);
    return hidden;
  }

  // The [CLS] (first) row of every sequence: [batch][hidden].
  std::vector<float> first_tokens(const float* x, const BatchEncoding& b) const {
    const int64_t d = config_.hidden_size;
    std::vector<float> cls(b.batch * d);
    for (int64_t bi = 0; bi < b.batch; ++bi) std::memcpy(&cls[bi * d], x + bi * b.seq * d, d * sizeof(float));
    return cls;
  }

  // The "classifier" Linear (hidden -> num_labels) of a ...ForSequenceClassification model.
  void add_classifier() {
    classifier_ = add_linear("classifier", true);
    expect_linear(*classifier_, config_.hidden_size, config_.num_labels);
  }

  // The head on the [CLS] rows of out.hidden: `dense` (hidden -> hidden) and `act` in place (BERT's pooler with
  // tanh, DistilBERT's pre_classifier with ReLU), then the classifier into out.logits when there is one. Returns the
  // activated rows [batch][hidden] (BERT's pooled output).
  Tensor head(const BatchEncoding& b, const LinearSlot& dense, float (*act)(float), EncoderOutput& out) const {
    const int64_t d = config_.hidden_size;
    const std::vector<float> cls = first_tokens(out.hidden.data<float>(), b);
    Tensor h = Tensor::empty(DType::F32, {b.batch, d});
    float* hp = h.data<float>();
    dense.impl->forward(cls.data(), b.batch, hp);
    for (int64_t i = 0; i < b.batch * d; ++i) hp[i] = act(hp[i]);
    if (classifier_) {
      out.logits = Tensor::empty(DType::F32, {b.batch, int64_t{config_.num_labels}});
      classifier_->impl->forward(hp, b.batch, out.logits.data<float>());
    }
    return h;
  }

  std::vector<Layer> layers_;
  int64_t max_ffn_ = 0;
  const float *word_ = nullptr, *pos_ = nullptr, *type_ = nullptr, *emb_ln_w_ = nullptr, *emb_ln_b_ = nullptr;
};

class Bert final : public Encoder {
  void init() override {
    const ModelConfig& c = config_;
    const int64_t d = c.hidden_size;
    p_ = detect_prefix(tensors_, "embeddings.word_embeddings.weight", {"bert.", ""});
    word_ = f32(p_ + "embeddings.word_embeddings.weight", {c.vocab_size, d});
    pos_ = f32(p_ + "embeddings.position_embeddings.weight", {c.max_position_embeddings, d});
    if (c.type_vocab_size > 0) type_ = f32(p_ + "embeddings.token_type_embeddings.weight", {c.type_vocab_size, d});
    emb_ln_w_ = f32(p_ + "embeddings.LayerNorm.weight", {d});
    emb_ln_b_ = f32(p_ + "embeddings.LayerNorm.bias", {d});
    const prune::EncoderShape shape = layer_shape();
    for (int i = 0; i < c.num_layers; ++i) {
      add_layer(p_ + "encoder.layer." + std::to_string(i) + ".",
                {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"},
                shape);
    }
    // The pooler may be stored dense, packed (W4: weight_packed; W8: weight is I8) or low-rank.
    const std::string pool = p_ + "pooler.dense";
    if (has(pool + ".weight") || has(pool + ".weight_packed") || has(pool + ".lowrank_A")) {
      pooler_ = add_linear(p_ + "pooler.dense", true);
      expect_linear(*pooler_, d, d);
    }
    if (config_.architecture == "BertForSequenceClassification") {
      check(pooler_ != nullptr,
            "{}: tensor '{}pooler.dense.weight' is missing (BertForSequenceClassification "
            "classifies the pooled [CLS] output)",
            source_.string(), p_);
      add_classifier();
    }
  }

 public:
  EncoderOutput forward(const BatchEncoding& b) const override {
    EncoderOutput out;
    out.hidden = encode(b);
    if (pooler_) out.pooled = head(b, *pooler_, tanh_of, out);
    return out;
  }

 private:
  std::string p_;
  LinearSlot* pooler_ = nullptr;
};

class DistilBert final : public Encoder {
  void init() override {
    const ModelConfig& c = config_;
    const int64_t d = c.hidden_size;
    p_ = detect_prefix(tensors_, "embeddings.word_embeddings.weight", {"distilbert.", ""});
    word_ = f32(p_ + "embeddings.word_embeddings.weight", {c.vocab_size, d});
    pos_ = f32(p_ + "embeddings.position_embeddings.weight", {c.max_position_embeddings, d});
    emb_ln_w_ = f32(p_ + "embeddings.LayerNorm.weight", {d});
    emb_ln_b_ = f32(p_ + "embeddings.LayerNorm.bias", {d});
    const prune::EncoderShape shape = layer_shape();
    for (int i = 0; i < c.num_layers; ++i) {
      add_layer(p_ + "transformer.layer." + std::to_string(i) + ".",
                {"attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "sa_layer_norm",
                 "ffn.lin1", "ffn.lin2", "output_layer_norm"},
                shape);
    }
    if (config_.architecture == "DistilBertForSequenceClassification") {
      pre_classifier_ = add_linear("pre_classifier", true);
      expect_linear(*pre_classifier_, d, d);
      add_classifier();
    }
  }

 public:
  EncoderOutput forward(const BatchEncoding& b) const override {
    EncoderOutput out;
    out.hidden = encode(b);
    if (classifier_) head(b, *pre_classifier_, relu_of, out);
    return out;
  }

 private:
  std::string p_;
  LinearSlot* pre_classifier_ = nullptr;
};

}  // namespace

std::unique_ptr<Model> make_bert() {
  return std::make_unique<Bert>();
}
std::unique_ptr<Model> make_distilbert() {
  return std::make_unique<DistilBert>();
}

}  // namespace shrink::models
