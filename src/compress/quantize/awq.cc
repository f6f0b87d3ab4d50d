// AWQ (include/shrink/compress/awq.h): the alpha grid search of llm-awq auto_scale on a group's output error, the
// per-group max-value shrink search of auto_clip, and the model-level search over the decoder blocks.
#include <shrink/compress/awq.h>
#include <shrink/compress/sequential.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/core/timer.h>
#include <shrink/kernels/quant.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

namespace shrink {

namespace {

// sum over rows of ||x w^T||^2
double output_sq_norm(const float* x, int64_t rows, const Tensor& w) {
  std::vector<float> y(static_cast<size_t>(rows * w.dim(0)));
  make_dense_linear(w)->forward(x, rows, y.data());
  double sum = 0;
  for (const float v : y) sum += static_cast<double>(v) * v;
  return sum;
}

// Weight with columns multiplied by s (mul) or divided by it.
Tensor scale_columns(const Tensor& w, const std::vector<float>& s, bool mul) {
  Tensor out = w.to_f32();
  const int64_t in = w.dim(1);
  float* p = out.data<float>();
  for (int64_t r = 0; r < w.dim(0); ++r)
    for (int64_t j = 0; j < in; ++j) p[r * in + j] = mul ? p[r * in + j] * s[j] : p[r * in + j] / s[j];
  return out;
}

bool is_query_or_key(const std::string& name) {
  // llm-awq leaves q/k unclipped (attention scores are sensitive to their range); GPT-2 fuses q|k|v in c_attn.
  return name.ends_with("q_proj") || name.ends_with("k_proj") || name.ends_with("attn.c_attn");
}

// Round-to-nearest quantize-dequantize of one W4 group (or W8 row) of n values, as quantize_linear_weights does.
void fake_quantize_group(const float* w, int64_t n, const QuantSpec& spec, float* out) {
  if (spec.scheme == WeightScheme::W4A16) {
    uint8_t codes[64];
    uint16_t scale = 0;
    uint8_t zp = 0;
    kernels::quantize_row_w4_ref(w, n, spec.group, spec.asym, codes, &scale, &zp);
    kernels::dequantize_row_w4_ref(codes, &scale, spec.asym ? &zp : nullptr, n, spec.group, out);
    return;
  }
  std::vector<int8_t> q(static_cast<size_t>(n));
  float scale = 0;
  kernels::quantize_row_s8_ref(w, n, q.data(), &scale);
  kernels::dequantize_row_s8_ref(q.data(), scale, n, out);
}

}  // namespace

std::vector<float> awq_scales(const std::vector<float>& mean_abs, double alpha) {
  std::vector<float> s(mean_abs.size());
  float lo = std::numeric_limits<float>::max(), hi = 0.f;
  for (size_t j = 0; j < s.size(); ++j) {
    s[j] = static_cast<float>(std::pow(std::max<double>(mean_abs[j], 1e-4), alpha));
    lo = std::min(lo, s[j]);
    hi = std::max(hi, s[j]);
  }
  const float norm = std::sqrt(lo * hi);  // llm-awq: scales / sqrt(max * min)
  for (float& v : s) v /= norm;
  return s;
}

Tensor awq_fake_quantize(const Tensor& weight, const std::vector<float>& s, const QuantSpec& spec) {
  if (spec.scheme == WeightScheme::F32) return weight.to_f32();
  return scale_columns(fake_quantize_weights(scale_columns(weight, s, true), spec), s, false);
}

namespace {

// The alpha in {0, 1/grid, ...} whose scales minimize loss(s); alpha 0 (s = 1: plain rounding) comes first.
double search_alpha_by(const std::vector<float>& mean_abs, int grid,
                       const std::function<double(const std::vector<float>&)>& loss, std::vector<float>* scales,
                       double* loss_rtn, double* loss_best) {
  double best = std::numeric_limits<double>::infinity();
  int best_i = 0;
  for (int i = 0; i < grid; ++i) {
    const std::vector<float> s = awq_scales(mean_abs, static_cast<double>(i) / grid);
    const double err = loss(s);
    if (i == 0 && loss_rtn) *loss_rtn = err;
    if (err < best) {
      best = err;
      best_i = i;
      *scales = s;
    }
  }
  if (loss_best) *loss_best = best;
  return static_cast<double>(best_i) / grid;
}

// The planned linears' summed output error sum ||X (Q(W diag s) diag(1/s) - W)^T||^2.
double group_error(const float* x, int64_t rows, const std::vector<const Tensor*>& weights,
                   const std::vector<QuantSpec>& specs, const std::vector<float>& s) {
  double err = 0;
  for (size_t k = 0; k < weights.size(); ++k)
    if (specs[k].scheme != WeightScheme::F32)
      err += output_sq_error(x, rows, awq_fake_quantize(*weights[k], s, specs[k]), weights[k]->to_f32());
  return err;
}

}  // namespace

double awq_search_alpha(const float* x, int64_t rows, const std::vector<float>& mean_abs,
                        const std::vector<const Tensor*>& weights, const std::vector<QuantSpec>& specs, int grid,
                        std::vector<float>* scales, double* error_rtn, double* error_best) {
  check(weights.size() == specs.size() && grid > 0, "awq_search_alpha: {} weights, {} specs, grid {}", weights.size(),
        specs.size(), grid);
  double denom = 0;
  for (size_t k = 0; k < weights.size(); ++k)
    if (specs[k].scheme != WeightScheme::F32) denom += output_sq_norm(x, rows, *weights[k]);
  denom = std::max(denom, std::numeric_limits<double>::min());
  double rtn = 0, best = 0;
  const double alpha = search_alpha_by(
      mean_abs, grid, [&](const std::vector<float>& s) { return group_error(x, rows, weights, specs, s); }, scales,
      &rtn, &best);
  if (error_rtn) *error_rtn = rtn / denom;
  if (error_best) *error_best = best / denom;
  return alpha;
}

int64_t awq_clip(Tensor& weight, const QuantSpec& spec, const float* x, int64_t rows, const AwqOptions& opt) {
  check(weight.dtype() == DType::F32 && weight.rank() == 2, "awq_clip: weight must be fp32 [out, in], got {} {}",
        dtype_name(weight.dtype()), shape_str(weight.shape()));
  if (spec.scheme != WeightScheme::W4A16 && spec.scheme != WeightScheme::W8A16 && spec.scheme != WeightScheme::W8A8)
    return 0;
  const int64_t out = weight.dim(0), in = weight.dim(1);
  const int64_t g = spec.scheme == WeightScheme::W4A16 ? spec.group : in;
  const int64_t groups = (in + g - 1) / g;
  const int64_t step = std::max<int64_t>(1, rows / std::max<int64_t>(1, opt.clip_rows));
  std::vector<const float*> xs;
  for (int64_t t = 0; t < rows; t += step) xs.push_back(x + t * in);
  check(opt.clip_grid > 0 && opt.max_shrink > 0 && opt.max_shrink < 1,
        "AWQ clip: grid {} must be positive and max shrink {} in (0, 1)", opt.clip_grid, opt.max_shrink);
  const int n_ratios = std::max(1, static_cast<int>(std::ceil(opt.max_shrink * opt.clip_grid)));
  std::vector<int64_t> clipped(static_cast<size_t>(out), 0);
  float* w = weight.data<float>();
  parallel_for(out, 4, [&](int64_t r0, int64_t r1) {
    std::vector<float> wc(static_cast<size_t>(g)), dq(static_cast<size_t>(g)), best_w(static_cast<size_t>(g));
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t gi = 0; gi < groups; ++gi) {
        const int64_t c0 = gi * g, n = std::min(g, in - c0);
        float* wr = w + r * in + c0;
        float amax = 0.f;
        for (int64_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(wr[j]));
        if (amax == 0.f) continue;
        double best = std::numeric_limits<double>::infinity();
        int best_i = 0;
        for (int i = 0; i < n_ratios; ++i) {
          const float m = amax * static_cast<float>(1.0 - static_cast<double>(i) / opt.clip_grid);
          for (int64_t j = 0; j < n; ++j) wc[j] = std::clamp(wr[j], -m, m);
          fake_quantize_group(wc.data(), n, spec, dq.data());
          double err = 0;
          for (const float* xt : xs) {
            double dot = 0;
            for (int64_t j = 0; j < n; ++j) dot += static_cast<double>(xt[c0 + j]) * (dq[j] - wr[j]);
            err += dot * dot;
          }
          if (err < best) {
            best = err;
            best_i = i;
            std::copy(wc.begin(), wc.begin() + n, best_w.begin());
          }
        }
        if (best_i > 0) {
          std::copy(best_w.begin(), best_w.begin() + n, wr);
          ++clipped[r];
        }
      }
  });
  int64_t total = 0;
  for (const int64_t c : clipped) total += c;
  return total;
}

TensorMap awq_search(Model& model, const CalibSet& set, const std::map<std::string, QuantSpec>& plan,
                     const AwqOptions& opt, AwqReport* report) {
  Timer timer;
  check(opt.grid > 0 && opt.max_rows > 0, "AWQ: grid {} and max_rows {} must be positive", opt.grid, opt.max_rows);
  std::vector<std::string> planned;
  for (const auto& [name, spec] : plan)
    if (spec.scheme == WeightScheme::W4A16 || spec.scheme == WeightScheme::W8A16 || spec.scheme == WeightScheme::W8A8)
      planned.push_back(name);
  AwqReport rep;
  auto search = [&](const ScaleSite& site, const ChannelCapture& input, ScaledTensors& tensors,
                    const BlockProbe& probe) {
    AwqGroupReport gr;
    gr.first = site.group.front()->name;
    gr.producer = site.describe();
    const int64_t rows = input.kept(), in = input.in;
    std::vector<Tensor> originals;
    std::vector<const Tensor*> weights;
    std::vector<QuantSpec> specs;
    for (const LinearSlot* s : site.group) {
      originals.push_back(tensors.weight(*s).clone());
      auto it = plan.find(s->name);
      specs.push_back(it != plan.end() && std::count(planned.begin(), planned.end(), s->name) ? it->second
                                                                                              : QuantSpec{});
    }
    for (const Tensor& t : originals) weights.push_back(&t);
    std::vector<float> s(static_cast<size_t>(in), 1.f);
    if (site.producer != ScaleProducer::None && opt.block_loss && probe) {
      // llm-awq: rank alpha by the block's output with the group fake-quantized (the rest of the block fp32).
      std::vector<float> ref, out;
      probe(opt.block_rows, &ref);
      double ref_sq = 0;
      for (const float v : ref) ref_sq += static_cast<double>(v) * v;
      auto block_error = [&](const std::vector<float>& sc) {
        SlotSwap swap(site.group);
        for (size_t k = 0; k < weights.size(); ++k) swap.set_weight(k, awq_fake_quantize(*weights[k], sc, specs[k]));
        probe(opt.block_rows, &out);
        double e = 0;
        for (size_t i = 0; i < out.size(); ++i) e += (static_cast<double>(out[i]) - ref[i]) * (out[i] - ref[i]);
        return e;
      };
      gr.alpha =
          search_alpha_by(input.mean_abs(), opt.grid, block_error, &s, &gr.block_error_rtn, &gr.block_error_scaled);
      gr.block_error_rtn /= std::max(ref_sq, std::numeric_limits<double>::min());
      gr.block_error_scaled /= std::max(ref_sq, std::numeric_limits<double>::min());
      // The group-output errors of plain rounding and of the chosen scale, for the report.
      double denom = 0;
      for (size_t k = 0; k < weights.size(); ++k)
        if (specs[k].scheme != WeightScheme::F32) denom += output_sq_norm(input.rows.data(), rows, *weights[k]);
      denom = std::max(denom, std::numeric_limits<double>::min());
      gr.error_rtn = group_error(input.rows.data(), rows, weights, specs, std::vector<float>(s.size(), 1.f)) / denom;
      gr.error_scaled = group_error(input.rows.data(), rows, weights, specs, s) / denom;
      tensors.fold(site, s);
    } else if (site.producer != ScaleProducer::None) {
      gr.alpha = awq_search_alpha(input.rows.data(), rows, input.mean_abs(), weights, specs, opt.grid, &s,
                                  &gr.error_rtn, &gr.error_scaled);
      tensors.fold(site, s);
    } else {
      awq_search_alpha(input.rows.data(), rows, input.mean_abs(), weights, specs, 1, &s, &gr.error_rtn,
                       &gr.error_scaled);
    }
    gr.error_clipped = gr.error_scaled;
    if (opt.clip) {
      // The group now reads x / s with weights W diag(s); clip those and score against the unclipped product.
      std::vector<float> xs(input.rows);
      for (int64_t t = 0; t < rows; ++t)
        for (int64_t j = 0; j < in; ++j) xs[t * in + j] /= s[j];
      double err = 0, denom = 0;
      for (size_t k = 0; k < site.group.size(); ++k) {
        if (specs[k].scheme == WeightScheme::F32) continue;
        Tensor& w = tensors.weight(*site.group[k]);
        const Tensor scaled = w.clone();
        if (!is_query_or_key(site.group[k]->name)) awq_clip(w, specs[k], xs.data(), rows, opt);
        err += output_sq_error(xs.data(), rows, fake_quantize_weights(w, specs[k]), scaled);
        denom += output_sq_norm(xs.data(), rows, scaled);
      }
      gr.error_clipped = err / std::max(denom, std::numeric_limits<double>::min());
    }
    rep.groups.push_back(gr);
  };
  TensorMap edits = search_channel_scales(model, set, planned, opt.max_rows, search);
  for (const auto& s : set.sequences) rep.calib_rows += static_cast<int64_t>(s.size());
  rep.time_ms = timer.elapsed_ms();
  if (report) *report = std::move(rep);
  return edits;
}

}  // namespace shrink
