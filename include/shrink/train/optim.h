// Optimisation: AdamW with decoupled weight decay (Loshchilov & Hutter; PyTorch's torch.optim.AdamW update),
// learning-rate schedules with warmup and linear or cosine decay, and global gradient-norm clipping.
#pragma once

#include <shrink/train/autograd.h>

#include <cstdint>
#include <string>
#include <vector>

namespace shrink::train {

struct NamedParam {
  std::string name;  // Hugging Face tensor name
  Var var;
  bool decay = true;  // weight decay applies (false for biases, norm weights, embeddings' LayerNorm)
};

struct AdamWOptions {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.01f;
};

class AdamW {
 public:
  AdamW(std::vector<NamedParam> params, AdamWOptions opt = {});
  // One update with learning rate lr from the gradients the parameters hold (then zero them yourself or call
  // zero_grad()). Parameters without a gradient are left alone (their moments are not advanced).
  void step(float lr);
  void zero_grad();
  int64_t steps() const { return t_; }
  const std::vector<NamedParam>& params() const { return params_; }

 private:
  std::vector<NamedParam> params_;
  AdamWOptions opt_;
  std::vector<std::vector<float>> m_, v_;
  int64_t t_ = 0;
};

enum class Decay { Constant, Linear, Cosine };

// lr(step): linear warmup from 0 over `warmup` steps, then constant / linear to 0 / cosine to 0 at `total`.
struct LrSchedule {
  float base = 1e-3f;
  int64_t warmup = 0, total = 1;
  Decay decay = Decay::Linear;
  float at(int64_t step) const;
};
Decay parse_decay(const std::string& s);  // "constant" | "linear" | "cosine"

// A time budget for a training loop that also fits the schedule to it: after 20 updates, and again at each
// validation (which costs time too), the updates that still fit are estimated from the time per update so far and
// the decay ends there. Only ever shortens; never lengthens past the epochs asked for. minutes <= 0: no budget.
struct TimeBudget {
  double minutes = 0;
  // After update `step` at `elapsed_s`; may shorten `total` and `sched`. Returns true when the budget is spent.
  bool after_update(int64_t step, double elapsed_s, int64_t eval_every, int64_t& total, LrSchedule& sched) const;
  // Seconds left by the pace so far, capped by the budget.
  double eta_s(int64_t step, int64_t total, double elapsed_s) const;
};

// Scales all gradients so their global L2 norm is at most max_norm; returns the norm before clipping.
double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm);

}  // namespace shrink::train
