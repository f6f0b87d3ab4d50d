// Model base (slots, tensor access), the architecture registry and load_model.
#include <shrink/compress/lowrank.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/formats/config.h>
#include <shrink/formats/llama2c.h>
#include <shrink/formats/safetensors.h>
#include <shrink/models/model.h>
#include <shrink/ops/qlinear.h>

#include <cmath>
#include <functional>
#include <optional>
#include <set>

#include "models/architectures.h"

namespace shrink {

namespace {

using Factory = std::unique_ptr<Model> (*)();

const std::vector<std::pair<std::string, Factory>>& registry() {
  static const std::vector<std::pair<std::string, Factory>> r = {
      {"LlamaForCausalLM", models::make_llama},
      {"MistralForCausalLM", models::make_llama},
      {"GPT2LMHeadModel", models::make_gpt2},
      {"GPT2Model", models::make_gpt2},
      {"BertModel", models::make_bert},
      {"BertForSequenceClassification", models::make_bert},
      {"DistilBertModel", models::make_distilbert},
      {"DistilBertForSequenceClassification", models::make_distilbert},
      {"ViTForImageClassification", models::make_vit},
  };
  return r;
}

}  // namespace

EncoderOutput EncoderModel::forward_images(const float*, int64_t) const {
  fail("{} ({}) is a text encoder; it takes token ids, not images", source_.string(), config_.architecture);
}

LinearSlot* Model::find_linear(const std::string& name) {
  for (auto& s : linears_)
    if (s.name == name) return &s;
  return nullptr;
}

const Tokenizer& Model::require_tokenizer() const {
  if (!tokenizer_)
    fail(
        "{}: no tokenizer found beside the model (looked for tokenizer.json, tokenizer.model, vocab.txt, "
        "tokenizer.bin, "
        "vocab.json+merges.txt); pass --tokenizer FILE",
        source_.string());
  return *tokenizer_;
}

namespace {

// Checkpoint tensors that hold a slot loaded packed (counted through the slot, not element by element).
std::set<std::string> packed_tensor_names(const std::deque<LinearSlot>& linears) {
  std::set<std::string> names;
  for (auto& s : linears)
    for (const auto& [prefix, p] : packed_parts(s))
      for (auto& [n, t] : p->tensors) names.insert(prefix + "." + n);
  return names;
}

}  // namespace

int64_t Model::parameters() const {
  // A packed slot counts its weights (out x in) and bias, not its codes and scales.
  const std::set<std::string> packed = packed_tensor_names(linears_);
  int64_t n = 0;
  for (auto& [name, t] : tensors_)
    if (!packed.count(name)) n += t.numel();
  for (auto& s : linears_)
    for (const auto& [prefix, p] : packed_parts(s))
      if (tensors_.count(prefix + "." + p->tensors.front().first)) {
        n += p->out * p->in;
        if (const Tensor* b = p->find("bias")) n += b->numel();
      }
  return n;
}

size_t Model::weight_bytes() const {
  size_t b = 0;
  std::set<std::string> in_linears = packed_tensor_names(linears_);
  for (auto& s : linears_) {
    b += s.impl->weight_bytes();
    in_linears.insert(s.name + ".weight");
    in_linears.insert(s.name + ".bias");
    in_linears.insert(s.name + "." + kLowRankA);
    in_linears.insert(s.name + "." + kLowRankB);
  }
  for (auto& [name, t] : tensors_)
    if (!in_linears.count(name)) b += t.nbytes();
  return b;
}

const float* Model::f32(const std::string& name, const Shape& shape) {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    fail("{}: tensor '{}' is missing (architecture {}); the checkpoint is incomplete or not a {} model",
         source_.string(), name, config_.architecture, config_.model_type);
  const Tensor& t = it->second;
  if (!shape.empty() && t.shape() != shape)
    fail("{}: tensor '{}' has shape {}, expected {} from config.json", source_.string(), name, shape_str(t.shape()),
         shape_str(shape));
  if (t.dtype() != DType::F32 && t.dtype() != DType::F16 && t.dtype() != DType::BF16)
    fail("{}: tensor '{}' has dtype {}, expected a float type (F32, F16 or BF16)", source_.string(), name,
         dtype_name(t.dtype()));
  if (t.dtype() == DType::F32 && reinterpret_cast<uintptr_t>(t.raw()) % 4 == 0) return t.data<float>();
  owned_.push_back(t.to_f32());
  return owned_.back().data<float>();
}

namespace {

const nlohmann::json* quantized_layers(const nlohmann::json& config) {
  if (!config.is_object()) return nullptr;
  auto qc = config.find("quantization_config");
  if (qc == config.end() || !qc->is_object()) return nullptr;
  auto sh = qc->find("shrink");
  if (sh == qc->end() || !sh->is_object()) return nullptr;
  auto layers = sh->find("layers");
  if (layers == sh->end() || !layers->is_object()) return nullptr;
  return &*layers;
}

// The safetensors file of a directory that holds `slot`'s tensors: model.safetensors, or the shard the index maps
// one of them to.
std::filesystem::path safetensors_file_of(const std::filesystem::path& dir, const std::string& slot) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec) || std::filesystem::exists(dir / "model.safetensors", ec))
    return std::filesystem::is_directory(dir, ec) ? dir / "model.safetensors" : dir;
  try {
    const auto index = parse_json_text(read_text_file(dir / "model.safetensors.index.json"), dir.string());
    for (const auto& [tensor, file] : index.at("weight_map").items())
      if (tensor.starts_with(slot + ".") && file.is_string()) return dir / file.get<std::string>();
  } catch (const std::exception&) {
  }
  return dir;
}

// A slot stored packed (quantized) in the checkpoint, or nullopt when it is stored dense.
std::optional<PackedLinear> packed_slot(const nlohmann::json& config_raw, const TensorMap& tensors,
                                        const std::filesystem::path& source, const std::string& name) {
  const std::string source_str = source.string();
  // The scheme comes from config.json's per-layer map; without one (a file written by other tools), packed
  // tensors say W4 and an int8 weight says W8A16 (W8A8-static when it carries an input scale).
  std::string scheme;
  const std::string where = fmt::format("{} in {}", name, source_str);
  if (const nlohmann::json* layers = quantized_layers(config_raw)) {
    auto it = layers->find(name);
    if (it != layers->end()) {
      if (!it->is_string())
        fail("{}/config.json: quantization_config.shrink.layers[\"{}\"] is {}; expected a scheme name string",
             source_str, name, it->dump());
      scheme = it->get<std::string>();
    }
  }
  auto find = [&](const char* t) -> const Tensor* {
    auto it = tensors.find(name + "." + t);
    return it == tensors.end() ? nullptr : &it->second;
  };
  const Tensor* packed_w = find("weight_packed");
  const Tensor* w = find("weight");
  if (scheme.empty()) {
    if (packed_w) {
      const Tensor* s = find("weight_scale");
      if (!s || s->rank() != 2 || s->dim(1) <= 0 || packed_w->rank() != 2)
        fail("{}: tensor '{}.weight_scale' is missing or not a matrix; a W4 layer ('weight_packed') needs it",
             source_str, name);
      const int64_t group = packed_w->dim(1) * 2 / s->dim(1);
      scheme = fmt::format("w4a16-g{}{}", group, find("weight_zero_point") ? "-asym" : "");
    } else if (w && w->dtype() == DType::I8) {
      scheme = find("input_scale") ? "w8a8-static" : "w8a16";
    }
  }
  if (scheme.empty()) return std::nullopt;
  QuantSpec spec;
  try {
    spec = parse_quant_spec(scheme);
  } catch (const Error& e) {
    fail("{}: layer scheme: {}", where, e.what());
  }
  if (spec.scheme == WeightScheme::F32) return std::nullopt;  // stored dense
  PackedLinear p;
  p.spec = spec;
  for (const char* t : {"weight", "weight_packed", "weight_scale", "weight_zero_point", "weight_shape", "input_scale",
                        "input_zero_point", "bias"})
    if (const Tensor* x = find(t)) p.tensors.emplace_back(t, *x);
  if (spec.scheme == WeightScheme::W4A16) {
    const Tensor* ws = find("weight_shape");
    if (!ws)
      fail(
          "{}: tensor '{}.weight_shape' is missing; a {} layer needs it. The file is incomplete; re-run shrink "
          "quantize",
          source_str, name, spec.name());
    if (ws->dtype() != DType::I64 || ws->shape() != Shape{2})
      fail("{}: tensor '{}.weight_shape' is {} {}; expected I64 [2]", source_str, name, dtype_name(ws->dtype()),
           shape_str(ws->shape()));
    p.out = ws->data<int64_t>()[0];
    p.in = ws->data<int64_t>()[1];
  } else {
    if (!w)
      fail("{}: tensor '{}.weight' is missing; a {} layer needs it. The file is incomplete; re-run shrink quantize",
           source_str, name, spec.name());
    if (w->rank() != 2)
      fail("{}: tensor '{}.weight' has shape {}, expected a matrix", source_str, name, shape_str(w->shape()));
    p.out = w->dim(0);
    p.in = w->dim(1);
  }
  try {
    p.validate(where);
  } catch (const Error& e) {
    // Name the safetensors file that holds the layer (a shard of a big model), found only when reporting.
    fail("{} (file {})", e.what(), safetensors_file_of(source, name).string());
  }
  if (spec.static_act) {
    p.spec.act_scale = p.find("input_scale")->data<float>()[0];
    p.spec.act_zero_point = p.find("input_zero_point")->data<int32_t>()[0];
    if (!(p.spec.act_scale > 0.f) || !std::isfinite(p.spec.act_scale))
      fail("{}: tensor '{}.input_scale' is {}; expected a positive finite activation scale", source_str, name,
           p.spec.act_scale);
  }
  return p;
}

// A slot stored as low-rank factors (`<slot>.lowrank_A` [r, in], `<slot>.lowrank_B` [out, r], compress/lowrank.h),
// each dense or packed (a quantized factor is a packed layer of that name), or nullopt when it has none. The rank in
// config.json, when recorded, must agree with the tensors.
std::optional<LinearSlot> lowrank_slot(const nlohmann::json& config_raw, const TensorMap& tensors,
                                       const std::filesystem::path& source, const std::string& name) {
  const std::string na = name + "." + kLowRankA, nb = name + "." + kLowRankB;
  auto a = tensors.find(na);
  auto b = tensors.find(nb);
  std::optional<PackedLinear> pa = a == tensors.end() ? packed_slot(config_raw, tensors, source, na) : std::nullopt;
  std::optional<PackedLinear> pb = b == tensors.end() ? packed_slot(config_raw, tensors, source, nb) : std::nullopt;
  const bool has_a = a != tensors.end() || pa, has_b = b != tensors.end() || pb;
  if (!has_a && !has_b) return std::nullopt;
  const std::string src = source.string();
  if (!has_a || !has_b)
    fail(
        "{}: layer '{}' has '{}' but not '{}'; a low-rank layer needs both factors. The file is incomplete; re-run "
        "shrink lowrank",
        src, name, has_a ? na : nb, has_a ? nb : na);
  for (auto it : {a, b})
    if (it != tensors.end()) {
      const Tensor& t = it->second;
      if (t.dtype() != DType::F32 && t.dtype() != DType::F16 && t.dtype() != DType::BF16)
        fail("{}: low-rank factor '{}' has dtype {}; expected F32, F16 or BF16 (or a packed layer of that name)", src,
             it->first, dtype_name(t.dtype()));
      if (t.rank() != 2)
        fail("{}: low-rank factor '{}' has shape [{}]; expected a matrix", src, it->first, shape_str(t.shape()));
    }
  const int64_t rank_a = pa ? pa->out : a->second.dim(0), rank_b = pb ? pb->in : b->second.dim(1);
  const int64_t out = pb ? pb->out : b->second.dim(0);
  if (rank_a != rank_b)
    fail("{}: layer '{}' has factors A of rank {} and B of rank {}; expected A [r, in] and B [out, r] with the same r",
         src, name, rank_a, rank_b);
  if (config_raw.is_object() && config_raw.contains(kLowRankConfigKey)) {
    const auto& layers = config_raw[kLowRankConfigKey].value("layers", nlohmann::json::object());
    if (auto it = layers.find(name); it != layers.end() && (!it->is_number_integer() || it->get<int64_t>() != rank_a))
      fail("{}/config.json: {}.layers[\"{}\"] is {}, but the factors have rank {}; the directory is inconsistent", src,
           kLowRankConfigKey, name, it->dump(), rank_a);
  }
  Tensor bias;
  if (pb) {
    if (const Tensor* pbias = pb->find("bias")) bias = *pbias;
  } else if (auto bit = tensors.find(name + ".bias"); bit != tensors.end()) {
    if (bit->second.numel() != out)
      fail("{}: tensor '{}.bias' has shape {}, expected [{}]", src, name, shape_str(bit->second.shape()), out);
    bias = bit->second.dtype() == DType::F32 ? bit->second : bit->second.to_f32();
  }
  if (pa.has_value() != pb.has_value())
    fail(
        "{}: layer '{}' has a quantized {} but a dense {}; shrink quantizes both factors of a low-rank layer. The "
        "file is inconsistent; re-run shrink quantize on the low-rank model",
        src, name, pa ? na : nb, pa ? nb : na);
  LinearSlot s;
  s.name = name;
  if (pa)
    s.impl = std::make_unique<LowRankLinear>(make_packed_linear(std::move(*pa)), make_packed_linear(std::move(*pb)));
  else
    s.impl = std::make_unique<LowRankLinear>(a->second, b->second, bias);
  s.bias = bias;
  return s;
}

}  // namespace

LinearSlot* Model::add_linear(const std::string& name, bool bias_required, bool transpose_conv1d,
                              const Tensor* weight) {
  if (auto lr = lowrank_slot(config_.raw, tensors_, source_, name)) {
    linears_.push_back(std::move(*lr));
    return &linears_.back();
  }
  if (auto p = packed_slot(config_.raw, tensors_, source_, name)) {
    const Tensor* bias = p->find("bias");
    Tensor b = bias ? *bias : Tensor();
    linears_.push_back({name, make_packed_linear(std::move(*p)), Tensor(), b});
    return &linears_.back();
  }
  const std::string wname = name + ".weight", bname = name + ".bias";
  auto it = tensors_.find(wname);
  if (!weight && it == tensors_.end())
    fail("{}: tensor '{}' is missing (architecture {}); the checkpoint is incomplete or not a {} model",
         source_.string(), wname, config_.architecture, config_.model_type);
  Tensor w = weight ? *weight : it->second;
  if (w.rank() != 2)
    fail("{}: tensor '{}' has shape {}, expected a matrix", source_.string(), wname, shape_str(w.shape()));
  if (transpose_conv1d) {  // GPT-2 Conv1D stores [in, out]
    Tensor f = w.to_f32();
    const int64_t in = w.dim(0), out = w.dim(1);
    Tensor t = Tensor::empty(DType::F32, {out, in});
    for (int64_t i = 0; i < in; ++i)
      for (int64_t o = 0; o < out; ++o) t.data<float>()[o * in + i] = f.data<float>()[i * out + o];
    w = t;
  }
  const Tensor* bias = nullptr;
  Tensor b;
  if (auto bit = tensors_.find(bname); bit != tensors_.end()) {
    if (bit->second.numel() != w.dim(0))
      fail("{}: tensor '{}' has shape {}, expected [{}]", source_.string(), bname, shape_str(bit->second.shape()),
           w.dim(0));
    b = bit->second.dtype() == DType::F32 ? bit->second : bit->second.to_f32();
    bias = &b;
  } else if (bias_required) {
    fail("{}: tensor '{}' is missing (architecture {} has biases)", source_.string(), bname, config_.architecture);
  }
  linears_.push_back({name, make_dense_linear(w, bias), w, bias ? b : Tensor()});
  return &linears_.back();
}

void Model::expect_linear(const LinearSlot& s, int64_t in, int64_t out) const {
  if (s.impl->in_features() != in || s.impl->out_features() != out)
    fail("{}: tensor '{}.weight' maps {} -> {} features, expected {} -> {} from config.json", source_.string(), s.name,
         s.impl->in_features(), s.impl->out_features(), in, out);
}

void DecoderModel::check_forward(const KvCache& cache, const int32_t* tokens, int64_t n) const {
  check(n > 0, "forward: no tokens to run (empty prompt?)");
  if (cache.pos + n > cache.max_seq)
    fail(
        "context overflow: {} tokens already in the cache + {} new exceed the context of {} tokens; use a "
        "shorter prompt or fewer generated tokens",
        cache.pos, n, cache.max_seq);
  for (int64_t t = 0; t < n; ++t)
    if (tokens[t] < 0 || tokens[t] >= config_.vocab_size)
      fail("token id {} at position {} is outside the vocabulary of {} tokens", tokens[t], cache.pos + t,
           config_.vocab_size);
}

// The typed form and the cache itself live in models/kv_cache.cc.
KvCache DecoderModel::new_cache(int64_t max_seq) const {
  return new_cache(max_seq, kv_cache_type_);
}

namespace models {

std::string detect_prefix(const TensorMap& t, const std::string& probe, const std::vector<std::string>& prefixes) {
  for (auto& p : prefixes)
    if (t.count(p + probe)) return p;
  return prefixes.empty() ? std::string() : prefixes.front();
}

}  // namespace models

std::unique_ptr<Model> build_model(ModelConfig config, TensorMap tensors, std::filesystem::path source) {
  Factory factory = nullptr;
  for (auto& [name, f] : registry())
    if (name == config.architecture) factory = f;
  if (!factory) {
    std::string list;
    for (auto& [name, f] : registry()) list += (list.empty() ? "" : ", ") + name;
    fail("{}: architecture '{}' is not supported; supported: {}", source.string(), config.architecture, list);
  }
  std::unique_ptr<Model> m = factory();
  m->config_ = std::move(config);
  m->tensors_ = std::move(tensors);
  m->source_ = std::move(source);
  m->init();
  return m;
}

namespace {

std::unique_ptr<Tokenizer> find_tokenizer(const std::filesystem::path& dir, int vocab_size) {
  for (const char* f : {"tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json"})
    if (std::filesystem::exists(dir / f)) return load_tokenizer(dir);
  // A llama2.c model saved as a directory by shrink carries its tokenizer as tokenizer.bin.
  if (std::filesystem::exists(dir / "tokenizer.bin")) return load_tokenizer(dir / "tokenizer.bin", vocab_size);
  return nullptr;
}

}  // namespace

std::unique_ptr<Model> load_model(const std::filesystem::path& path, const LoadOptions& opt) {
  if (!std::filesystem::exists(path))
    fail(
        "{}: no such file or directory; pass a Hugging Face model directory, a directory written by shrink, or "
        "a llama2.c .bin",
        path.string());
  std::unique_ptr<Model> model;
  if (std::filesystem::is_directory(path)) {
    const auto cfg = path / "config.json";
    if (!std::filesystem::exists(cfg))
      fail("{}: config.json is missing; a model directory needs config.json and *.safetensors", path.string());
    ModelConfig config = read_config(cfg);
    SafetensorsFile st = read_safetensors_model(path);
    model = build_model(std::move(config), std::move(st.tensors), path);
    if (opt.tokenizer.empty()) model->set_tokenizer(find_tokenizer(path, model->config().vocab_size));
  } else {
    Llama2cModel l = read_llama2c_model(path);
    model = build_model(std::move(l.config), std::move(l.tensors), path);
    if (opt.tokenizer.empty()) {
      auto beside = path.parent_path() / "tokenizer.bin";
      if (std::filesystem::exists(beside)) model->set_tokenizer(load_tokenizer(beside, model->config().vocab_size));
    }
  }
  if (!opt.tokenizer.empty()) model->set_tokenizer(load_tokenizer(opt.tokenizer, model->config().vocab_size));
  return model;
}

}  // namespace shrink
