// AdamW, learning-rate schedules and gradient clipping (include/shrink/train/optim.h).
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/train/optim.h>

#include <algorithm>
#include <cmath>

namespace shrink::train {

AdamW::AdamW(std::vector<NamedParam> params, AdamWOptions opt) : params_(std::move(params)), opt_(opt) {
  for (auto& p : params_) {
    check(p.var.defined() && p.var.requires_grad(), "AdamW: parameter '{}' is not trainable", p.name);
    m_.emplace_back(static_cast<size_t>(p.var.numel()), 0.f);
    v_.emplace_back(static_cast<size_t>(p.var.numel()), 0.f);
  }
}

void AdamW::step(float lr) {
  ++t_;
  const double bc1 = 1.0 - std::pow(double(opt_.beta1), double(t_));
  const double bc2 = 1.0 - std::pow(double(opt_.beta2), double(t_));
  const float b1 = opt_.beta1, b2 = opt_.beta2, eps = opt_.eps;
  for (size_t k = 0; k < params_.size(); ++k) {
    Node& n = params_[k].var.node();
    if (!n.grad.defined() || !n.grad.raw()) continue;
    float* w = n.value.data<float>();
    const float* g = n.grad.data<float>();
    float* m = m_[k].data();
    float* v = v_[k].data();
    const float decay = params_[k].decay ? 1.f - lr * opt_.weight_decay : 1.f;
    const float step = static_cast<float>(lr / bc1);
    const float inv_bc2 = static_cast<float>(1.0 / bc2);
    parallel_for(n.value.numel(), 1 << 14, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        m[i] = b1 * m[i] + (1.f - b1) * g[i];
        v[i] = b2 * v[i] + (1.f - b2) * g[i] * g[i];
        w[i] = w[i] * decay - step * m[i] / (std::sqrt(v[i] * inv_bc2) + eps);
      }
    });
  }
}

void AdamW::zero_grad() {
  std::vector<Var> vs;
  for (auto& p : params_) vs.push_back(p.var);
  train::zero_grad(vs);
}

double LrSchedule::progress(int64_t step) const {
  const int64_t start = std::max(warmup, from_step);
  if (step < start) return step < warmup ? 0.0 : from_progress;
  const int64_t span = std::max<int64_t>(1, total - start);
  const double f = static_cast<double>(step - start) / static_cast<double>(span);
  return std::clamp(from_progress + (1.0 - from_progress) * f, 0.0, 1.0);
}

float LrSchedule::at(int64_t step) const {
  if (warmup > 0 && step < warmup) return base * static_cast<float>(step + 1) / static_cast<float>(warmup);
  const double frac = progress(step);
  switch (decay) {
    case Decay::Constant: return base;
    case Decay::Linear: return static_cast<float>(base * (1.0 - frac));
    case Decay::Cosine: return static_cast<float>(base * 0.5 * (1.0 + std::cos(M_PI * frac)));
  }
  return base;
}

void LrSchedule::retime(int64_t step, int64_t new_total) {
  if (step < warmup) {
    warmup = std::min(warmup, std::max(step, new_total / 2));
  } else {
    from_progress = progress(step);
    from_step = step;
  }
  total = std::max({new_total, step + 1, warmup + 1});
}

Decay parse_decay(const std::string& s) {
  if (s == "constant") return Decay::Constant;
  if (s == "linear") return Decay::Linear;
  if (s == "cosine") return Decay::Cosine;
  fail("learning-rate schedule '{}': expected constant, linear or cosine", s);
}

ParamSnapshot snapshot(const std::vector<NamedParam>& params) {
  ParamSnapshot s;
  for (auto& p : params) s.emplace_back(p.var.data(), p.var.data() + p.var.value().numel());
  return s;
}

void restore(const std::vector<NamedParam>& params, const ParamSnapshot& s) {
  for (size_t i = 0; i < params.size(); ++i) {
    Var v = params[i].var;  // shares the node
    std::copy(s[i].begin(), s[i].end(), v.mutable_data());
  }
}

double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm) {
  double ss = 0;
  for (auto& p : params) {
    const Node& n = p.var.node();
    if (!n.grad.defined() || !n.grad.raw()) continue;
    const float* g = n.grad.data<float>();
    for (int64_t i = 0; i < n.grad.numel(); ++i) ss += double(g[i]) * g[i];
  }
  const double norm = std::sqrt(ss);
  if (max_norm > 0 && norm > max_norm) {
    const float s = static_cast<float>(max_norm / (norm + 1e-6));
    for (auto& p : params) {
      Node& n = p.var.node();
      if (!n.grad.defined() || !n.grad.raw()) continue;
      float* g = n.grad.data<float>();
      for (int64_t i = 0; i < n.grad.numel(); ++i) g[i] *= s;
    }
  }
  return norm;
}

bool TimeBudget::after_update(int64_t step, double el, int64_t eval_every, int64_t& total, LrSchedule& sched) {
  if (minutes_ <= 0) return false;
  const double budget_s = minutes_ * 60.0;
  if (max_total_ < 0) max_total_ = total;
  const bool due = fit_step_ == 0 ? step >= 20
                                  : step >= 2 * fit_step_ || el >= fit_s_ + budget_s / 10 ||
                                        (eval_every > 0 && step % eval_every == 0 && step > fit_step_);
  if (due && el > fit_s_) {
    pace_s_ = (el - fit_s_) / static_cast<double>(step - fit_step_);
    fit_step_ = step;
    fit_s_ = el;
    const double left = std::max(0.0, budget_s - el) / pace_s_;
    const int64_t fit = std::max(step + 1, std::min(max_total_, step + static_cast<int64_t>(std::min(left, 1e15))));
    if (fit != total) {
      sched.retime(step, fit);
      total = sched.total;
    }
  }
  return el > budget_s;
}

double TimeBudget::eta_s(int64_t step, int64_t total, double el) const {
  const double pace = pace_s_ > 0 ? pace_s_ : (step > 0 ? el / static_cast<double>(step) : 0.0);
  const double eta = pace * static_cast<double>(total - step);
  return minutes_ > 0 ? std::min(eta, minutes_ * 60.0 - el) : eta;
}

}  // namespace shrink::train
