// The per-layer shape of a structurally pruned encoder as config.json records it (Hugging Face `pruned_heads`,
// shrink's per-layer FFN widths), and the names of an encoder block's linears.
#include <shrink/compress/prune.h>
#include <shrink/core/error.h>

#include <algorithm>
#include <set>

namespace shrink::prune {

namespace {

constexpr const char* kShrinkField = "shrink_pruning";

}  // namespace

EncoderShape encoder_shape(const ModelConfig& c) {
  const int L = c.num_layers, H = c.num_heads;
  std::vector<std::set<int>> removed(L);
  const nlohmann::json& raw = c.raw;
  if (raw.is_object() && raw.contains("pruned_heads") && !raw["pruned_heads"].is_null()) {
    const nlohmann::json& ph = raw["pruned_heads"];
    check(ph.is_object(), "config.json: pruned_heads is {}; expected an object {{\"layer\": [head ids]}}", ph.dump());
    for (const auto& [key, ids] : ph.items()) {
      int layer = -1;
      try {
        size_t used = 0;
        layer = std::stoi(key, &used);
        if (used != key.size()) layer = -1;
      } catch (const std::exception&) {
      }
      check(layer >= 0 && layer < L, "config.json: pruned_heads has layer '{}'; expected a layer in [0, {})", key, L);
      check(ids.is_array(), "config.json: pruned_heads[\"{}\"] is {}; expected an array of head ids", key, ids.dump());
      for (const auto& id : ids) {
        check(id.is_number_integer() && id.get<int>() >= 0 && id.get<int>() < H,
              "config.json: pruned_heads[\"{}\"] holds {}; expected head ids in [0, {})", key, id.dump(), H);
        removed[layer].insert(id.get<int>());
      }
    }
  }
  EncoderShape s;
  s.heads.resize(L);
  for (int l = 0; l < L; ++l)
    for (int h = 0; h < H; ++h)
      if (!removed[l].count(h)) s.heads[l].push_back(h);
  s.ffn.assign(L, c.intermediate_size);
  if (raw.is_object() && raw.contains(kShrinkField)) {
    const nlohmann::json& sp = raw[kShrinkField];
    if (sp.is_object() && sp.contains("intermediate_sizes")) {
      const nlohmann::json& w = sp["intermediate_sizes"];
      check(w.is_array() && static_cast<int>(w.size()) == L,
            "config.json: shrink_pruning.intermediate_sizes is {}; expected one FFN width per layer ({} numbers)",
            w.dump(), L);
      for (int l = 0; l < L; ++l) {
        check(w[l].is_number_integer() && w[l].get<int64_t>() >= 0 && w[l].get<int64_t>() <= c.intermediate_size,
              "config.json: shrink_pruning.intermediate_sizes[{}] is {}; expected a width in [0, {}]", l, w[l].dump(),
              c.intermediate_size);
        s.ffn[l] = w[l].get<int64_t>();
      }
    }
  }
  return s;
}

void record_encoder_shape(ModelConfig& c, const EncoderShape& s) {
  check(static_cast<int>(s.heads.size()) == c.num_layers && static_cast<int>(s.ffn.size()) == c.num_layers,
        "pruning: shape for {} / {} layers; the model has {}", s.heads.size(), s.ffn.size(), c.num_layers);
  if (!c.raw.is_object()) c.raw = nlohmann::json::object();
  nlohmann::json ph = nlohmann::json::object();
  for (int l = 0; l < c.num_layers; ++l) {
    std::vector<int> gone;
    for (int h = 0; h < c.num_heads; ++h)
      if (!std::binary_search(s.heads[l].begin(), s.heads[l].end(), h)) gone.push_back(h);
    if (!gone.empty()) ph[std::to_string(l)] = gone;
  }
  c.raw["pruned_heads"] = ph;
  const bool ffn_pruned = std::any_of(s.ffn.begin(), s.ffn.end(), [&](int64_t w) { return w != c.intermediate_size; });
  if (ffn_pruned) {
    if (!c.raw.contains(kShrinkField) || !c.raw[kShrinkField].is_object())
      c.raw[kShrinkField] = nlohmann::json::object();
    c.raw[kShrinkField]["intermediate_sizes"] = s.ffn;
  } else if (c.raw.contains(kShrinkField) && c.raw[kShrinkField].is_object()) {
    c.raw[kShrinkField].erase("intermediate_sizes");
  }
}

std::vector<BlockLinears> encoder_blocks(const ModelConfig& c, const TensorMap& t) {
  const bool bert = c.model_type == "bert", vit = c.model_type == "vit";
  check(bert || vit || c.model_type == "distilbert",
        "pruning heads and FFN neurons: model_type '{}' is not supported; expected bert, distilbert or vit",
        c.model_type);
  std::string pre = bert ? "bert." : vit ? "vit." : "distilbert.";
  const std::string probe = vit ? "embeddings.cls_token" : "embeddings.word_embeddings.weight";
  if (!t.count(pre + probe) && t.count(probe)) pre = "";
  std::vector<BlockLinears> v;
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string l = pre + (bert || vit ? "encoder.layer." : "transformer.layer.") + std::to_string(i) + ".";
    if (bert)
      v.push_back({l + "attention.self.query", l + "attention.self.key", l + "attention.self.value",
                   l + "attention.output.dense", l + "intermediate.dense", l + "output.dense"});
    else if (vit)
      v.push_back({l + "attention.attention.query", l + "attention.attention.key", l + "attention.attention.value",
                   l + "attention.output.dense", l + "intermediate.dense", l + "output.dense"});
    else
      v.push_back({l + "attention.q_lin", l + "attention.k_lin", l + "attention.v_lin", l + "attention.out_lin",
                   l + "ffn.lin1", l + "ffn.lin2"});
  }
  return v;
}

double cubic_sparsity(double final_sparsity, int step, int steps, double initial_sparsity) {
  check(steps >= 1, "pruning schedule: {} steps; expected at least 1", steps);
  const double f = std::clamp(static_cast<double>(step) / steps, 0.0, 1.0);
  const double r = 1.0 - f;
  return final_sparsity + (initial_sparsity - final_sparsity) * r * r * r;
}

int64_t count_parameters(const TensorMap& t) {
  int64_t n = 0;
  for (const auto& [name, x] : t) n += x.numel();
  return n;
}

Method parse_method(const std::string& name) {
  if (name == "magnitude") return Method::Magnitude;
  if (name == "structured") return Method::Structured;
  fail("pruning method '{}' is unknown; expected magnitude or structured", name);
}

Importance parse_importance(const std::string& name) {
  if (name == "norm") return Importance::Norm;
  if (name == "taylor") return Importance::Taylor;
  fail("importance '{}' is unknown; expected norm or taylor", name);
}

}  // namespace shrink::prune
