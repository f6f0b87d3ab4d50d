// Hugging Face config.json: one normalised ModelConfig from the LLaMA, GPT-2, BERT and DistilBERT
// spellings, and back. Also the bounded JSON parser every file format of shrink goes through.
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/formats/config.h>

#include <charconv>
#include <cmath>
#include <limits>
#include <optional>

namespace shrink {

using nlohmann::json;

nlohmann::json parse_json_text(std::string_view text, const std::string& source) {
  // The callback sees every value with its depth; refusing deep input here keeps the recursive
  // parts of nlohmann (copy, dump, compare) within the stack whatever the file holds.
  json::parser_callback_t limit_depth = [&source](int depth, json::parse_event_t, json&) {
    if (depth > kMaxJsonDepth)
      fail("{}: JSON nested deeper than {} levels; the file is corrupt or not what shrink expects here", source,
           kMaxJsonDepth);
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), limit_depth);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({}); the file is truncated or corrupt, re-export it", source, e.what());
  }
}

namespace {

enum class Family { Llama, Gpt2, Bert, DistilBert, Vit };

struct ArchInfo {
  const char* architecture;
  const char* model_type;  // the Hugging Face model_type that selects this architecture when none is named
  Family family;
  bool classifier;
};

constexpr ArchInfo kArchitectures[] = {
    {"LlamaForCausalLM", "llama", Family::Llama, false},
    {"MistralForCausalLM", "mistral", Family::Llama, false},
    {"GPT2LMHeadModel", "gpt2", Family::Gpt2, false},
    {"GPT2Model", nullptr, Family::Gpt2, false},
    {"BertModel", "bert", Family::Bert, false},
    {"BertForSequenceClassification", nullptr, Family::Bert, true},
    {"DistilBertModel", "distilbert", Family::DistilBert, false},
    {"DistilBertForSequenceClassification", nullptr, Family::DistilBert, true},
    {"ViTForImageClassification", "vit", Family::Vit, true},
};

const char* family_name(Family f) {
  switch (f) {
    case Family::Llama: return "llama";
    case Family::Gpt2: return "gpt2";
    case Family::Bert: return "bert";
    case Family::DistilBert: return "distilbert";
    case Family::Vit: return "vit";
  }
  return "?";
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::number_float: return "a non-integer number";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    default: return "an unexpected JSON value";
  }
}

// What the user wrote, for messages: scalars verbatim (clipped), containers by type only.
std::string shown(const json& v) {
  if (v.is_structured()) return type_name(v);
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 40) + "...";
  return fmt::format("{} {}", type_name(v), s);
}

// Typed access to the fields of one config object; every error names the file and the field.
class Fields {
 public:
  Fields(const json& j, const std::string& source) : j_(j), source_(source) {}

  const json* find(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool has(const char* key) const { return find(key) != nullptr; }

  std::optional<int> opt_int(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    return to_int(*v, key);
  }
  int to_int(const json& v, const char* key) const {
    if (!v.is_number_integer())
      fail("{}: field '{}' must be an integer, found {}; fix config.json", source_, key, shown(v));
    const bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t{std::numeric_limits<int>::max()}
                                             : v.get<int64_t>() >= std::numeric_limits<int>::min() &&
                                                   v.get<int64_t>() <= std::numeric_limits<int>::max();
    if (!fits) fail("{}: field '{}' = {} does not fit a 32-bit integer; fix config.json", source_, key, v.dump());
    return static_cast<int>(v.get<int64_t>());
  }
  int req_int(const char* key) const {
    auto v = opt_int(key);
    if (!v) fail("{}: required field '{}' is missing (an integer); add it to config.json", source_, key);
    return *v;
  }
  // The first key present among `keys` (a field some checkpoints spell two ways).
  int req_int_any(std::initializer_list<const char*> keys) const {
    for (const char* k : keys)
      if (auto v = opt_int(k)) return *v;
    std::string names;
    for (const char* k : keys) names += (names.empty() ? "'" : " or '") + std::string(k) + "'";
    fail("{}: required field {} is missing (an integer); add it to config.json", source_, names);
  }

  std::optional<float> opt_float(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) fail("{}: field '{}' must be a number, found {}; fix config.json", source_, key, shown(*v));
    const double d = v->get<double>();
    if (!std::isfinite(d) || std::fabs(d) > std::numeric_limits<float>::max())
      fail("{}: field '{}' = {} is not a finite float; fix config.json", source_, key, v->dump());
    return static_cast<float>(d);
  }

  std::optional<bool> opt_bool(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean())
      fail("{}: field '{}' must be true or false, found {}; fix config.json", source_, key, shown(*v));
    return v->get<bool>();
  }

  std::optional<std::string> opt_string(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) fail("{}: field '{}' must be a string, found {}; fix config.json", source_, key, shown(*v));
    return v->get<std::string>();
  }

  // bos/eos/pad ids: an integer, null, or (Llama 3) a list whose first entry is used.
  int token_id(const char* key) const {
    const json* v = find(key);
    if (v && v->is_array()) {
      if (v->empty()) return -1;
      return to_int((*v)[0], key);
    }
    return opt_int(key).value_or(-1);
  }

 private:
  const json& j_;
  const std::string& source_;
};

const ArchInfo& pick_architecture(const json& j, const std::string& source) {
  auto supported_list = [] {
    std::string s;
    for (const auto& a : supported_architectures()) s += (s.empty() ? "" : ", ") + a;
    return s;
  };
  auto arch_it = j.find("architectures");
  if (arch_it != j.end() && !arch_it->is_null()) {
    if (!arch_it->is_array() || arch_it->empty() || !(*arch_it)[0].is_string())
      fail("{}: field 'architectures' must be a non-empty list of strings, found {}; fix config.json", source,
           shown(*arch_it));
    const std::string name = (*arch_it)[0].get<std::string>();
    for (const auto& a : kArchitectures)
      if (name == a.architecture) return a;
    fail("{}: architecture '{}' is not supported; supported: {}", source, name, supported_list());
  }
  auto type_it = j.find("model_type");
  if (type_it == j.end() || !type_it->is_string())
    fail(
        "{}: neither 'architectures' nor 'model_type' names the model; add \"architectures\": [\"...\"] "
        "(supported: {})",
        source, supported_list());
  const std::string type = type_it->get<std::string>();
  for (const auto& a : kArchitectures)
    if (a.model_type && type == a.model_type) return a;
  fail("{}: model_type '{}' (no 'architectures' given) is not supported; supported architectures: {}", source, type,
       supported_list());
}

void parse_labels(const Fields& f, const json& j, const ArchInfo& arch, const std::string& source, ModelConfig& c) {
  auto it = j.find("id2label");
  if (it != j.end() && !it->is_null()) {
    if (!it->is_object())
      fail("{}: field 'id2label' must be an object {{\"0\": \"label\", ...}}, found {}; fix config.json", source,
           shown(*it));
    const size_t n = it->size();
    std::vector<std::string> labels(n);
    std::vector<bool> seen(n, false);
    for (auto& [key, value] : it->items()) {
      size_t id = 0;
      const char* end = key.data() + key.size();
      auto [ptr, ec] = std::from_chars(key.data(), end, id);
      if (key.empty() || ec != std::errc() || ptr != end || id >= n || seen[id])
        fail("{}: id2label key '{}' is not one of \"0\"..\"{}\" (each once); fix config.json", source, key, n - 1);
      if (!value.is_string())
        fail("{}: id2label[\"{}\"] must be a string, found {}; fix config.json", source, key, shown(value));
      seen[id] = true;
      labels[id] = value.get<std::string>();
    }
    c.id2label = std::move(labels);
  }
  const auto num_labels = f.opt_int("num_labels");
  if (num_labels) {
    if (*num_labels <= 0 || *num_labels > 1'000'000)
      fail("{}: field 'num_labels' = {} must be in 1..1000000; fix config.json", source, *num_labels);
    if (!c.id2label.empty() && static_cast<size_t>(*num_labels) != c.id2label.size())
      fail("{}: 'num_labels' = {} but 'id2label' has {} entries; make them agree in config.json", source, *num_labels,
           c.id2label.size());
    c.num_labels = *num_labels;
  } else if (!c.id2label.empty()) {
    c.num_labels = static_cast<int>(c.id2label.size());
  } else if (arch.classifier) {
    c.num_labels = 2;  // the Hugging Face default
  }
  if (c.id2label.empty())
    for (int i = 0; i < c.num_labels; ++i) c.id2label.push_back(fmt::format("LABEL_{}", i));
}

void check_consistent(const ModelConfig& c, bool explicit_head_dim, const std::string& source) {
  auto positive = [&](int v, const char* what) {
    if (v <= 0) fail("{}: {} = {} must be positive; fix config.json", source, what, v);
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden size");
  positive(c.intermediate_size, "intermediate (feed-forward) size");
  positive(c.num_layers, "number of layers");
  positive(c.num_heads, "number of attention heads");
  positive(c.num_kv_heads, "number of key/value heads");
  positive(c.head_dim, "head_dim");
  positive(c.max_position_embeddings, "max_position_embeddings");
  if (c.type_vocab_size < 0) fail("{}: type_vocab_size = {} must not be negative", source, c.type_vocab_size);
  if (!explicit_head_dim && c.hidden_size % c.num_heads != 0)
    fail("{}: hidden size {} is not divisible by the {} attention heads; fix config.json", source, c.hidden_size,
         c.num_heads);
  if (c.num_heads % c.num_kv_heads != 0)
    fail("{}: {} attention heads are not a multiple of the {} key/value heads; fix config.json", source, c.num_heads,
         c.num_kv_heads);
  if (!(c.norm_eps > 0)) fail("{}: the norm epsilon {} must be positive; fix config.json", source, c.norm_eps);
  if (!(c.rope_theta > 0)) fail("{}: rope_theta {} must be positive; fix config.json", source, c.rope_theta);
}

// Floats go back to JSON by their shortest decimal spelling (1e-05, not 9.999999747378752e-06),
// unless that spelling would not read back as the same float (near FLT_MAX, or double rounding).
double json_float(float f) {
  const std::string s = fmt::format("{}", f);
  double d = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ec != std::errc() || ptr != s.data() + s.size() || !(std::fabs(d) <= std::numeric_limits<float>::max()) ||
      static_cast<float>(d) != f)
    return static_cast<double>(f);
  return d;
}

}  // namespace

const std::vector<std::string>& supported_architectures() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& a : kArchitectures) v.emplace_back(a.architecture);
    return v;
  }();
  return names;
}

ModelConfig parse_config(const json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: config must be a JSON object, found {}; pass a config.json", source, shown(j));
  const ArchInfo& arch = pick_architecture(j, source);
  const Fields f(j, source);
  ModelConfig c;
  c.architecture = arch.architecture;
  c.model_type = family_name(arch.family);
  bool explicit_head_dim = false;
  switch (arch.family) {
    case Family::Llama: {
      c.vocab_size = f.req_int("vocab_size");
      c.hidden_size = f.req_int("hidden_size");
      c.intermediate_size = f.req_int("intermediate_size");
      c.num_layers = f.req_int("num_hidden_layers");
      c.num_heads = f.req_int("num_attention_heads");
      c.num_kv_heads = f.opt_int("num_key_value_heads").value_or(c.num_heads);
      c.norm_eps = f.opt_float("rms_norm_eps").value_or(1e-6f);
      c.rope_theta = f.opt_float("rope_theta").value_or(10000.f);
      c.tie_word_embeddings = f.opt_bool("tie_word_embeddings").value_or(false);
      c.hidden_act = f.opt_string("hidden_act").value_or("silu");
      c.max_position_embeddings = f.opt_int("max_position_embeddings").value_or(2048);
      const auto hd = f.opt_int("head_dim");
      explicit_head_dim = hd.has_value();
      c.head_dim = hd ? *hd : (c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
      break;
    }
    case Family::Gpt2: {
      c.vocab_size = f.req_int("vocab_size");
      c.hidden_size = f.req_int("n_embd");
      c.num_layers = f.req_int("n_layer");
      c.num_heads = f.req_int("n_head");
      c.num_kv_heads = c.num_heads;
      c.max_position_embeddings = f.req_int_any({"n_positions", "n_ctx"});
      const auto inner = f.opt_int("n_inner");
      if (!inner && c.hidden_size > std::numeric_limits<int>::max() / 4)
        fail("{}: 4 * n_embd overflows; fix config.json", source);
      c.intermediate_size = inner ? *inner : 4 * c.hidden_size;
      c.norm_eps = f.opt_float("layer_norm_epsilon").value_or(1e-5f);
      c.hidden_act = f.opt_string("activation_function").value_or("gelu_new");
      c.tie_word_embeddings = true;  // GPT-2 always reads logits through wte
      break;
    }
    case Family::Bert: {
      c.vocab_size = f.req_int("vocab_size");
      c.hidden_size = f.req_int("hidden_size");
      c.num_layers = f.req_int("num_hidden_layers");
      c.num_heads = f.req_int("num_attention_heads");
      c.num_kv_heads = c.num_heads;
      c.intermediate_size = f.req_int("intermediate_size");
      c.norm_eps = f.opt_float("layer_norm_eps").value_or(1e-12f);
      c.type_vocab_size = f.opt_int("type_vocab_size").value_or(2);
      c.max_position_embeddings = f.opt_int("max_position_embeddings").value_or(512);
      c.hidden_act = f.opt_string("hidden_act").value_or("gelu");
      break;
    }
    case Family::DistilBert: {
      c.vocab_size = f.req_int("vocab_size");
      c.hidden_size = f.req_int("dim");
      c.num_layers = f.req_int("n_layers");
      c.num_heads = f.req_int("n_heads");
      c.num_kv_heads = c.num_heads;
      c.intermediate_size = f.req_int("hidden_dim");
      c.hidden_act = f.opt_string("activation").value_or("gelu");
      c.max_position_embeddings = f.opt_int("max_position_embeddings").value_or(512);
      c.norm_eps = 1e-12f;  // fixed in the DistilBERT implementation, not in its config
      c.type_vocab_size = 0;
      break;
    }
    case Family::Vit: {
      c.hidden_size = f.req_int("hidden_size");
      c.num_layers = f.req_int("num_hidden_layers");
      c.num_heads = f.req_int("num_attention_heads");
      c.num_kv_heads = c.num_heads;
      c.intermediate_size = f.req_int("intermediate_size");
      c.norm_eps = f.opt_float("layer_norm_eps").value_or(1e-12f);
      c.hidden_act = f.opt_string("hidden_act").value_or("gelu");
      c.image_size = f.opt_int("image_size").value_or(224);
      c.patch_size = f.opt_int("patch_size").value_or(16);
      c.num_channels = f.opt_int("num_channels").value_or(3);
      if (c.image_size <= 0 || c.patch_size <= 0 || c.num_channels <= 0 || c.image_size % c.patch_size != 0)
        fail("{}: image_size {} / patch_size {} / num_channels {}: expected positive sizes with the patch size "
             "dividing the image size; fix config.json",
             source, c.image_size, c.patch_size, c.num_channels);
      if (!f.opt_bool("qkv_bias").value_or(true))
        fail("{}: qkv_bias = false is not supported (the ViT blocks here have query/key/value biases)", source);
      // Tokens are patches plus [CLS]; there is no vocabulary.
      c.max_position_embeddings = (c.image_size / c.patch_size) * (c.image_size / c.patch_size) + 1;
      c.vocab_size = 1;
      c.type_vocab_size = 0;
      break;
    }
  }
  if (arch.family != Family::Llama) c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  check_consistent(c, explicit_head_dim, source);
  parse_labels(f, j, arch, source, c);
  c.bos_token_id = f.token_id("bos_token_id");
  c.eos_token_id = f.token_id("eos_token_id");
  c.pad_token_id = f.token_id("pad_token_id");
  c.raw = j;
  return c;
}

ModelConfig parse_config_text(std::string_view text, const std::string& source) {
  return parse_config(parse_json_text(text, source), source);
}

ModelConfig read_config(const std::filesystem::path& config_json) {
  return parse_config_text(read_text_file(config_json), config_json.string());
}

json config_to_json(const ModelConfig& c) {
  json j = c.raw.is_object() ? c.raw : json::object();
  Family family = Family::Llama;
  bool known = false;
  for (const auto& a : kArchitectures)
    if (c.architecture == a.architecture) family = a.family, known = true;
  if (!known) {
    std::string list;
    for (const auto& a : supported_architectures()) list += (list.empty() ? "" : ", ") + a;
    fail("config for architecture '{}' cannot be written; supported: {}", c.architecture, list);
  }
  j["architectures"] = json::array({c.architecture});
  j["model_type"] = c.architecture == "MistralForCausalLM" ? "mistral" : family_name(family);
  j["vocab_size"] = c.vocab_size;
  switch (family) {
    case Family::Llama:
      j["hidden_size"] = c.hidden_size;
      j["intermediate_size"] = c.intermediate_size;
      j["num_hidden_layers"] = c.num_layers;
      j["num_attention_heads"] = c.num_heads;
      j["num_key_value_heads"] = c.num_kv_heads;
      if (j.contains("head_dim") || c.num_heads <= 0 || c.head_dim * c.num_heads != c.hidden_size)
        j["head_dim"] = c.head_dim;
      j["rms_norm_eps"] = json_float(c.norm_eps);
      j["rope_theta"] = json_float(c.rope_theta);
      j["tie_word_embeddings"] = c.tie_word_embeddings;
      j["hidden_act"] = c.hidden_act;
      j["max_position_embeddings"] = c.max_position_embeddings;
      break;
    case Family::Gpt2:
      j["n_embd"] = c.hidden_size;
      j["n_layer"] = c.num_layers;
      j["n_head"] = c.num_heads;
      j["n_positions"] = c.max_position_embeddings;
      if (j.contains("n_ctx")) j["n_ctx"] = c.max_position_embeddings;
      j["n_inner"] = c.intermediate_size;
      j["layer_norm_epsilon"] = json_float(c.norm_eps);
      j["activation_function"] = c.hidden_act;
      j["tie_word_embeddings"] = true;
      break;
    case Family::Bert:
      j["hidden_size"] = c.hidden_size;
      j["num_hidden_layers"] = c.num_layers;
      j["num_attention_heads"] = c.num_heads;
      j["intermediate_size"] = c.intermediate_size;
      j["layer_norm_eps"] = json_float(c.norm_eps);
      j["type_vocab_size"] = c.type_vocab_size;
      j["max_position_embeddings"] = c.max_position_embeddings;
      j["hidden_act"] = c.hidden_act;
      break;
    case Family::Vit:
      j.erase("vocab_size");
      j["hidden_size"] = c.hidden_size;
      j["num_hidden_layers"] = c.num_layers;
      j["num_attention_heads"] = c.num_heads;
      j["intermediate_size"] = c.intermediate_size;
      j["layer_norm_eps"] = json_float(c.norm_eps);
      j["hidden_act"] = c.hidden_act;
      j["image_size"] = c.image_size;
      j["patch_size"] = c.patch_size;
      j["num_channels"] = c.num_channels;
      j["qkv_bias"] = true;
      break;
    case Family::DistilBert:
      j["dim"] = c.hidden_size;
      j["n_layers"] = c.num_layers;
      j["n_heads"] = c.num_heads;
      j["hidden_dim"] = c.intermediate_size;
      j["activation"] = c.hidden_act;
      j["max_position_embeddings"] = c.max_position_embeddings;
      break;
  }
  if (c.num_labels > 0) {
    json id2label = json::object(), label2id = json::object();
    for (int i = 0; i < c.num_labels; ++i) {
      const std::string label = i < static_cast<int>(c.id2label.size()) ? c.id2label[i] : fmt::format("LABEL_{}", i);
      id2label[std::to_string(i)] = label;
      label2id[label] = i;
    }
    j["id2label"] = std::move(id2label);
    j["label2id"] = std::move(label2id);
    j.erase("num_labels");  // id2label carries the count, as in files Hugging Face writes
  }
  auto put_id = [&](const char* key, int id) {
    if (id >= 0 && !(j.contains(key) && j[key].is_array())) j[key] = id;
  };
  put_id("bos_token_id", c.bos_token_id);
  put_id("eos_token_id", c.eos_token_id);
  put_id("pad_token_id", c.pad_token_id);
  return j;
}

}  // namespace shrink
