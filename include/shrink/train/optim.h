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
  // Set by retime(): from `from_step` on, the decay's progress runs from `from_progress` to 1 at `total`.
  int64_t from_step = 0;
  double from_progress = 0;
  float at(int64_t step) const;
  // The decay's progress at `step`: 0 until the end of warmup, 1 at `total`.
  double progress(int64_t step) const;
  // Moves the end of the schedule to `new_total` as seen from `step` (the next update's index) without a jump in
  // the learning rate: in warmup the warmup is cut to at most half the new run (never before `step`), so the ramp
  // only steepens; in the decay the remaining progress is stretched or squeezed from where it is, so lr stays
  // continuous and never rises again.
  void retime(int64_t step, int64_t new_total);
};
Decay parse_decay(const std::string& s);  // "constant" | "linear" | "cosine"

// A time budget for a training loop that also fits the schedule to it. The planned number of updates is refitted
// from the pace of the updates since the previous fit (not the whole run's average, so a machine that speeds up or
// slows down is followed): first after 20 updates, then whenever the update count has doubled since the last fit
// (which covers the warmup), a tenth of the budget has passed, or a validation ran (which costs time too). The plan
// may grow or shrink but never past the updates the epochs ask for (the `total` of the first call); the schedule is
// retimed (LrSchedule::retime), so the learning rate keeps rising in warmup and falling after it.
// minutes <= 0: no budget.
class TimeBudget {
 public:
  explicit TimeBudget(double minutes = 0) : minutes_(minutes) {}
  // After update `step` at `elapsed_s`; may change `total` and `sched`. Returns true when the budget is spent.
  bool after_update(int64_t step, double elapsed_s, int64_t eval_every, int64_t& total, LrSchedule& sched);
  // Seconds left at the pace of the last fit (the run's average before the first), capped by the budget.
  double eta_s(int64_t step, int64_t total, double elapsed_s) const;
  double minutes() const { return minutes_; }

 private:
  double minutes_;
  int64_t max_total_ = -1;  // the epochs' plan: never planned past
  int64_t fit_step_ = 0;    // update count and time of the last fit
  double fit_s_ = 0, pace_s_ = 0;
};

// Scales all gradients so their global L2 norm is at most max_norm; returns the norm before clipping.
double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm);

// A copy of the parameters' values (the best weights a training loop keeps) and writing it back into them.
using ParamSnapshot = std::vector<std::vector<float>>;
ParamSnapshot snapshot(const std::vector<NamedParam>& params);
void restore(const std::vector<NamedParam>& params, const ParamSnapshot& s);

}  // namespace shrink::train
