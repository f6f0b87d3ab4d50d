// AdamW against the update written out by hand (PyTorch's torch.optim.AdamW algorithm), schedules at known
// points, clipping, and a convex problem that AdamW must solve.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/train/optim.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace shrink::train {
namespace {

TEST(AdamW, TwoStepsMatchHandComputedUpdate) {
  Var w = parameter(Tensor::from_f32({1.f, -2.f}, {2}));
  AdamW opt({{"w", w, true}}, AdamWOptions{0.9f, 0.999f, 1e-8f, 0.1f});
  const double lr = 0.01;
  double x[2] = {1, -2}, m[2] = {0, 0}, v[2] = {0, 0};
  const double g1[2] = {0.5, -1.0}, g2[2] = {-0.25, 2.0};
  for (int t = 1; t <= 2; ++t) {
    const double* g = t == 1 ? g1 : g2;
    zero_grad({w});
    float* gw = w.node().g();
    gw[0] = static_cast<float>(g[0]);
    gw[1] = static_cast<float>(g[1]);
    opt.step(static_cast<float>(lr));
    for (int i = 0; i < 2; ++i) {
      x[i] *= 1 - lr * 0.1;  // decoupled decay
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
      const double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.999, t));
      x[i] -= lr * mh / (std::sqrt(vh) + 1e-8);
      EXPECT_NEAR(w.data()[i], x[i], 1e-6) << "step " << t << " element " << i;
    }
  }
  EXPECT_EQ(opt.steps(), 2);
}

TEST(AdamW, NoDecayParamsAndMissingGradients) {
  Var a = parameter(Tensor::from_f32({1.f}, {1})), b = parameter(Tensor::from_f32({1.f}, {1}));
  AdamW opt({{"a", a, false}, {"b", b, true}}, AdamWOptions{0.9f, 0.999f, 1e-8f, 0.5f});
  opt.step(0.1f);  // no gradients anywhere: nothing moves
  EXPECT_EQ(a.data()[0], 1.f);
  EXPECT_EQ(b.data()[0], 1.f);
  a.node().g()[0] = 0.f;
  b.node().g()[0] = 0.f;
  opt.step(0.1f);  // zero gradient: only decay moves b
  EXPECT_EQ(a.data()[0], 1.f);
  EXPECT_NEAR(b.data()[0], 0.95f, 1e-7);
}

TEST(AdamW, SolvesLeastSquares) {
  // min |A w - y|^2 with a known solution w* = (1, -2, 3).
  const std::vector<float> A = {1, 0, 1, 0, 1, 1, 1, 1, 0, 2, 0, 1};
  Tensor At = Tensor::from_f32(A, {4, 3});
  std::vector<float> y(4);
  const float ws[3] = {1, -2, 3};
  for (int r = 0; r < 4; ++r) y[r] = A[r * 3] * ws[0] + A[r * 3 + 1] * ws[1] + A[r * 3 + 2] * ws[2];
  Var w = parameter(Tensor::zeros(DType::F32, {1, 3}));
  AdamW opt({{"w", w, false}}, AdamWOptions{0.9f, 0.999f, 1e-8f, 0.f});
  const LrSchedule sched{0.05f, 20, 2000, Decay::Cosine};
  for (int step = 0; step < 2000; ++step) {
    opt.zero_grad();
    Var pred = linear(constant(At.clone()), w, Var());  // [4, 1]
    backward(mse(pred, Tensor::from_f32(y, {4, 1})));
    opt.step(sched.at(step));
  }
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(w.data()[i], ws[i], 1e-3);
}

TEST(LrSchedule, WarmupLinearCosine) {
  LrSchedule s{1.f, 10, 110, Decay::Linear};
  EXPECT_FLOAT_EQ(s.at(0), 0.1f);
  EXPECT_FLOAT_EQ(s.at(9), 1.f);
  EXPECT_FLOAT_EQ(s.at(10), 1.f);
  EXPECT_FLOAT_EQ(s.at(60), 0.5f);
  EXPECT_FLOAT_EQ(s.at(110), 0.f);
  s.decay = Decay::Cosine;
  EXPECT_NEAR(s.at(60), 0.5f, 1e-6);
  EXPECT_NEAR(s.at(35), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-6);
  s.decay = Decay::Constant;
  EXPECT_FLOAT_EQ(s.at(100), 1.f);
  EXPECT_THROW(parse_decay("step"), Error);
}

TEST(ClipGradNorm, ScalesToMaxNorm) {
  Var a = parameter(Tensor::from_f32({3.f}, {1})), b = parameter(Tensor::from_f32({0.f}, {1}));
  a.node().g()[0] = 3.f;
  b.node().g()[0] = 4.f;
  const std::vector<NamedParam> ps = {{"a", a}, {"b", b}};
  EXPECT_NEAR(clip_grad_norm(ps, 1.0), 5.0, 1e-9);
  EXPECT_NEAR(a.grad().data<float>()[0], 0.6f, 1e-5);
  EXPECT_NEAR(b.grad().data<float>()[0], 0.8f, 1e-5);
  EXPECT_NEAR(clip_grad_norm(ps, 10.0), 1.0, 1e-5);  // under the bound: unchanged
  EXPECT_NEAR(a.grad().data<float>()[0], 0.6f, 1e-5);
}

}  // namespace
}  // namespace shrink::train

namespace shrink::train {
namespace {

// Hand-computed: 20 updates in 30 s under a 60 s budget leave room for 20 more, so the schedule ends at 40.
TEST(TimeBudget, FitsTheScheduleAndStopsWhenSpent) {
  TimeBudget b{1.0};
  LrSchedule sched{1e-3f, 30, 100, Decay::Linear};
  int64_t total = 100;
  EXPECT_FALSE(b.after_update(19, 28.5, 0, total, sched));  // before the first fit: untouched
  EXPECT_EQ(total, 100);
  EXPECT_FALSE(b.after_update(20, 30.0, 0, total, sched));
  EXPECT_EQ(total, 40);
  EXPECT_EQ(sched.total, 40);
  EXPECT_EQ(sched.warmup, 20);  // warmup capped at half the fitted run
  EXPECT_DOUBLE_EQ(b.eta_s(20, 40, 30.0), 30.0);
  EXPECT_TRUE(b.after_update(41, 61.0, 0, total, sched));
  TimeBudget fresh{1.0};
  int64_t longer = 30;  // never plans past the epochs' updates
  LrSchedule s2{1e-3f, 3, 30, Decay::Linear};
  EXPECT_FALSE(fresh.after_update(20, 30.0, 0, longer, s2));
  EXPECT_EQ(longer, 30);
  TimeBudget none{};
  int64_t t3 = 100;
  EXPECT_FALSE(none.after_update(20, 1e9, 0, t3, sched));
  EXPECT_EQ(t3, 100);
}

// Retiming by hand. Linear, warmup 10, total 110: lr(60) = 1 - 50/100 = 0.5. Moving the end to 160 at step 60 keeps
// lr(60) = 0.5 and spreads the other half over 100 updates: lr(110) = 0.25, lr(160) = 0. In warmup, a shorter run
// cuts the warmup to half of it but never before the current step.
TEST(LrSchedule, RetimeKeepsTheRateContinuous) {
  LrSchedule s{1.f, 10, 110, Decay::Linear};
  EXPECT_FLOAT_EQ(s.at(60), 0.5f);
  s.retime(60, 160);
  EXPECT_EQ(s.total, 160);
  EXPECT_FLOAT_EQ(s.at(60), 0.5f);
  EXPECT_FLOAT_EQ(s.at(110), 0.25f);
  EXPECT_FLOAT_EQ(s.at(160), 0.f);
  s.retime(110, 120);  // and shorter again: 0.25 over the last 10 updates
  EXPECT_FLOAT_EQ(s.at(110), 0.25f);
  EXPECT_FLOAT_EQ(s.at(115), 0.125f);
  LrSchedule w{1.f, 40, 400, Decay::Linear};
  w.retime(5, 30);  // warmup 40 -> 15 (half the new run)
  EXPECT_EQ(w.warmup, 15);
  EXPECT_FLOAT_EQ(w.at(5), 6.f / 15);
  LrSchedule late{1.f, 40, 400, Decay::Linear};
  late.retime(30, 50);  // half the run (25) is already behind: warmup ends at the current step
  EXPECT_EQ(late.warmup, 30);
  EXPECT_FLOAT_EQ(late.at(30), 1.f);
  EXPECT_FLOAT_EQ(late.at(40), 0.5f);
}

struct Simulated {
  int64_t updates = 0;
  double elapsed_s = 0;
  std::vector<float> lr;  // the rate each update used
};

// A training loop as the trainers run it, on an injected clock: update k (0-based) takes seconds_per_update(k).
Simulated simulate(double minutes, int64_t planned, const std::function<double(int64_t)>& seconds_per_update) {
  TimeBudget budget{minutes};
  int64_t total = planned;
  LrSchedule sched{1e-3f, planned / 10, planned, Decay::Cosine};
  Simulated r;
  while (r.updates < total) {
    r.lr.push_back(sched.at(r.updates));
    r.elapsed_s += seconds_per_update(r.updates);
    ++r.updates;
    if (budget.after_update(r.updates, r.elapsed_s, 0, total, sched)) break;
  }
  return r;
}

// Rises (warmup) then never rises again, and ends near 0: the schedule ran to its end.
void expect_warmup_then_decay(const std::vector<float>& lr) {
  const size_t peak = static_cast<size_t>(std::max_element(lr.begin(), lr.end()) - lr.begin());
  for (size_t i = 1; i <= peak; ++i) ASSERT_GE(lr[i], lr[i - 1]) << "update " << i;
  for (size_t i = peak + 1; i < lr.size(); ++i) ASSERT_LE(lr[i], lr[i - 1]) << "update " << i;
  EXPECT_LT(lr.back(), 0.05f * lr[peak]);
}

// The loaded machine of the report: the first 20 updates at 240/292 s each (a plan of 292 updates in 4 minutes),
// then 6x faster. The updates that fit: 20 + (240 - 20 * 240/292) / (240/292/6) = 1,652 (hand-computed); the run
// must plan and do within 20% of that and end near the budget, with a schedule that rises then falls.
TEST(TimeBudget, RefitsWhenTheMachineSpeedsUp) {
  const double slow = 240.0 / 292, fast = slow / 6;
  const double ideal = 20 + (240 - 20 * slow) / fast;
  const Simulated r = simulate(4.0, 8430, [&](int64_t k) { return k < 20 ? slow : fast; });
  EXPECT_NEAR(static_cast<double>(r.updates), ideal, 0.2 * ideal);
  EXPECT_GE(r.elapsed_s, 0.8 * 240);
  EXPECT_LE(r.elapsed_s, 240 + slow);
  expect_warmup_then_decay(r.lr);
}

// The opposite: quiet for 500 updates, then 6x slower (another job started). 500 * fast = 68.5 s, then
// (240 - 68.5) / slow = 208.7 more: 708.7 updates fit. The plan shrinks in the decay without a jump up.
TEST(TimeBudget, RefitsWhenTheMachineSlowsDown) {
  const double slow = 240.0 / 292, fast = slow / 6;
  const double ideal = 500 + (240 - 500 * fast) / slow;
  const Simulated r = simulate(4.0, 8430, [&](int64_t k) { return k < 500 ? fast : slow; });
  EXPECT_NEAR(static_cast<double>(r.updates), ideal, 0.2 * ideal);
  EXPECT_LE(r.elapsed_s, 240 + slow);
  expect_warmup_then_decay(r.lr);
}

}  // namespace
}  // namespace shrink::train
