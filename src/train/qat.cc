// Quantization-aware training: the fake-quant linear hook (W8A8 observed-then-learned activation ranges, W4
// group-wise weights) for encoders and decoders, the LM loop (CE or KL to the fp32 model), the conversion to packed
// engine layers, and engine predictions on classification data.
#include <shrink/core/error.h>
#include <shrink/eval/evaluate.h>
#include <shrink/kernels/quant.h>
#include <shrink/models/generate.h>
#include <shrink/train/distill.h>
#include <shrink/train/qat.h>

#include <algorithm>
#include <map>
#include <regex>

namespace shrink::train {

struct Qat::State {
  QatOptions opt;
  std::vector<std::string> slots;
  struct Range {
    Var lo, hi;
    bool seen = false;  // the EMA starts from the first batch's min/max
  };
  std::map<std::string, Range> ranges;  // W8A8 only
  bool observing = false;

  bool act_quant() const { return opt.spec.scheme == WeightScheme::W8A8; }
};

namespace {

// Linear slots of the encoder: the [out, in] weights with a bias beside them (embedding tables have none; ViT's
// patch projection is a 4-d convolution weight and stays in fp32).
std::vector<std::string> linear_slots(const TrainableEncoder& m) {
  std::vector<std::string> out;
  for (const auto& p : m.parameters()) {
    if (!p.name.ends_with(".weight") || p.var.value().rank() != 2) continue;
    const std::string slot = p.name.substr(0, p.name.size() - 7);
    if (m.has_param(slot + ".bias")) out.push_back(slot);
  }
  return out;
}

// Linear slots of the decoder (no biases): every [out, in] weight but the embedding table, and lm_head, which a tied
// model computes with the embedding table.
std::vector<std::string> linear_slots(const TrainableDecoder& m) {
  std::vector<std::string> out;
  for (const auto& p : m.parameters())
    if (p.name.ends_with(".weight") && p.var.value().rank() == 2 && p.name != "model.embed_tokens.weight")
      out.push_back(p.name.substr(0, p.name.size() - 7));
  if (m.config().tie_word_embeddings) out.push_back("lm_head");
  return out;
}

Var one(float v) {
  return parameter(Tensor::from_f32({v}, {1}));
}

}  // namespace

Qat::Qat(TrainableEncoder& model, const QatOptions& opt) : s_(std::make_shared<State>()) {
  s_->opt = opt;
  install(linear_slots(model), {"^classifier$", "^pre_classifier$"}, model.linear_hook, model.extra_parameters);
}

Qat::Qat(TrainableDecoder& model, const QatOptions& opt) : s_(std::make_shared<State>()) {
  s_->opt = opt;
  install(linear_slots(model), {"^lm_head$"}, model.linear_hook, model.extra_parameters);
}

void Qat::install(const std::vector<std::string>& linears, const std::vector<std::string>& default_skips, Hook& hook,
                  std::vector<NamedParam>& extra) {
  const QatOptions& opt = s_->opt;
  const QuantSpec& spec = opt.spec;
  check(spec.scheme == WeightScheme::W8A8 || spec.scheme == WeightScheme::W4A16,
        "qat: scheme '{}' is not trained here; use w8a8 (static activations learned in training) or "
        "w4a16-g32|g64|g128[-asym]",
        spec.name());
  check(opt.observe_steps >= 0 && opt.ema >= 0.f && opt.ema < 1.f,
        "qat: observe_steps {} and ema {}; expected observe_steps >= 0 and 0 <= ema < 1", opt.observe_steps, opt.ema);
  std::vector<std::string> patterns = opt.skip;
  if (opt.default_skips) patterns.insert(patterns.end(), default_skips.begin(), default_skips.end());
  std::vector<std::regex> skips;
  for (const auto& s : patterns) {
    try {
      skips.emplace_back(s, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      fail("qat: skip pattern '{}' is not a valid regular expression ({}); write e.g. '^classifier$'", s, e.what());
    }
  }
  for (const auto& slot : linears) {
    if (std::any_of(skips.begin(), skips.end(), [&](const std::regex& r) { return std::regex_search(slot, r); }))
      continue;
    s_->slots.push_back(slot);
    if (s_->act_quant()) {
      State::Range r{one(-1.f), one(1.f), false};
      extra.push_back({slot + ".input_lo", r.lo, false});
      extra.push_back({slot + ".input_hi", r.hi, false});
      s_->ranges.emplace(slot, r);
    }
  }
  check(!s_->slots.empty(), "qat: no Linear layer left to quantize (every slot matched a skip pattern)");
  s_->observing = s_->act_quant() && opt.observe_steps > 0;

  std::shared_ptr<State> st = s_;
  hook = [st](const std::string& slot, const Var& x, const Var& w, const Var& b) -> Var {
    auto it = st->ranges.find(slot);
    const bool quantized = std::find(st->slots.begin(), st->slots.end(), slot) != st->slots.end();
    if (!quantized) return linear(x, w, b);
    const QuantSpec& sp = st->opt.spec;
    if (sp.scheme == WeightScheme::W4A16) return linear(x, fake_quant_w4(w, sp.group, sp.asym), b);
    State::Range& r = it->second;
    Var lo = r.lo, hi = r.hi;
    // Observation runs on training forwards only (evaluation runs under NoGradGuard).
    if (st->observing && grad_enabled()) {
      const float* d = x.data();
      const auto [mn, mx] = std::minmax_element(d, d + x.numel());
      float& l = lo.mutable_data()[0];
      float& h = hi.mutable_data()[0];
      if (!r.seen) {
        l = *mn, h = *mx, r.seen = true;
      } else {
        const float m = st->opt.ema;
        l = m * l + (1.f - m) * *mn;
        h = m * h + (1.f - m) * *mx;
      }
    }
    // A learned range can cross over; keep it a valid interval (choose_u8_params widens it to include 0).
    if (!(hi.item() > lo.item())) hi.mutable_data()[0] = lo.item() + 1e-6f;
    return linear(fake_quant_a8(x, lo, hi), fake_quant_w8(w), b);
  };
}

const QatOptions& Qat::options() const {
  return s_->opt;
}
const std::vector<std::string>& Qat::slots() const {
  return s_->slots;
}
bool Qat::observing() const {
  return s_->observing;
}
void Qat::set_observing(bool on) {
  s_->observing = on && s_->act_quant();
}
void Qat::after_update(int64_t step) {
  if (s_->observing && step >= s_->opt.observe_steps) s_->observing = false;
}

std::pair<float, float> Qat::input_range(const std::string& slot) const {
  auto it = s_->ranges.find(slot);
  if (it == s_->ranges.end())
    fail("qat: slot '{}' has no activation range (scheme {} quantizes activations: {})", slot, s_->opt.spec.name(),
         s_->act_quant() ? "yes, but the slot is not quantized" : "no");
  return {it->second.lo.item(), it->second.hi.item()};
}

QuantSpec Qat::slot_spec(const std::string& slot) const {
  QuantSpec spec = s_->opt.spec;
  if (!s_->act_quant()) return spec;
  const auto [lo, hi] = input_range(slot);
  spec.static_act = true;
  kernels::choose_u8_params(lo, std::max(hi, lo + 1e-6f), &spec.act_scale, &spec.act_zero_point);
  return spec;
}

void pack_linears(Model& model, const std::vector<std::string>& slots,
                  const std::function<QuantSpec(const std::string&)>& spec) {
  for (const auto& slot : slots) {
    LinearSlot* s = model.find_linear(slot);
    if (!s)
      fail("qat: the engine's {} model has no Linear '{}'; the trained slot cannot be packed",
           model.config().architecture, slot);
    const Tensor* bias = s->bias.defined() && s->bias.numel() > 0 ? &s->bias : nullptr;
    s->impl = make_packed_linear(quantize_linear_weights(s->weight, bias, spec(slot)));
  }
}

namespace {

template <class M>
std::unique_ptr<Model> convert(const M& model, const Qat& qat) {
  std::unique_ptr<Model> m = build_model(model.config(), model.state(), "qat");
  pack_linears(*m, qat.slots(), [&](const std::string& slot) { return qat.slot_spec(slot); });
  return m;
}

}  // namespace

std::unique_ptr<Model> convert_qat(const TrainableEncoder& model, const Qat& qat) {
  return convert(model, qat);
}

std::unique_ptr<Model> convert_qat(const TrainableDecoder& model, const Qat& qat) {
  return convert(model, qat);
}

QatLoss parse_qat_loss(const std::string& name) {
  if (name == "ce") return QatLoss::CrossEntropy;
  if (name == "kl") return QatLoss::Kl;
  fail(
      "qat: loss '{}' is not known; expected kl (self-distillation to the fp32 model) or ce (cross-entropy on the "
      "text)",
      name);
}

std::vector<int32_t> sample_training_tokens(const DecoderModel& model, int sequences, int length, uint64_t seed) {
  check(sequences > 0 && length > 1, "qat: {} sampled sequences of {} tokens; expected >= 1 sequence of >= 2 tokens",
        sequences, length);
  const int bos = model.config().bos_token_id >= 0 ? model.config().bos_token_id : 1;
  std::vector<int32_t> out;
  for (int i = 0; i < sequences; ++i) {
    GenerateOptions g;
    g.max_new_tokens = length - 1;
    g.sampling.temperature = 1.f;
    g.sampling.seed = seed + static_cast<uint64_t>(i);
    const GenerateResult r = generate(model, {bos}, g);
    out.push_back(bos);
    out.insert(out.end(), r.ids.begin(), r.ids.end());
  }
  return out;
}

LmReport qat_lm(TrainableDecoder& model, Qat& qat, const LmData& train, const LmData& val, LmTrainOptions opt,
                QatLoss loss, const std::function<void(const LmProgress&)>& progress) {
  auto user = opt.after_update;
  opt.after_update = [&qat, user](int64_t step) {
    qat.after_update(step);
    if (user) user(step);
  };
  if (loss == QatLoss::CrossEntropy) return train_lm(model, train, val, opt, progress);
  // The fp32 teacher: the weights as they are now, without the hook.
  const TrainableDecoder teacher(model.config(), model.state());
  KdOptions kd;
  kd.temperature = 1.f;
  kd.alpha = 0.f;  // KL alone: T^2 * KL(fp32 || QAT) at T = 1
  // distill_lm drops the student's extra parameters (its projections) at the end; the W8A8 ranges are ours.
  const std::vector<NamedParam> extra = model.extra_parameters;
  // No selection by validation perplexity: it does not measure faithfulness to fp32 (trained on the model's own
  // samples, every update raised the perplexity of held-out Shakespeare while lowering the KLD), so the last weights
  // are kept; the caller measures the KLD on held-out text.
  LmReport rep = distill_lm(model, teacher, train, LmData{}, opt, kd, progress);
  model.extra_parameters = extra;
  return rep;
}

std::vector<int> engine_predict(const EncoderModel& model, const ClassifySource& d, int batch) {
  check(batch > 0, "engine_predict: batch {} must be > 0", batch);
  return run_classifier(model, d, batch).predictions();
}

double engine_accuracy(const EncoderModel& model, const ClassifySource& d, int batch) {
  const auto p = engine_predict(model, d, batch);
  int64_t ok = 0;
  for (size_t i = 0; i < p.size(); ++i) ok += p[i] == d.label(i);
  return d.size() ? static_cast<double>(ok) / static_cast<double>(d.size()) : 0.0;
}

}  // namespace shrink::train
