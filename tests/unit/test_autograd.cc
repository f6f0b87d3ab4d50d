// Every differentiable op of train/autograd.h against central finite differences of the same forward, plus
// hand-computed cases for the losses and the straight-through fake-quant gradients.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/kernels/quant.h>
#include <shrink/train/autograd.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

namespace shrink::train {
namespace {

Tensor randn(Shape shape, uint32_t seed, float sd = 1.f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.f, sd);
  Tensor t = Tensor::empty(DType::F32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(gen);
  return t;
}

// loss = sum(f(inputs) * R) for a fixed random R; compares d loss / d input with central differences.
void check_grad(const std::vector<Tensor>& inputs, const std::function<Var(std::vector<Var>&)>& f, const char* what,
                float eps = 1e-2f, double tol = 2e-2) {
  std::vector<Var> vars;
  for (auto& t : inputs) vars.push_back(parameter(t.clone()));
  Var out = f(vars);
  const Tensor R = randn(out.shape(), 99);
  auto loss_of = [&](std::vector<Var>& vs) {
    NoGradGuard ng;
    Var o = f(vs);
    double s = 0;
    for (int64_t i = 0; i < o.numel(); ++i) s += double(o.data()[i]) * R.data<float>()[i];
    return s;
  };
  Var loss = sum(mul(out, constant(R.clone())));
  backward(loss);
  for (size_t a = 0; a < vars.size(); ++a) {
    ASSERT_TRUE(vars[a].grad().defined()) << what << ": no gradient reached input " << a;
    const int64_t n = vars[a].numel();
    const int64_t step = std::max<int64_t>(1, n / 40);  // at most ~40 probes per input
    for (int64_t i = 0; i < n; i += step) {
      float* p = vars[a].mutable_data() + i;
      const float saved = *p;
      *p = saved + eps;
      const double up = loss_of(vars);
      *p = saved - eps;
      const double down = loss_of(vars);
      *p = saved;
      const double numeric = (up - down) / (2 * eps);
      const double analytic = vars[a].grad().data<float>()[i];
      EXPECT_NEAR(analytic, numeric, tol * std::max(1.0, std::fabs(numeric)))
          << what << ": input " << a << " element " << i;
    }
  }
}

TEST(Autograd, LinearWithAndWithoutBias) {
  check_grad({randn({5, 7}, 1), randn({3, 7}, 2), randn({3}, 3)},
             [](std::vector<Var>& v) { return linear(v[0], v[1], v[2]); }, "linear+bias");
  check_grad({randn({4, 6}, 4), randn({9, 6}, 5)}, [](std::vector<Var>& v) { return linear(v[0], v[1], Var()); },
             "linear");
}

TEST(Autograd, Elementwise) {
  check_grad({randn({3, 8}, 6), randn({3, 8}, 7)}, [](std::vector<Var>& v) { return add(v[0], v[1]); }, "add");
  check_grad({randn({3, 8}, 8), randn({3, 8}, 9)}, [](std::vector<Var>& v) { return mul(v[0], v[1]); }, "mul");
  check_grad({randn({2, 9}, 10)}, [](std::vector<Var>& v) { return scale(v[0], -1.5f); }, "scale");
  check_grad({randn({4, 16}, 11)}, [](std::vector<Var>& v) { return gelu(v[0]); }, "gelu", 1e-3f);
  check_grad({randn({4, 16}, 12)}, [](std::vector<Var>& v) { return gelu_tanh(v[0]); }, "gelu_tanh", 1e-3f);
  check_grad({randn({4, 16}, 13)}, [](std::vector<Var>& v) { return silu(v[0]); }, "silu", 1e-3f);
  check_grad({randn({4, 16}, 14)}, [](std::vector<Var>& v) { return tanh(v[0]); }, "tanh", 1e-3f);
}

TEST(Autograd, Norms) {
  check_grad({randn({3, 17}, 15), randn({17}, 16), randn({17}, 17)},
             [](std::vector<Var>& v) { return layer_norm(v[0], v[1], v[2], 1e-5f); }, "layer_norm", 1e-2f, 3e-2);
  check_grad({randn({3, 17}, 18), randn({17}, 19)}, [](std::vector<Var>& v) { return rms_norm(v[0], v[1], 1e-5f); },
             "rms_norm", 1e-2f, 3e-2);
}

TEST(Autograd, EmbeddingRowsReshape) {
  check_grad({randn({6, 4}, 20)}, [](std::vector<Var>& v) { return embedding({5, 0, 5, 2}, v[0]); }, "embedding");
  check_grad({randn({5, 3}, 21)}, [](std::vector<Var>& v) { return rows(v[0], {4, 0, 4}); }, "rows");
  check_grad({randn({2, 6}, 22)}, [](std::vector<Var>& v) { return reshape(v[0], {3, 4}); }, "reshape");
}

TEST(Autograd, AttentionMaskedAndCausal) {
  const int64_t B = 2, T = 5;
  const int H = 2, hd = 4;
  const std::vector<int32_t> mask = {1, 1, 1, 0, 0, 1, 1, 1, 1, 1};
  for (bool causal : {false, true}) {
    check_grad({randn({B * T, H * hd}, 23), randn({B * T, H * hd}, 24), randn({B * T, H * hd}, 25)},
               [&](std::vector<Var>& v) { return attention(v[0], v[1], v[2], B, T, H, hd, mask, causal); },
               causal ? "attention causal" : "attention masked", 1e-2f, 3e-2);
  }
}

TEST(Autograd, AttentionMatchesHandComputedSoftmax) {
  // One head, two keys, query . key = [0, ln 2] after scaling -> weights [1/3, 2/3].
  const float ln2 = std::log(2.f);
  Tensor q = Tensor::from_f32({1.f}, {1, 1});
  Tensor k = Tensor::from_f32({0.f, ln2}, {2, 1});
  Tensor v = Tensor::from_f32({3.f, 6.f}, {2, 1});
  // T = 2 queries needed: repeat the query.
  Tensor q2 = Tensor::from_f32({1.f, 1.f}, {2, 1});
  Var y = attention(constant(q2), constant(k), constant(v), 1, 2, 1, 1, {}, false);
  EXPECT_NEAR(y.data()[0], 3.f / 3 + 6.f * 2 / 3, 1e-5);
}

TEST(Autograd, PrependClsAddPos) {
  check_grad({randn({2 * 3, 4}, 40), randn({4}, 41), randn({4, 4}, 42)},
             [](std::vector<Var>& v) { return prepend_cls_add_pos(v[0], v[1], v[2], 2, 3); }, "cls+pos");
}

TEST(Autograd, Rope) {
  for (bool inter : {false, true})
    check_grad({randn({3, 8}, 26)},
               [&](std::vector<Var>& v) { return rope(v[0], {0, 3, 7}, 2, 4, 10000.f, inter); }, "rope");
}

TEST(Autograd, RepeatKvCopiesHeadsAndSumsGradients) {
  check_grad({randn({3, 2 * 4}, 40)}, [](std::vector<Var>& v) { return repeat_kv(v[0], 2, 4, 3); }, "repeat_kv");
  // Hand case: one row, KV heads [1 2] and [3 4], two query heads per KV head.
  Var x = parameter(Tensor::from_f32({1, 2, 3, 4}, {1, 4}));
  Var y = repeat_kv(x, 2, 2, 2);
  const std::vector<float> want = {1, 2, 1, 2, 3, 4, 3, 4};
  ASSERT_EQ(y.numel(), 8);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(y.data()[i], want[i]) << i;
  backward(sum(y));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(x.grad().data<float>()[i], 2.f) << i;
}

TEST(Autograd, LossesAgainstHandValues) {
  // CE of logits [0, ln 3] with label 1: -log(3/4).
  Var l = parameter(Tensor::from_f32({0.f, std::log(3.f)}, {1, 2}));
  Var ce = cross_entropy(l, {1});
  EXPECT_NEAR(ce.item(), -std::log(0.75), 1e-6);
  backward(ce);
  EXPECT_NEAR(l.grad().data<float>()[0], 0.25, 1e-6);  // p - onehot
  EXPECT_NEAR(l.grad().data<float>()[1], -0.25, 1e-6);
  // KL(p_t || p_s) with p_t = [1/2, 1/2], p_s = [1/4, 3/4]: 0.5 ln 2 + 0.5 ln(2/3).
  Var s = parameter(Tensor::from_f32({0.f, std::log(3.f)}, {1, 2}));
  Var kl = kl_div(s, Tensor::from_f32({1.f, 1.f}, {1, 2}), 1.f);
  EXPECT_NEAR(kl.item(), 0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3.0), 1e-6);
  // Ignored labels do not count.
  Var l2 = parameter(Tensor::from_f32({0.f, 0.f, 5.f, 5.f}, {2, 2}));
  EXPECT_NEAR(cross_entropy(l2, {0, -1}).item(), std::log(2.0), 1e-6);
}

TEST(Autograd, LossGradients) {
  check_grad({randn({4, 5}, 27)}, [](std::vector<Var>& v) { return cross_entropy(v[0], {0, 4, -1, 2}); }, "ce");
  const Tensor t = randn({4, 5}, 28);
  for (float T : {1.f, 4.f})
    check_grad({randn({4, 5}, 29)}, [&](std::vector<Var>& v) { return kl_div(v[0], t, T); }, "kl");
  check_grad({randn({4, 5}, 30)}, [&](std::vector<Var>& v) { return mse(v[0], t); }, "mse");
  check_grad({randn({4, 5}, 31)}, [](std::vector<Var>& v) { return mean(v[0]); }, "mean");
}

TEST(Autograd, GradientsAccumulateAndReset) {
  Var w = parameter(Tensor::from_f32({2.f}, {1}));
  for (int i = 0; i < 3; ++i) backward(sum(scale(w, 3.f)));
  EXPECT_FLOAT_EQ(w.grad().data<float>()[0], 9.f);
  zero_grad({w});
  EXPECT_FLOAT_EQ(w.grad().data<float>()[0], 0.f);
  {
    NoGradGuard ng;
    EXPECT_FALSE(scale(w, 2.f).requires_grad());
  }
}

TEST(Autograd, DropoutKeepsExpectationAndMasksGradient) {
  std::mt19937 rng(5);
  Var x = parameter(Tensor::from_f32(std::vector<float>(10000, 1.f), {100, 100}));
  Var y = dropout(x, 0.25f, rng);
  double s = 0;
  for (int64_t i = 0; i < y.numel(); ++i) s += y.data()[i];
  EXPECT_NEAR(s / y.numel(), 1.0, 0.03);
  backward(sum(y));
  for (int64_t i = 0; i < y.numel(); ++i) EXPECT_FLOAT_EQ(x.grad().data<float>()[i], y.data()[i]);  // mask * 1/(1-p)
}

TEST(Autograd, FakeQuantMatchesKernelsAndPassesGradientStraightThrough) {
  const Tensor w = randn({3, 40}, 32, 0.1f);
  Var pw = parameter(w.clone());
  Var q8 = fake_quant_w8(pw);
  std::vector<int8_t> q(40);
  std::vector<float> ref(40);
  for (int r = 0; r < 3; ++r) {
    float s;
    kernels::quantize_row_s8_ref(w.data<float>() + r * 40, 40, q.data(), &s);
    kernels::dequantize_row_s8_ref(q.data(), s, 40, ref.data());
    for (int i = 0; i < 40; ++i) EXPECT_EQ(q8.data()[r * 40 + i], ref[i]);
  }
  backward(sum(q8));
  for (int64_t i = 0; i < 120; ++i) EXPECT_EQ(pw.grad().data<float>()[i], 1.f);

  // Symmetric W4: the largest |value| maps to -8 steps; a value of the opposite sign at the same magnitude is
  // clipped at +7 and gets no gradient.
  Var p4 = parameter(Tensor::from_f32({-8.f, 8.f, 1.f, 0.f}, {1, 4}));
  Var q4 = fake_quant_w4(p4, 32, false);
  EXPECT_FLOAT_EQ(q4.data()[0], -8.f);
  EXPECT_FLOAT_EQ(q4.data()[1], 7.f);
  backward(sum(q4));
  EXPECT_EQ(p4.grad().data<float>()[0], 1.f);
  EXPECT_EQ(p4.grad().data<float>()[1], 0.f);
  EXPECT_EQ(p4.grad().data<float>()[2], 1.f);

  // A8 over [0, 2.55] (step 0.01): 3.0 is clipped -> its gradient goes to hi; -1 -> lo; 1.0 passes to x.
  Var x = parameter(Tensor::from_f32({3.f, -1.f, 1.f}, {3}));
  Var lo = parameter(Tensor::from_f32({0.f}, {1})), hi = parameter(Tensor::from_f32({2.55f}, {1}));
  Var qa = fake_quant_a8(x, lo, hi);
  EXPECT_NEAR(qa.data()[0], 2.55f, 1e-6);
  EXPECT_NEAR(qa.data()[1], 0.f, 1e-6);
  EXPECT_NEAR(qa.data()[2], 1.f, 1e-6);
  backward(sum(qa));
  EXPECT_EQ(x.grad().data<float>()[0], 0.f);
  EXPECT_EQ(x.grad().data<float>()[1], 0.f);
  EXPECT_EQ(x.grad().data<float>()[2], 1.f);
  EXPECT_NEAR(hi.grad().data<float>()[0], 1.f, 1e-3);  // the clipped value, plus ~0 rounding term
  EXPECT_NEAR(lo.grad().data<float>()[0], 1.f, 1e-3);
}

TEST(Autograd, BadShapesAreNamed) {
  Var a = constant(randn({2, 3}, 1)), b = constant(randn({3, 2}, 2));
  EXPECT_THROW(add(a, b), Error);
  EXPECT_THROW(linear(a, constant(randn({4, 5}, 3)), Var()), Error);
  EXPECT_THROW(embedding({7}, constant(randn({4, 2}, 4))), Error);
  EXPECT_THROW(cross_entropy(a, {0}), Error);
}

}  // namespace
}  // namespace shrink::train
