// TrainableDecoder: the LLaMA forward of src/models/llama.cc on the autograd tape (checked against the engine's
// logits in tests/unit/test_train_decoder.cc), fresh or from a checkpoint, and saving as a LlamaForCausalLM dir.
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/formats/model_dir.h>
#include <shrink/formats/safetensors.h>
#include <shrink/train/decoder.h>

#include <cmath>
#include <cstring>
#include <random>

namespace shrink::train {

namespace {

std::string layer_prefix(int i) {
  return "model.layers." + std::to_string(i) + ".";
}

}  // namespace

Tensor interleaved_to_half_rope_rows(const Tensor& w, int64_t head_dim) {
  const Tensor src = w.to_f32();
  const int64_t rows = src.dim(0), cols = src.numel() / std::max<int64_t>(1, rows), half = head_dim / 2;
  check(head_dim > 0 && head_dim % 2 == 0 && rows % head_dim == 0,
        "RoPE row permutation: {} rows are not whole heads of an even head_dim {}", rows, head_dim);
  Tensor out = Tensor::empty(DType::F32, src.shape());
  for (int64_t h = 0; h < rows / head_dim; ++h)
    for (int64_t k = 0; k < half; ++k)
      for (int64_t part = 0; part < 2; ++part)
        std::memcpy(out.data<float>() + (h * head_dim + k + part * half) * cols,
                    src.data<float>() + (h * head_dim + 2 * k + part) * cols, cols * sizeof(float));
  return out;
}

void TrainableDecoder::check_config() const {
  const ModelConfig& c = config_;
  check(c.model_type == "llama" || c.architecture == "LlamaForCausalLM" || c.architecture == "MistralForCausalLM",
        "training: model '{}' ({}) is not a LLaMA-family decoder; expected LlamaForCausalLM", c.architecture,
        c.model_type);
  check(c.hidden_size > 0 && c.num_layers > 0 && c.num_heads > 0 && c.num_kv_heads > 0 && c.head_dim > 0 &&
            c.intermediate_size > 0 && c.vocab_size > 0,
        "training: LLaMA config with hidden {} layers {} heads {} kv heads {} head_dim {} ff {} vocab {}; expected "
        "all positive",
        c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size, c.vocab_size);
  check(c.num_heads % c.num_kv_heads == 0, "training: {} attention heads are not a multiple of {} KV heads",
        c.num_heads, c.num_kv_heads);
  check(c.head_dim % 2 == 0, "training: head_dim {} must be even for RoPE", c.head_dim);
}

std::vector<std::pair<std::string, Shape>> TrainableDecoder::expected_shapes() const {
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, ff = c.intermediate_size, q = int64_t{c.num_heads} * c.head_dim,
                kv = int64_t{c.num_kv_heads} * c.head_dim;
  std::vector<std::pair<std::string, Shape>> s;
  s.push_back({"model.embed_tokens.weight", {c.vocab_size, d}});
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = layer_prefix(i);
    s.push_back({p + "input_layernorm.weight", {d}});
    s.push_back({p + "self_attn.q_proj.weight", {q, d}});
    s.push_back({p + "self_attn.k_proj.weight", {kv, d}});
    s.push_back({p + "self_attn.v_proj.weight", {kv, d}});
    s.push_back({p + "self_attn.o_proj.weight", {d, q}});
    s.push_back({p + "post_attention_layernorm.weight", {d}});
    s.push_back({p + "mlp.gate_proj.weight", {ff, d}});
    s.push_back({p + "mlp.up_proj.weight", {ff, d}});
    s.push_back({p + "mlp.down_proj.weight", {d, ff}});
  }
  s.push_back({"model.norm.weight", {d}});
  if (!c.tie_word_embeddings) s.push_back({"lm_head.weight", {c.vocab_size, d}});
  return s;
}

TrainableDecoder::TrainableDecoder(ModelConfig config, uint64_t seed) : config_(std::move(config)) {
  if (config_.head_dim == 0 && config_.num_heads > 0) config_.head_dim = config_.hidden_size / config_.num_heads;
  if (config_.num_kv_heads == 0) config_.num_kv_heads = config_.num_heads;
  check_config();
  config_.rope_interleaved = false;
  std::mt19937 gen(static_cast<uint32_t>(seed));
  std::normal_distribution<float> nd(0.f, 0.02f);
  for (auto& [name, shape] : expected_shapes()) {
    Tensor t = Tensor::empty(DType::F32, shape);
    const bool norm = name.find("norm") != std::string::npos;
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = norm ? 1.f : nd(gen);
    p_[name] = parameter(std::move(t));
  }
}

TrainableDecoder::TrainableDecoder(ModelConfig config, const TensorMap& tensors) : config_(std::move(config)) {
  if (config_.head_dim == 0 && config_.num_heads > 0) config_.head_dim = config_.hidden_size / config_.num_heads;
  if (config_.num_kv_heads == 0) config_.num_kv_heads = config_.num_heads;
  check_config();
  config_.tie_word_embeddings = !tensors.count("lm_head.weight");
  const bool permute = config_.rope_interleaved;
  for (auto& [name, shape] : expected_shapes()) {
    auto it = tensors.find(name);
    check(it != tensors.end(),
          "training: checkpoint tensor '{}' is missing (expected shape {}); the checkpoint is not a LLaMA model of "
          "this config",
          name, shape_str(shape));
    check(it->second.shape() == shape, "training: checkpoint tensor '{}' has shape {}; expected {} from the config",
          name, shape_str(it->second.shape()), shape_str(shape));
    const bool qk = name.ends_with("self_attn.q_proj.weight") || name.ends_with("self_attn.k_proj.weight");
    p_[name] =
        parameter(permute && qk ? interleaved_to_half_rope_rows(it->second, config_.head_dim) : it->second.to_f32());
  }
  config_.rope_interleaved = false;
}

const Var& TrainableDecoder::param(const std::string& name) const {
  auto it = p_.find(name);
  check(it != p_.end(), "training: the decoder has no parameter '{}'", name);
  return it->second;
}

Var TrainableDecoder::lin(const std::string& slot, const Var& x) const {
  const Var& w =
      slot == "lm_head" && config_.tie_word_embeddings ? param("model.embed_tokens.weight") : param(slot + ".weight");
  return linear_hook ? linear_hook(slot, x, w, Var()) : linear(x, w, Var());
}

DecoderForward TrainableDecoder::forward(const std::vector<int32_t>& ids, int64_t batch, int64_t seq) const {
  const ModelConfig& c = config_;
  check(batch > 0 && seq > 0 && static_cast<int64_t>(ids.size()) == batch * seq,
        "decoder forward: {} ids for batch {} x seq {}", ids.size(), batch, seq);
  check(c.max_position_embeddings <= 0 || seq <= c.max_position_embeddings,
        "decoder forward: sequence of {} tokens; the model has a context of {}", seq, c.max_position_embeddings);
  std::vector<int32_t> pos(static_cast<size_t>(batch * seq));
  for (int64_t i = 0; i < batch * seq; ++i) pos[i] = static_cast<int32_t>(i % seq);
  const int nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim;
  DecoderForward out;
  Var h = embedding(ids, param("model.embed_tokens.weight"));
  out.hidden.push_back(h);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = layer_prefix(i);
    Var x = rms_norm(h, param(p + "input_layernorm.weight"), c.norm_eps);
    Var q = rope(lin(p + "self_attn.q_proj", x), pos, nh, hd, c.rope_theta, false);
    Var k = rope(lin(p + "self_attn.k_proj", x), pos, nkv, hd, c.rope_theta, false);
    Var v = lin(p + "self_attn.v_proj", x);
    Var a =
        attention(q, repeat_kv(k, nkv, hd, nh / nkv), repeat_kv(v, nkv, hd, nh / nkv), batch, seq, nh, hd, {}, true);
    h = add(h, lin(p + "self_attn.o_proj", a));
    x = rms_norm(h, param(p + "post_attention_layernorm.weight"), c.norm_eps);
    Var f = mul(silu(lin(p + "mlp.gate_proj", x)), lin(p + "mlp.up_proj", x));
    h = add(h, lin(p + "mlp.down_proj", f));
    out.hidden.push_back(h);
  }
  out.logits = lin("lm_head", rms_norm(h, param("model.norm.weight"), c.norm_eps));
  return out;
}

std::vector<NamedParam> TrainableDecoder::parameters() const {
  std::vector<NamedParam> v;
  for (auto& [name, var] : p_) v.push_back({name, var, name.find("norm") == std::string::npos});
  v.insert(v.end(), extra_parameters.begin(), extra_parameters.end());
  return v;
}

TensorMap TrainableDecoder::state() const {
  TensorMap m;
  for (auto& [name, var] : p_) m[name] = var.value().clone();
  return m;
}

int64_t TrainableDecoder::parameter_count() const {
  int64_t n = 0;
  for (auto& [name, var] : p_) n += var.numel();
  return n;
}

void TrainableDecoder::save(const std::filesystem::path& dir, const std::filesystem::path& tokenizer_file) const {
  std::filesystem::create_directories(dir);
  write_safetensors_model(dir, state(),
                          {{"format", "pt"},
                           {"shrink_format_version", std::to_string(kModelDirFormatVersion)},
                           {"shrink.trained", "llama"}});
  ModelConfig c = config_;
  c.architecture = c.architecture.empty() ? "LlamaForCausalLM" : c.architecture;
  nlohmann::json j = config_to_json(c);
  j["torch_dtype"] = "float32";
  const std::string cfg = j.dump(2) + "\n";
  AtomicFileWriter f(dir / "config.json");
  f.write(cfg.data(), cfg.size());
  f.commit();
  if (!tokenizer_file.empty()) {
    const std::string bytes = read_text_file(tokenizer_file);
    const auto name =
        tokenizer_file.extension() == ".bin" ? std::filesystem::path("tokenizer.bin") : tokenizer_file.filename();
    AtomicFileWriter t(dir / name);
    t.write(bytes.data(), bytes.size());
    t.commit();
  }
}

}  // namespace shrink::train
