// SmoothQuant (include/shrink/compress/smoothquant.h): the reference scale formula, the W8A8 output error the auto
// search ranks alphas by, and the model-level search over the decoder blocks.
#include <shrink/compress/smoothquant.h>
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/kernels/quant.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace shrink {

std::vector<float> smoothquant_scales(const std::vector<float>& act_max, const std::vector<const Tensor*>& weights,
                                      double alpha) {
  check(alpha >= 0 && alpha <= 1, "SmoothQuant: alpha {} is outside [0, 1]; use e.g. --alpha 0.5 or --alpha auto",
        alpha);
  const int64_t in = static_cast<int64_t>(act_max.size());
  std::vector<float> wmax(static_cast<size_t>(in), 0.f);
  for (const Tensor* w : weights) {
    check(w->rank() == 2 && w->dim(1) == in, "SmoothQuant: weight {} does not take {} inputs", shape_str(w->shape()),
          in);
    const Tensor f = w->to_f32();
    for (int64_t r = 0; r < f.dim(0); ++r)
      for (int64_t j = 0; j < in; ++j) wmax[j] = std::max(wmax[j], std::fabs(f.data<float>()[r * in + j]));
  }
  std::vector<float> s(static_cast<size_t>(in));
  for (int64_t j = 0; j < in; ++j) {
    const double v =
        std::pow(static_cast<double>(act_max[j]), alpha) / std::pow(std::max<double>(wmax[j], 1e-5), 1.0 - alpha);
    s[j] = static_cast<float>(std::max(v, 1e-5));
  }
  return s;
}

double w8a8_output_error(const float* x, int64_t rows, const std::vector<const Tensor*>& weights,
                         const std::vector<float>& s, bool static_act) {
  const int64_t in = static_cast<int64_t>(s.size());
  // Activations x / s, quantized and dequantized as the W8A8 kernels see them.
  std::vector<float> xq(static_cast<size_t>(rows * in));
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t j = 0; j < in; ++j) xq[t * in + j] = x[t * in + j] / s[j];
  std::vector<uint8_t> q(static_cast<size_t>(in));
  float scale = 0;
  int32_t zp = 0;
  if (static_act) {
    const auto [lo, hi] = std::minmax_element(xq.begin(), xq.end());
    kernels::choose_u8_params(*lo, *hi, &scale, &zp);
  }
  for (int64_t t = 0; t < rows; ++t) {
    float* row = xq.data() + t * in;
    if (static_act)
      kernels::quantize_row_u8_ref(row, in, scale, zp, q.data());
    else
      kernels::quantize_row_a8_dynamic_ref(row, in, q.data(), &scale, &zp);
    for (int64_t j = 0; j < in; ++j) row[j] = (static_cast<float>(q[j]) - static_cast<float>(zp)) * scale;
  }
  QuantSpec w8;
  w8.scheme = WeightScheme::W8A16;
  double err = 0, denom = 0;
  for (const Tensor* w : weights) {
    const int64_t out = w->dim(0);
    Tensor ws = w->to_f32();
    for (int64_t r = 0; r < out; ++r)
      for (int64_t j = 0; j < in; ++j) ws.data<float>()[r * in + j] *= s[j];
    std::vector<float> y(static_cast<size_t>(rows * out)), yq(y.size());
    make_dense_linear(*w)->forward(x, rows, y.data());
    make_dense_linear(fake_quantize_weights(ws, w8))->forward(xq.data(), rows, yq.data());
    for (size_t i = 0; i < y.size(); ++i) {
      const double d = static_cast<double>(yq[i]) - y[i];
      err += d * d;
      denom += static_cast<double>(y[i]) * y[i];
    }
  }
  return err / std::max(denom, std::numeric_limits<double>::min());
}

TensorMap smoothquant_search(Model& model, const CalibSet& set, const std::map<std::string, QuantSpec>& plan,
                             const SmoothQuantOptions& opt, SmoothQuantReport* report) {
  Timer timer;
  check(opt.grid > 0 && opt.max_rows > 0, "SmoothQuant: grid {} and max_rows {} must be positive", opt.grid,
        opt.max_rows);
  if (!opt.auto_alpha) smoothquant_scales({}, {}, opt.alpha);  // validates alpha before any work
  std::vector<std::string> planned;
  for (const auto& [name, spec] : plan)
    if (spec.scheme == WeightScheme::W8A8) planned.push_back(name);
  SmoothQuantReport rep;
  auto search = [&](const ScaleSite& site, const ChannelCapture& input, ScaledTensors& tensors,
                    const BlockProbe& /*probe*/) {
    SmoothGroupReport gr;
    gr.first = site.group.front()->name;
    gr.producer = site.describe();
    std::vector<Tensor> originals;
    std::vector<const Tensor*> weights;
    bool static_act = false;
    for (const LinearSlot* s : site.group) {
      originals.push_back(tensors.weight(*s).clone());
      auto it = plan.find(s->name);
      static_act = static_act || (it != plan.end() && it->second.static_act);
    }
    for (const Tensor& t : originals) weights.push_back(&t);
    const std::vector<float> ones(static_cast<size_t>(input.in), 1.f);
    gr.error_plain = w8a8_output_error(input.rows.data(), input.kept(), weights, ones, static_act);
    gr.error_smoothed = gr.error_plain;
    if (site.producer == ScaleProducer::None) {
      rep.groups.push_back(gr);
      return;
    }
    std::vector<float> best_s;
    if (opt.auto_alpha) {
      for (int i = 0; i <= opt.grid; ++i) {
        const double alpha = static_cast<double>(i) / opt.grid;
        std::vector<float> s = smoothquant_scales(input.max_abs, weights, alpha);
        const double err = w8a8_output_error(input.rows.data(), input.kept(), weights, s, static_act);
        if (err < gr.error_smoothed) {
          gr.error_smoothed = err;
          gr.alpha = alpha;
          best_s = std::move(s);
        }
      }
    } else {
      gr.alpha = opt.alpha;
      best_s = smoothquant_scales(input.max_abs, weights, opt.alpha);
      gr.error_smoothed = w8a8_output_error(input.rows.data(), input.kept(), weights, best_s, static_act);
    }
    if (!best_s.empty()) tensors.fold(site, best_s);
    rep.groups.push_back(gr);
  };
  TensorMap edits = search_channel_scales(model, set, planned, opt.max_rows, search);
  rep.time_ms = timer.elapsed_ms();
  if (report) *report = std::move(rep);
  return edits;
}

}  // namespace shrink
