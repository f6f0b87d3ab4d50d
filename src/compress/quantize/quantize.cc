// The quantize pass: slot selection (skips, overrides), round-to-nearest packing through ops/qlinear.h, static
// activation scales from calibration, and the per-layer report.
#include <shrink/compress/calibration.h>
#include <shrink/compress/lowrank.h>
#include <shrink/compress/quantize.h>
#include <shrink/compress/scale_fold.h>
#include <shrink/core/build_info.h>
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/kernels/quant.h>

#include <algorithm>
#include <regex>

namespace shrink {

namespace {

struct Pattern {
  std::string text;
  std::regex re;
};

Pattern compile(const std::string& text, const char* what) {
  try {
    return {text, std::regex(text, std::regex::ECMAScript)};
  } catch (const std::regex_error& e) {
    fail("{} pattern '{}' is not a valid regular expression ({}); write e.g. 'mlp\\.down_proj' or '^lm_head$'", what,
         text, e.what());
  }
}

const Pattern* first_match(const std::vector<Pattern>& ps, const std::string& name) {
  for (const auto& p : ps)
    if (std::regex_search(name, p.re)) return &p;
  return nullptr;
}

// Decides every slot before any is touched, so a bad request leaves the model as it was.
const char* method_name(QuantMethod m) {
  switch (m) {
    case QuantMethod::Rtn: return "rtn";
    case QuantMethod::Static: return "static";
    case QuantMethod::Gptq: return "gptq";
    case QuantMethod::Awq: return "awq";
    case QuantMethod::SmoothQuant: return "smoothquant";
  }
  return "?";
}

struct Plan {
  LinearSlot* slot;
  QuantSpec spec;
  std::string note;
  bool quantize;
};

std::vector<Plan> plan_slots(Model& model, const QuantizeOptions& opt, bool* any_static_out) {
  std::vector<Pattern> skips, overrides;
  std::vector<QuantSpec> override_specs;
  if (opt.default_skips)
    for (const auto& s : default_skip_patterns(model, opt.quantize_lm_head)) skips.push_back(compile(s, "skip"));
  for (const auto& s : opt.skip) skips.push_back(compile(s, "--skip"));
  for (const auto& [pattern, spec] : opt.overrides) {
    overrides.push_back(compile(pattern, "per-layer override"));
    override_specs.push_back(spec);
  }
  std::vector<Plan> plan;
  bool any_static = false;
  for (auto& slot : model.linears()) {
    Plan p{&slot, opt.scheme, {}, true};
    if (const Pattern* s = first_match(skips, slot.name)) {
      p.quantize = false;
      p.note = "skipped (" + s->text + ")";
    } else {
      for (size_t i = 0; i < overrides.size(); ++i)
        if (std::regex_search(slot.name, overrides[i].re)) {
          p.spec = override_specs[i];
          p.note = "override (" + overrides[i].text + ")";
          break;
        }
      if (p.spec.scheme == WeightScheme::F32) p.quantize = false;
    }
    const LowRankLinear* lr = as_lowrank(slot.impl.get());
    if (p.quantize && lr) {
      // Each factor becomes a packed Linear of the scheme, by round-to-nearest: the calibrated methods work on a
      // layer's dense weight and its own inputs, which a factor pair does not have.
      if (lr->quantized())
        fail("{}: layer '{}' is already {} (loaded packed); quantize from the low-rank model instead",
             model.source().string(), slot.name, lr->scheme());
      if (opt.method != QuantMethod::Rtn || p.spec.static_act)
        fail(
            "{}: layer '{}' is low-rank (rank {}); its factors are quantized by round-to-nearest only (--method rtn "
            "with a weight-only scheme or dynamic w8a8), not by --method {}. Use --method rtn, or leave the layer "
            "dense with --skip '{}'",
            model.source().string(), slot.name, lr->rank(), p.spec.static_act ? "static" : method_name(opt.method),
            slot.name);
      p.note = fmt::format("low-rank factors A [{} x {}], B [{} x {}]", lr->rank(), lr->in_features(),
                           lr->out_features(), lr->rank());
      for (const auto& [factor, in] : {std::pair{"A", lr->in_features()}, std::pair{"B", lr->rank()}})
        if (const std::string note = quant_shape_note(p.spec, in); !note.empty())
          p.note += fmt::format("; {} {}", factor, note);
    } else if (p.quantize) {
      if (slot.impl->packed() || !slot.weight.defined() || slot.weight.numel() == 0)
        fail(
            "{}: layer '{}' is already {} (loaded packed); quantize from the original model instead of a "
            "quantized one",
            model.source().string(), slot.name, slot.impl->scheme());
      if (opt.method == QuantMethod::Static && p.spec.scheme == WeightScheme::W8A8) p.spec.static_act = true;
      any_static = any_static || p.spec.static_act;
      const std::string shape_note = quant_shape_note(p.spec, slot.weight.dim(1));
      if (!shape_note.empty()) p.note += (p.note.empty() ? "" : "; ") + shape_note;
    }
    plan.push_back(std::move(p));
  }
  *any_static_out = any_static;
  return plan;
}

// --scheme auto: every slot a w8a16 pass would touch gets its scheme from the mixed-precision search; the user's
// overrides come first (the first match wins), the search's choice after them.
QuantizeReport quantize_auto(Model& model, const QuantizeOptions& opt) {
  Timer timer;
  if (opt.calib.empty() && opt.calib_images.empty())
    fail(
        "--scheme auto measures each layer's sensitivity on calibration data: pass --calib FILE (text the model "
        "sees in use, e.g. 32 windows of 128 tokens; for a classifier a TSV of sentence<TAB>label)");
  QuantizeOptions probe = opt;
  probe.auto_scheme = false;
  probe.scheme = parse_quant_spec("w8a16");
  std::vector<std::string> slots;
  for (const auto& [name, spec] : quantization_plan(model, probe)) {
    if (const LinearSlot* s = model.find_linear(name); s && as_lowrank(s->impl.get()))
      fail(
          "{}: layer '{}' is low-rank; --scheme auto measures each layer with its dense weight. Quantize a low-rank "
          "model with one scheme (e.g. --scheme w8a16), or leave its low-rank layers out with --skip",
          model.source().string(), name);
    slots.push_back(name);
  }
  // Even examples measure the sensitivities, odd ones are the held-out check (labels follow their examples).
  CalibSet calib, heldout;
  if (!opt.calib_images.empty()) {
    const ModelConfig& c = model.config();
    const size_t per = static_cast<size_t>(c.num_channels) * c.image_size * c.image_size;
    const size_t n = per ? opt.calib_images.size() / per : 0;
    check(n >= 2, "--scheme auto needs at least 2 calibration images (found {})", n);
    for (size_t i = 0; i < n; ++i) {
      auto& dst = (i % 2 ? heldout : calib).images;
      dst.insert(dst.end(), opt.calib_images.begin() + static_cast<ptrdiff_t>(i * per),
                 opt.calib_images.begin() + static_cast<ptrdiff_t>((i + 1) * per));
    }
  } else {
    // A classifier's accuracy budget scores against the labels of a sentence<TAB>label file.
    const bool labelled = opt.mixed.budget_drop_pct > 0 && model.kind() == ModelKind::Encoder;
    const ModelConfig& c = model.config();
    const CalibSet set =
        labelled ? read_labeled_calib_set(opt.calib, model.require_tokenizer(), opt.calib_samples, opt.calib_seq_len,
                                          c.id2label, c.num_labels)
                 : read_calib_set(opt.calib, model.require_tokenizer(), opt.calib_samples, opt.calib_seq_len);
    check(set.sequences.size() >= 2, "{}: --scheme auto needs at least 2 calibration windows (found {}); use more text",
          opt.calib.string(), set.sequences.size());
    for (size_t i = 0; i < set.sequences.size(); ++i) {
      CalibSet& dst = i % 2 ? heldout : calib;
      dst.sequences.push_back(set.sequences[i]);
      if (!set.labels.empty()) dst.labels.push_back(set.labels[i]);
    }
  }
  MixedReport mixed = choose_mixed_precision(model, slots, calib, heldout, opt.mixed);
  QuantizeOptions rest = probe;
  rest.scheme = QuantSpec{};  // layers the search left at f32 stay dense
  for (auto& o : mixed.overrides()) rest.overrides.push_back(std::move(o));
  rest.method = QuantMethod::Rtn;
  QuantizeReport report = quantize_model(model, rest);
  report.mixed = std::move(mixed);
  report.calib_ms += report.mixed.time_ms;
  report.time_ms = timer.elapsed_ms();
  return report;
}

}  // namespace

QuantMethod parse_quant_method(const std::string& text) {
  if (text == "rtn") return QuantMethod::Rtn;
  if (text == "static") return QuantMethod::Static;
  if (text == "gptq") return QuantMethod::Gptq;
  if (text == "awq") return QuantMethod::Awq;
  if (text == "smoothquant") return QuantMethod::SmoothQuant;
  fail(
      "unknown quantization method '{}'; valid methods: rtn (round-to-nearest weights, dynamic activations), static "
      "(w8a8-static: activation scales from --calib), gptq (W4/W8 weights by GPTQ from --calib), awq (W4/W8 "
      "weights with activation-aware channel scales from --calib), smoothquant (w8a8 with activation outliers "
      "migrated into the weights, from --calib)",
      text);
}

std::vector<std::string> default_skip_patterns(const Model& model, bool quantize_lm_head) {
  // A ViT's patch projection is a convolution kernel in the checkpoint ([hidden, channels, p, p]): it stays a dense
  // tensor Hugging Face can read, and at p * p inputs it is a negligible share of the bytes.
  if (model.kind() == ModelKind::Encoder) return {"^classifier$", "^pre_classifier$", "patch_embeddings\\.projection$"};
  if (!quantize_lm_head) return {"^lm_head$"};
  return {};
}

std::string quant_shape_note(const QuantSpec& spec, int64_t in_features) {
  if (spec.scheme != WeightScheme::W4A16 || spec.group <= 0 || in_features % spec.group == 0) return {};
  return fmt::format("padded {} -> {} columns (group {})", in_features,
                     kernels::w4_groups(in_features, spec.group) * spec.group, spec.group);
}

QuantizeReport quantize_model(Model& model, const QuantizeOptions& opt) {
  Timer timer;
  if (opt.method == QuantMethod::Awq || opt.method == QuantMethod::SmoothQuant)
    fail("--method {}: the scales are folded into a rebuilt model; call quantize_model with the owning pointer",
         opt.method == QuantMethod::Awq ? "awq" : "smoothquant");
  if (opt.auto_scheme) return quantize_auto(model, opt);
  bool any_static = false;
  std::vector<Plan> plan = plan_slots(model, opt, &any_static);
  if (opt.method == QuantMethod::Static && !any_static)
    fail("--method static calibrates W8A8 activations, but no layer is w8a8 (scheme {}); use --scheme w8a8",
         opt.scheme.name());

  QuantizeReport report;
  if (any_static) {
    check_observer_name(opt.observer.observer);
    if (opt.calib.empty() && opt.calib_images.empty())
      fail(
          "w8a8-static needs calibration data: pass --calib FILE (text the model sees in use, a few thousand "
          "tokens; image models: --calib-images [DIR]) or use --scheme w8a8 (dynamic per-token activations)");
    // Ranges are observed on the unquantized model (every slot still dense), one pass over the set.
    Timer calib_timer;
    CalibSet set;
    if (!opt.calib_images.empty())
      set.images = opt.calib_images;
    else
      set = read_calib_set(opt.calib, model.require_tokenizer(), opt.calib_samples, opt.calib_seq_len);
    const std::map<std::string, ActRange> ranges = calibrate_activations(model, set, opt.observer);
    for (auto& p : plan) {
      if (!p.quantize || !p.spec.static_act) continue;
      auto it = ranges.find(p.slot->name);
      if (it == ranges.end() || !(it->second.scale > 0.f))
        fail(
            "{}: calibration saw no input for layer '{}' (the calibration set never reached it); use --scheme w8a8 "
            "(dynamic) or --skip it",
            opt.calib_images.empty() ? opt.calib.string() : "calibration images", p.slot->name);
      p.spec.act_scale = it->second.scale;
      p.spec.act_zero_point = it->second.zero_point;
      p.note += fmt::format("{}{} input range [{:.4g}, {:.4g}]", p.note.empty() ? "" : "; ", it->second.observer,
                            it->second.lo, it->second.hi);
    }
    report.calib_ms = calib_timer.elapsed_ms();
  }

  // GPTQ: every W4/W8 slot, sequentially from the calibration set (the other planned slots stay RTN below).
  std::vector<size_t> before(plan.size());
  for (size_t i = 0; i < plan.size(); ++i) before[i] = plan[i].slot->impl->weight_bytes();
  if (opt.method == QuantMethod::Gptq) {
    check(opt.calib_images.empty(),
          "--method gptq calibrates on text sequences; image models take --method rtn or static (w8a8-static)");
    if (opt.calib.empty())
      fail(
          "--method gptq needs calibration data: pass --calib FILE (text the model sees in use; a few hundred "
          "thousand characters, e.g. 64 windows of 128 tokens)");
    std::map<std::string, QuantSpec> gptq_plan;
    for (auto& p : plan)
      if (p.quantize && p.spec.scheme != WeightScheme::BF16) gptq_plan.emplace(p.slot->name, p.spec);
    const CalibSet set = read_calib_set(opt.calib, model.require_tokenizer(), opt.calib_samples, opt.calib_seq_len);
    report.gptq = gptq_model(model, set, gptq_plan, opt.gptq);
    for (auto& p : plan) {
      if (!gptq_plan.count(p.slot->name)) continue;
      p.quantize = false;  // done
      for (const auto& l : report.gptq.layers)
        if (l.name == p.slot->name)
          p.note += fmt::format("{}gptq {} rows{}", p.note.empty() ? "" : "; ", l.rows,
                                l.dead_columns ? fmt::format(", {} dead inputs", l.dead_columns) : std::string());
    }
    report.calib_ms += report.gptq.time_ms;
  }

  for (size_t i = 0; i < plan.size(); ++i) {
    Plan& p = plan[i];
    LayerQuantization l;
    l.name = p.slot->name;
    l.bytes_before = before[i];
    if (p.quantize) {
      if (const LowRankLinear* lr = as_lowrank(p.slot->impl.get())) {
        const Tensor* bias = lr->bias().defined() ? &lr->bias() : nullptr;
        p.slot->impl = std::make_unique<LowRankLinear>(make_quantized_linear(lr->a(), nullptr, p.spec),
                                                       make_quantized_linear(lr->b(), bias, p.spec));
      } else {
        const Tensor* bias = p.slot->bias.defined() && p.slot->bias.numel() > 0 ? &p.slot->bias : nullptr;
        p.slot->impl = make_packed_linear(quantize_linear_weights(p.slot->weight, bias, p.spec));
      }
    }
    l.scheme = p.slot->impl->scheme();
    l.note = p.note;
    l.bytes_after = p.slot->impl->weight_bytes();
    report.bytes_before += l.bytes_before;
    report.bytes_after += l.bytes_after;
    report.layers.push_back(std::move(l));
  }
  report.time_ms = timer.elapsed_ms();
  report.peak_rss_bytes = peak_rss_bytes();
  return report;
}

std::map<std::string, QuantSpec> quantization_plan(Model& model, const QuantizeOptions& opt) {
  bool any_static = false;
  std::map<std::string, QuantSpec> plan;
  for (const Plan& p : plan_slots(model, opt, &any_static))
    if (p.quantize) plan.emplace(p.slot->name, p.spec);
  return plan;
}

QuantizeReport quantize_model(std::unique_ptr<Model>& model, const QuantizeOptions& opt) {
  const bool awq = opt.method == QuantMethod::Awq;
  if (!awq && opt.method != QuantMethod::SmoothQuant) return quantize_model(*model, opt);
  Timer timer;
  const char* name = awq ? "awq" : "smoothquant";
  if (opt.calib.empty())
    fail(
        "--method {} needs calibration data: pass --calib FILE (text the model sees in use; a few hundred thousand "
        "characters, e.g. 64 windows of 128 tokens)",
        name);
  const std::map<std::string, QuantSpec> plan = quantization_plan(*model, opt);
  const bool any_static = std::any_of(plan.begin(), plan.end(), [](const auto& p) { return p.second.static_act; });
  if (!awq &&
      std::none_of(plan.begin(), plan.end(), [](const auto& p) { return p.second.scheme == WeightScheme::W8A8; }))
    fail(
        "--method smoothquant prepares W8A8 activations, but no layer is w8a8 (scheme {}); use --scheme w8a8 or "
        "w8a8-static",
        opt.scheme.name());
  const CalibSet set = read_calib_set(opt.calib, model->require_tokenizer(), opt.calib_samples, opt.calib_seq_len);
  QuantizeOptions rest = opt;
  AwqReport awq_rep;
  SmoothQuantReport smooth_rep;
  TensorMap edits;
  if (awq) {
    edits = awq_search(*model, set, plan, opt.awq, &awq_rep);
    rest.method = opt.awq_then_gptq ? QuantMethod::Gptq : QuantMethod::Rtn;
  } else {
    edits = smoothquant_search(*model, set, plan, opt.smooth, &smooth_rep);
    rest.method = any_static ? QuantMethod::Static : QuantMethod::Rtn;
  }
  const double search_ms = timer.elapsed_ms();
  model = rebuild_model(*model, edits);
  QuantizeReport report = quantize_model(*model, rest);
  report.awq = std::move(awq_rep);
  report.smooth = std::move(smooth_rep);
  report.calib_ms += search_ms;
  report.time_ms = timer.elapsed_ms();
  return report;
}

}  // namespace shrink
