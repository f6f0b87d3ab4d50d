// TrainableEncoder: BERT / DistilBERT classifiers on the autograd tape with Hugging Face names, computing exactly
// what the inference engine's BertForSequenceClassification / DistilBertForSequenceClassification compute
// (post-LayerNorm blocks, erf GELU, [CLS] pooling; checked in tests/unit/test_train_encoder.cc), including
// structurally pruned blocks (per-layer heads and FFN widths from config.json, as the engine runs them).
#include <shrink/compress/prune.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/formats/safetensors.h>
#include <shrink/train/encoder.h>

#include <cmath>

namespace shrink::train {

namespace {

std::string layer_prefix(bool bert, const std::string& pre, int i) {
  return pre + (bert ? "encoder.layer." : "transformer.layer.") + std::to_string(i) + ".";
}

bool is_head(const std::string& name) {
  return name.starts_with("classifier") || name.starts_with("pre_classifier") || name.starts_with("bert.pooler");
}

bool is_no_decay(const std::string& name) {
  return name.ends_with(".bias") || name.find("LayerNorm") != std::string::npos ||
         name.find("layer_norm") != std::string::npos || name.find("layernorm") != std::string::npos ||
         name.find("cls_token") != std::string::npos || name.find("position_embeddings") != std::string::npos;
}

}  // namespace

std::vector<std::pair<std::string, Shape>> TrainableEncoder::expected_shapes() const {
  const int64_t d = config_.hidden_size, V = config_.vocab_size;
  std::vector<std::pair<std::string, Shape>> s;
  auto lin = [&](const std::string& n, int64_t out, int64_t in) {
    s.push_back({n + ".weight", {out, in}});
    s.push_back({n + ".bias", {out}});
  };
  auto ln = [&](const std::string& n) {
    s.push_back({n + ".weight", {d}});
    s.push_back({n + ".bias", {d}});
  };
  if (vit_) {
    const int64_t p = config_.patch_size, c = config_.num_channels,
                  n = int64_t{config_.image_size / p} * (config_.image_size / p);
    s.push_back({"vit.embeddings.cls_token", {1, 1, d}});
    s.push_back({"vit.embeddings.position_embeddings", {1, n + 1, d}});
    s.push_back({"vit.embeddings.patch_embeddings.projection.weight", {d, c, p, p}});
    s.push_back({"vit.embeddings.patch_embeddings.projection.bias", {d}});
    for (int i = 0; i < config_.num_layers; ++i) {
      const std::string l = "vit.encoder.layer." + std::to_string(i) + ".";
      const int64_t a = attention_width(i), ff = ffn_[i];
      ln(l + "layernorm_before");
      lin(l + "attention.attention.query", a, d), lin(l + "attention.attention.key", a, d);
      lin(l + "attention.attention.value", a, d), lin(l + "attention.output.dense", d, a);
      ln(l + "layernorm_after");
      lin(l + "intermediate.dense", ff, d), lin(l + "output.dense", d, ff);
    }
    ln("vit.layernorm");
    lin("classifier", config_.num_labels, d);
    return s;
  }
  s.push_back({pre_ + "embeddings.word_embeddings.weight", {V, d}});
  s.push_back({pre_ + "embeddings.position_embeddings.weight", {config_.max_position_embeddings, d}});
  if (bert_) s.push_back({pre_ + "embeddings.token_type_embeddings.weight", {std::max(1, config_.type_vocab_size), d}});
  ln(pre_ + "embeddings.LayerNorm");
  for (int i = 0; i < config_.num_layers; ++i) {
    const std::string l = layer_prefix(bert_, pre_, i);
    const int64_t a = attention_width(i), ff = ffn_[i];
    if (bert_) {
      lin(l + "attention.self.query", a, d), lin(l + "attention.self.key", a, d);
      lin(l + "attention.self.value", a, d), lin(l + "attention.output.dense", d, a);
      ln(l + "attention.output.LayerNorm");
      lin(l + "intermediate.dense", ff, d), lin(l + "output.dense", d, ff);
      ln(l + "output.LayerNorm");
    } else {
      lin(l + "attention.q_lin", a, d), lin(l + "attention.k_lin", a, d);
      lin(l + "attention.v_lin", a, d), lin(l + "attention.out_lin", d, a);
      ln(l + "sa_layer_norm");
      lin(l + "ffn.lin1", ff, d), lin(l + "ffn.lin2", d, ff);
      ln(l + "output_layer_norm");
    }
  }
  if (bert_)
    lin("bert.pooler.dense", d, d);
  else
    lin("pre_classifier", d, d);
  lin("classifier", config_.num_labels, d);
  return s;
}

void TrainableEncoder::set_family() {
  const std::string& t = config_.model_type;
  check(t == "bert" || t == "distilbert" || t == "vit",
        "training: model_type '{}' is not a trainable encoder; expected bert, distilbert or vit", t);
  check(config_.num_labels > 0, "training: num_labels is {}; a classifier needs at least one label",
        config_.num_labels);
  bert_ = t == "bert";
  vit_ = t == "vit";
  pre_ = vit_ ? "vit." : bert_ ? "bert." : "distilbert.";
  if (vit_)
    check(config_.patch_size > 0 && config_.image_size > 0 && config_.num_channels > 0 &&
              config_.image_size % config_.patch_size == 0,
          "training: ViT image_size {} / patch_size {} / num_channels {}; expected positive sizes with the patch "
          "dividing the image",
          config_.image_size, config_.patch_size, config_.num_channels);
  check(config_.num_heads > 0, "training: {} attention heads; expected at least one", config_.num_heads);
  if (config_.head_dim <= 0) config_.head_dim = config_.hidden_size / config_.num_heads;
  const prune::EncoderShape shape = prune::encoder_shape(config_);
  heads_.clear();
  for (const auto& ids : shape.heads) heads_.push_back(static_cast<int>(ids.size()));
  ffn_ = shape.ffn;
}

int64_t TrainableEncoder::attention_width(int layer) const {
  return int64_t{heads_[layer]} * config_.head_dim;
}

Var TrainableEncoder::sublayer_bias(const Var& h, const std::string& bias) const {
  const int64_t d = config_.hidden_size;
  // A Linear whose inputs were all pruned: only its bias remains, broadcast over the rows (gradient to the bias).
  return linear(h, constant(Tensor::zeros(DType::F32, {d, h.dim(1)})), at(bias));
}

TrainableEncoder::TrainableEncoder(ModelConfig config, uint64_t seed) : config_(std::move(config)) {
  set_family();
  init_fresh(seed, false);
}

TrainableEncoder::TrainableEncoder(ModelConfig config, const TensorMap& tensors, uint64_t seed)
    : config_(std::move(config)) {
  set_family();
  for (auto& [name, shape] : expected_shapes()) {
    auto it = tensors.find(name);
    const bool head = is_head(name);
    if (it == tensors.end()) {
      check(head,
            "training: checkpoint tensor '{}' is missing (expected shape {}); the checkpoint is not a {} model "
            "of this config",
            name, shape_str(shape), config_.model_type);
      continue;
    }
    check(it->second.shape() == shape, "training: checkpoint tensor '{}' has shape {}; expected {} from config.json",
          name, shape_str(it->second.shape()), shape_str(shape));
    p_[name] = parameter(it->second.to_f32());
  }
  init_fresh(seed, true);
}

void TrainableEncoder::init_fresh(uint64_t seed, bool only_missing) {
  std::mt19937 gen(static_cast<uint32_t>(seed));
  std::normal_distribution<float> nd(0.f, 0.02f);
  for (auto& [name, shape] : expected_shapes()) {
    if (only_missing && p_.count(name)) continue;
    Tensor t = Tensor::empty(DType::F32, shape);
    float* d = t.data<float>();
    const bool norm = (name.find("LayerNorm") != std::string::npos || name.find("layer_norm") != std::string::npos ||
                       name.find("layernorm") != std::string::npos) &&
                      name.ends_with(".weight");
    for (int64_t i = 0; i < t.numel(); ++i) d[i] = name.ends_with(".bias") ? 0.f : norm ? 1.f : nd(gen);
    p_[name] = parameter(std::move(t));
  }
}

const Var& TrainableEncoder::at(const std::string& name) const {
  auto it = p_.find(name);
  check(it != p_.end(), "training: no parameter '{}'", name);
  return it->second;
}

EncoderForward TrainableEncoder::forward(const EncoderBatch& b, bool training, std::mt19937& rng) const {
  if (vit_) return forward_vit(b, training, rng);
  const int64_t B = b.batch, T = b.seq;
  check(B > 0 && T > 0 && static_cast<int64_t>(b.ids.size()) == B * T, "training forward: {} ids for batch {} x seq {}",
        b.ids.size(), B, T);
  check(T <= config_.max_position_embeddings, "training forward: sequence of {} tokens; the model has {} positions", T,
        config_.max_position_embeddings);
  const float eps = config_.norm_eps;
  const float p = training ? dropout : 0.f;
  auto drop = [&](const Var& x) { return p > 0.f ? train::dropout(x, p, rng) : x; };
  std::vector<int32_t> pos(B * T);
  for (int64_t i = 0; i < B * T; ++i) pos[i] = static_cast<int32_t>(i % T);
  Var h = add(embedding(b.ids, at(pre_ + "embeddings.word_embeddings.weight")),
              embedding(pos, at(pre_ + "embeddings.position_embeddings.weight")));
  if (bert_) {
    std::vector<int32_t> types = b.type_ids.empty() ? std::vector<int32_t>(B * T, 0) : b.type_ids;
    h = add(h, embedding(types, at(pre_ + "embeddings.token_type_embeddings.weight")));
  }
  h = drop(layer_norm(h, at(pre_ + "embeddings.LayerNorm.weight"), at(pre_ + "embeddings.LayerNorm.bias"), eps));
  EncoderForward out;
  out.hidden.push_back(h);
  const int hd = config_.head_dim;
  auto L = [&](const std::string& n, const Var& x) { return lin(n, x, at(n + ".weight"), at(n + ".bias")); };
  auto LN = [&](const std::string& n, const Var& x) { return layer_norm(x, at(n + ".weight"), at(n + ".bias"), eps); };
  for (int i = 0; i < config_.num_layers; ++i) {
    const std::string l = layer_prefix(bert_, pre_, i);
    const std::string q = l + (bert_ ? "attention.self.query" : "attention.q_lin"),
                      k = l + (bert_ ? "attention.self.key" : "attention.k_lin"),
                      v = l + (bert_ ? "attention.self.value" : "attention.v_lin"),
                      o = l + (bert_ ? "attention.output.dense" : "attention.out_lin"),
                      ln1 = l + (bert_ ? "attention.output.LayerNorm" : "sa_layer_norm"),
                      f1 = l + (bert_ ? "intermediate.dense" : "ffn.lin1"),
                      f2 = l + (bert_ ? "output.dense" : "ffn.lin2"),
                      ln2 = l + (bert_ ? "output.LayerNorm" : "output_layer_norm");
    Var a = heads_[i] > 0 ? L(o, attention(L(q, h), L(k, h), L(v, h), B, T, heads_[i], hd, b.mask, false))
                          : sublayer_bias(h, o + ".bias");
    h = LN(ln1, add(h, drop(a)));
    Var f = ffn_[i] > 0 ? L(f2, gelu(L(f1, h))) : sublayer_bias(h, f2 + ".bias");
    h = LN(ln2, add(h, drop(f)));
    out.hidden.push_back(h);
  }
  std::vector<int64_t> cls(B);
  for (int64_t i = 0; i < B; ++i) cls[i] = i * T;
  Var pooled = rows(h, cls);
  pooled = bert_ ? tanh(L("bert.pooler.dense", pooled)) : relu(L("pre_classifier", pooled));
  out.logits = L("classifier", drop(pooled));
  return out;
}

EncoderForward TrainableEncoder::forward_vit(const EncoderBatch& b, bool training, std::mt19937& rng) const {
  const int64_t B = b.batch, d = config_.hidden_size, p = config_.patch_size, c = config_.num_channels;
  const int64_t n = int64_t{config_.image_size / config_.patch_size} * (config_.image_size / config_.patch_size);
  const int64_t pix = c * p * p;
  check(B > 0 && static_cast<int64_t>(b.patches.size()) == B * n * pix,
        "training forward (ViT): {} patch values for batch {}; expected batch x {} patches x {} values",
        b.patches.size(), B, n, pix);
  const float eps = config_.norm_eps;
  const float pd = training ? dropout : 0.f;
  auto drop = [&](const Var& x) { return pd > 0.f ? train::dropout(x, pd, rng) : x; };
  auto L = [&](const std::string& nm, const Var& x) { return lin(nm, x, at(nm + ".weight"), at(nm + ".bias")); };
  auto LN = [&](const std::string& nm, const Var& x) {
    return layer_norm(x, at(nm + ".weight"), at(nm + ".bias"), eps);
  };
  Var x = constant(Tensor::from_f32(b.patches, {B * n, pix}));
  const Var& pw = at("vit.embeddings.patch_embeddings.projection.weight");
  Var h = lin("vit.embeddings.patch_embeddings.projection", x, reshape(pw, {d, pix}),
              at("vit.embeddings.patch_embeddings.projection.bias"));
  h = drop(prepend_cls_add_pos(h, at("vit.embeddings.cls_token"), at("vit.embeddings.position_embeddings"), B, n));
  const int64_t T = n + 1;
  const int hd = config_.head_dim;
  EncoderForward out;
  out.hidden.push_back(h);
  for (int i = 0; i < config_.num_layers; ++i) {
    const std::string l = "vit.encoder.layer." + std::to_string(i) + ".";
    Var a_in = LN(l + "layernorm_before", h);
    Var a = heads_[i] > 0
                ? L(l + "attention.output.dense",
                    attention(L(l + "attention.attention.query", a_in), L(l + "attention.attention.key", a_in),
                              L(l + "attention.attention.value", a_in), B, T, heads_[i], hd, {}, false))
                : sublayer_bias(a_in, l + "attention.output.dense.bias");
    h = add(h, drop(a));
    Var f_in = LN(l + "layernorm_after", h);
    Var f = ffn_[i] > 0 ? L(l + "output.dense", gelu(L(l + "intermediate.dense", f_in)))
                        : sublayer_bias(f_in, l + "output.dense.bias");
    h = add(h, drop(f));
    out.hidden.push_back(h);
  }
  std::vector<int64_t> cls(B);
  for (int64_t i = 0; i < B; ++i) cls[i] = i * T;
  out.logits = L("classifier", LN("vit.layernorm", rows(h, cls)));
  return out;
}

Var TrainableEncoder::lin(const std::string& slot, const Var& x, const Var& w, const Var& b) const {
  return linear_hook ? linear_hook(slot, x, w, b) : linear(x, w, b);
}

std::vector<NamedParam> TrainableEncoder::parameters() const {
  std::vector<NamedParam> v;
  for (auto& [name, var] : p_) v.push_back({name, var, !is_no_decay(name)});
  v.insert(v.end(), extra_parameters.begin(), extra_parameters.end());
  return v;
}

TensorMap TrainableEncoder::state() const {
  TensorMap m;
  for (auto& [name, var] : p_) m[name] = var.value().clone();
  return m;
}

void TrainableEncoder::save(const std::filesystem::path& dir, const std::filesystem::path& tokenizer_file) const {
  std::filesystem::create_directories(dir);
  write_safetensors_model(dir, state(), {{"format", "pt"}, {"shrink.trained", config_.model_type}});
  // The engine's config writer knows the text families; a ViT config is written as built (HF ViTConfig fields).
  const std::string cfg = (vit_ ? config_.raw : config_to_json(config_)).dump(2);
  AtomicFileWriter f(dir / "config.json");
  f.write(cfg.data(), cfg.size());
  f.commit();
  if (!tokenizer_file.empty()) {
    const std::string text = read_text_file(tokenizer_file);
    AtomicFileWriter t(dir / tokenizer_file.filename());
    t.write(text.data(), text.size());
    t.commit();
  }
}

}  // namespace shrink::train
