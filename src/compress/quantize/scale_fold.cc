// Channel-scale folding for AWQ and SmoothQuant (include/shrink/compress/scale_fold.h): producer sites by slot
// name, working fp32 copies, checkpoint-layout edits, the rebuilt model and fake-quantized weights.
#include <shrink/compress/scale_fold.h>
#include <shrink/compress/sequential.h>
#include <shrink/core/error.h>
#include <shrink/kernels/quant.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

namespace shrink {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string prefix_of(const std::string& name, const std::string& suffix) {
  return name.substr(0, name.size() - suffix.size());
}

// Whether a checkpoint tensor stores the slot weight [out, in] as it is (not transposed): the same memory, or the
// same shape and the same first row.
bool same_layout(const Tensor& stored, const Tensor& weight) {
  if (stored.raw() == weight.raw()) return true;
  if (stored.shape() != weight.shape()) return false;
  const int64_t n = std::min<int64_t>(weight.dim(1), 64);
  const Tensor a = stored.to_f32(), b = weight.to_f32();
  return std::memcmp(a.data<float>(), b.data<float>(), static_cast<size_t>(n) * sizeof(float)) == 0;
}

// Model keeps its tokenizer private to the loaders; a rebuilt model takes it over through this member pointer
// (Model has no release call, and adding one to the widely included model.h would rebuild most of the tree).
struct TokenizerAccess : Model {
  static std::unique_ptr<Tokenizer>& of(Model& m) { return m.*(&TokenizerAccess::tokenizer_); }
};

}  // namespace

std::string ScaleSite::describe() const {
  switch (producer) {
    case ScaleProducer::Norm: return prefix_of(norm_weight, ".weight");
    case ScaleProducer::LinearRows:
      return fmt::format("{} rows {}..{}", prev->name, row0, row0 + group.front()->impl->in_features());
    case ScaleProducer::None: break;
  }
  return "none";
}

ScaleSite scale_site(const Model& model, const std::vector<LinearSlot*>& group) {
  check(!group.empty(), "scale_site: empty group");
  ScaleSite site;
  site.group = group;
  const std::string& name = group.front()->name;
  auto* self = const_cast<Model*>(&model);  // find_linear is not const; the slot is only read
  auto norm = [&](const std::string& w, const std::string& b) {
    check(model.tensors().count(w) != 0, "{}: norm '{}' before '{}' is missing", model.source().string(), w, name);
    site.producer = ScaleProducer::Norm;
    site.norm_weight = w;
    if (!b.empty() && model.tensors().count(b)) site.norm_bias = b;
  };
  auto rows = [&](const std::string& prev, int64_t row0) {
    site.prev = self->find_linear(prev);
    check(site.prev != nullptr, "{}: layer '{}' before '{}' is missing", model.source().string(), prev, name);
    site.producer = ScaleProducer::LinearRows;
    site.row0 = row0;
  };
  const ModelConfig& c = model.config();
  if (ends_with(name, "self_attn.q_proj")) {
    norm(prefix_of(name, "self_attn.q_proj") + "input_layernorm.weight", "");
  } else if (ends_with(name, "self_attn.o_proj")) {
    // o_proj reads the heads' values; with grouped-query attention one v channel feeds several heads.
    if (c.num_kv_heads == c.num_heads) rows(prefix_of(name, "o_proj") + "v_proj", 0);
  } else if (ends_with(name, "mlp.gate_proj")) {
    norm(prefix_of(name, "mlp.gate_proj") + "post_attention_layernorm.weight", "");
  } else if (ends_with(name, "mlp.down_proj")) {
    rows(prefix_of(name, "down_proj") + "up_proj", 0);  // act(gate) * up: the product scales with up's rows
  } else if (ends_with(name, "attn.c_attn")) {
    const std::string p = prefix_of(name, "attn.c_attn");
    norm(p + "ln_1.weight", p + "ln_1.bias");
  } else if (ends_with(name, "attn.c_proj")) {
    rows(prefix_of(name, "c_proj") + "c_attn", 2 * c.hidden_size);  // the v third of c_attn's q|k|v outputs
  } else if (ends_with(name, "mlp.c_fc")) {
    const std::string p = prefix_of(name, "mlp.c_fc");
    norm(p + "ln_2.weight", p + "ln_2.bias");
  } else if (ends_with(name, "attention.output.dense")) {
    // BERT: the context is softmax-weighted values (and the weights sum to 1), so it scales with value's rows and
    // bias. The post-LN LayerNorms also feed the residual, and GELU sits before output.dense: not foldable.
    rows(prefix_of(name, "output.dense") + "self.value", 0);
  } else if (ends_with(name, "attention.out_lin")) {
    rows(prefix_of(name, "out_lin") + "v_lin", 0);  // DistilBERT, as BERT
  }
  return site;
}

Tensor& ScaledTensors::weight(const LinearSlot& slot) {
  auto it = weights_.find(slot.name);
  if (it != weights_.end()) return it->second;
  check(slot.weight.defined() && slot.weight.numel() > 0,
        "layer '{}' has no dense source weight (loaded packed); rescale the original model", slot.name);
  slots_[slot.name] = &slot;
  return weights_.emplace(slot.name, slot.weight.to_f32()).first->second;
}

Tensor& ScaledTensors::bias(const LinearSlot& slot) {
  auto it = biases_.find(slot.name);
  if (it != biases_.end()) return it->second;
  slots_[slot.name] = &slot;
  return biases_.emplace(slot.name, slot.bias.to_f32()).first->second;
}

Tensor& ScaledTensors::norm(const std::string& name) {
  auto it = norms_.find(name);
  if (it != norms_.end()) return it->second;
  return norms_.emplace(name, model_.tensors().at(name).to_f32()).first->second;
}

void ScaledTensors::fold(const ScaleSite& site, const std::vector<float>& s) {
  check(site.producer != ScaleProducer::None, "fold: '{}' has no producer to absorb a scale", site.group.front()->name);
  const int64_t in = static_cast<int64_t>(s.size());
  for (const LinearSlot* l : site.group) {
    Tensor& w = weight(*l);
    check(w.dim(1) == in, "fold: '{}' has {} inputs, the scale {}", l->name, w.dim(1), in);
    float* p = w.data<float>();
    for (int64_t r = 0; r < w.dim(0); ++r)
      for (int64_t j = 0; j < in; ++j) p[r * in + j] *= s[j];
  }
  auto divide = [&](float* v) {
    for (int64_t j = 0; j < in; ++j) v[j] /= s[j];
  };
  if (site.producer == ScaleProducer::Norm) {
    divide(norm(site.norm_weight).data<float>());
    if (!site.norm_bias.empty()) divide(norm(site.norm_bias).data<float>());
    return;
  }
  Tensor& w = weight(*site.prev);
  check(site.row0 + in <= w.dim(0), "fold: rows {}..{} of '{}' ({} rows)", site.row0, site.row0 + in, site.prev->name,
        w.dim(0));
  const int64_t cols = w.dim(1);
  for (int64_t j = 0; j < in; ++j) {
    float* row = w.data<float>() + (site.row0 + j) * cols;
    for (int64_t k = 0; k < cols; ++k) row[k] /= s[j];
  }
  if (site.prev->bias.defined() && site.prev->bias.numel() > 0) divide(bias(*site.prev).data<float>() + site.row0);
}

TensorMap ScaledTensors::edits() const {
  TensorMap out;
  for (const auto& [name, t] : norms_) out.emplace(name, t);
  for (const auto& [name, w] : weights_) {
    const LinearSlot& slot = *slots_.at(name);
    const auto it = model_.tensors().find(name + ".weight");
    check(it != model_.tensors().end(), "{}: layer '{}' has no stored weight to replace", model_.source().string(),
          name);
    // A slot's weight is a view of its checkpoint tensor, or (GPT-2 Conv1D) a transposed copy of it.
    if (same_layout(it->second, slot.weight)) {
      out.emplace(name + ".weight", w);
      continue;
    }
    const int64_t o = w.dim(0), in = w.dim(1);
    check(it->second.shape() == Shape{in, o}, "{}: '{}.weight' has shape {}, expected [{}, {}] or [{}, {}]",
          model_.source().string(), name, shape_str(it->second.shape()), o, in, in, o);
    Tensor t = Tensor::empty(DType::F32, {in, o});
    for (int64_t r = 0; r < o; ++r)
      for (int64_t j = 0; j < in; ++j) t.data<float>()[j * o + r] = w.data<float>()[r * in + j];
    out.emplace(name + ".weight", std::move(t));
  }
  for (const auto& [name, b] : biases_) out.emplace(name + ".bias", b);
  return out;
}

std::unique_ptr<Model> rebuild_model(Model& model, const TensorMap& edits) {
  TensorMap tensors = model.tensors();
  for (const auto& [name, t] : edits) {
    auto it = tensors.find(name);
    check(it != tensors.end() && it->second.shape() == t.shape(), "rebuild: tensor '{}' {} does not replace {}", name,
          shape_str(t.shape()), it == tensors.end() ? std::string("a missing tensor") : shape_str(it->second.shape()));
    it->second = t;
  }
  std::unique_ptr<Model> out = build_model(model.config(), std::move(tensors), model.source());
  out->set_tokenizer(std::move(TokenizerAccess::of(model)));
  return out;
}

ChannelCapture::ChannelCapture(int64_t in_features, int64_t max_rows_kept)
    : in(in_features),
      max_rows(max_rows_kept),
      sum_abs(static_cast<size_t>(in_features), 0.0),
      max_abs(static_cast<size_t>(in_features), 0.f) {}

void ChannelCapture::add(const float* x, int64_t n) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < in; ++j) {
      const float a = std::fabs(x[r * in + j]);
      sum_abs[j] += a;
      max_abs[j] = std::max(max_abs[j], a);
    }
  seen += n;
  const int64_t keep = std::min(n, max_rows - kept());
  if (keep > 0) rows.insert(rows.end(), x, x + keep * in);
}

std::vector<float> ChannelCapture::mean_abs() const {
  std::vector<float> m(static_cast<size_t>(in), 0.f);
  if (seen > 0)
    for (int64_t j = 0; j < in; ++j) m[j] = static_cast<float>(sum_abs[j] / static_cast<double>(seen));
  return m;
}

TensorMap search_channel_scales(Model& model, const CalibSet& set, const std::vector<std::string>& planned,
                                int64_t max_rows, const ScaleSearch& search) {
  auto* dec = dynamic_cast<DecoderModel*>(&model);
  auto* enc = dynamic_cast<EncoderModel*>(&model);
  check(dec != nullptr || (enc != nullptr && set.images.empty()),
        "{}: channel-scale search (AWQ, SmoothQuant) walks decoder blocks or text encoder layers; {} is neither: use "
        "--method gptq or rtn",
        model.source().string(), model.config().architecture);
  const std::set<std::string> want(planned.begin(), planned.end());
  ScaledTensors tensors(model);
  // Encoders capture every group of a layer in one pass: one capture per group, by its first slot.
  std::map<std::string, std::unique_ptr<ChannelCapture>> caps;
  GroupVisitor visit;
  visit.capture = [&](int block, const std::vector<LinearSlot*>& group) -> RowSink {
    if (block < 0 || std::none_of(group.begin(), group.end(), [&](const LinearSlot* s) { return want.count(s->name); }))
      return {};
    auto& cap = caps[group.front()->name];
    cap = std::make_unique<ChannelCapture>(group.front()->impl->in_features(), max_rows);
    return [c = cap.get()](const float* x, int64_t m) { c->add(x, m); };
  };
  visit.captured = [&](int /*block*/, const std::vector<LinearSlot*>& group, const BlockProbe& probe) {
    const auto it = caps.find(group.front()->name);
    search(scale_site(model, group), *it->second, tensors, probe);
    caps.erase(it);
  };
  if (dec)
    walk_decoder_blocks(*dec, set, visit);
  else
    walk_encoder_layers(*enc, set, visit);
  return tensors.edits();
}

Tensor fake_quantize_weights(const Tensor& weight, const QuantSpec& spec) {
  check(weight.rank() == 2, "fake_quantize_weights: weight shape {}; expected [out, in]", shape_str(weight.shape()));
  Tensor out = weight.to_f32();
  if (spec.scheme == WeightScheme::F32) return out;
  const int64_t rows = weight.dim(0), in = weight.dim(1);
  const PackedLinear p = quantize_linear_weights(out, nullptr, spec);
  float* y = out.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    float* yr = y + r * in;
    switch (spec.scheme) {
      case WeightScheme::BF16:
        kernels::dequantize_row_bf16_ref(p.find("weight")->data<uint16_t>() + r * in, in, yr);
        break;
      case WeightScheme::W8A16:
      case WeightScheme::W8A8:
        kernels::dequantize_row_s8_ref(p.find("weight")->data<int8_t>() + r * in,
                                       p.find("weight_scale")->data<float>()[r], in, yr);
        break;
      case WeightScheme::W4A16: {
        const int64_t groups = kernels::w4_groups(in, spec.group);
        const Tensor* zp = p.find("weight_zero_point");
        kernels::dequantize_row_w4_ref(
            p.find("weight_packed")->data<uint8_t>() + r * kernels::w4_row_bytes(in, spec.group),
            p.find("weight_scale")->data<uint16_t>() + r * groups, zp ? zp->data<uint8_t>() + r * groups : nullptr, in,
            spec.group, yr);
        break;
      }
      case WeightScheme::F32: break;
    }
  }
  return out;
}

double output_sq_error(const float* x, int64_t rows, const Tensor& a, const Tensor& b) {
  check(a.shape() == b.shape() && a.rank() == 2, "output_sq_error: shapes {} and {}", shape_str(a.shape()),
        shape_str(b.shape()));
  const int64_t out = a.dim(0);
  Tensor diff = Tensor::empty(DType::F32, a.shape());
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* pd = diff.data<float>();
  for (int64_t i = 0; i < a.numel(); ++i) pd[i] = pa[i] - pb[i];
  std::vector<float> y(static_cast<size_t>(rows * out));
  make_dense_linear(diff)->forward(x, rows, y.data());
  double sum = 0;
  for (const float v : y) sum += static_cast<double>(v) * v;
  return sum;
}

}  // namespace shrink
