// QAT: the fake-quant hook equals the scalar quantization references of kernels/quant.h, ranges follow the EMA of
// the batch min/max while observing, the converted packed engine model computes the QAT model's eval logits, and a
// few QAT updates reduce the training loss.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/kernels/quant.h>
#include <shrink/train/qat.h>

#include <cmath>
#include <cstdlib>
#include <random>

#include "test_util.h"

namespace shrink::train {
namespace {

constexpr int kVocab = 40;

ModelConfig tiny_bert(int hidden = 64, int ff = 128) {
  nlohmann::json j = {{"model_type", "bert"},    {"architectures", {"BertForSequenceClassification"}},
                      {"vocab_size", kVocab},    {"max_position_embeddings", 16},
                      {"num_labels", 2},         {"hidden_size", hidden},
                      {"num_hidden_layers", 2},  {"num_attention_heads", 4},
                      {"intermediate_size", ff}, {"type_vocab_size", 2},
                      {"layer_norm_eps", 1e-12}, {"hidden_act", "gelu"}};
  return parse_config(j, "test config");
}

void perturb(TrainableEncoder& enc, uint32_t seed, float sd) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.f, sd);
  for (auto& p : enc.parameters())
    for (int64_t i = 0; i < p.var.numel(); ++i) p.var.mutable_data()[i] += nd(gen);
}

EncoderBatch random_batch(int64_t B, int64_t T, uint32_t seed) {
  std::mt19937 gen(seed);
  EncoderBatch b;
  b.batch = B;
  b.seq = T;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t len = T - (i % 3);
    for (int64_t t = 0; t < T; ++t) {
      b.ids.push_back(t < len ? static_cast<int32_t>(gen() % kVocab) : 0);
      b.type_ids.push_back(0);
      b.mask.push_back(t < len ? 1 : 0);
    }
  }
  return b;
}

Tensor random_tensor(Shape s, uint32_t seed, float sd = 1.f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.f, sd);
  Tensor t = Tensor::empty(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = nd(gen);
  return t;
}

Var find_extra(const TrainableEncoder& enc, const std::string& name) {
  for (const auto& p : enc.extra_parameters)
    if (p.name == name) return p.var;
  ADD_FAILURE() << "no extra parameter " << name;
  return {};
}

// y = x w^T + b in double from already-dequantized operands.
std::vector<double> matmul_ref(const std::vector<float>& x, const std::vector<float>& w, const float* b, int64_t m,
                               int64_t in, int64_t out) {
  std::vector<double> y(m * out);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t o = 0; o < out; ++o) {
      double s = b[o];
      for (int64_t k = 0; k < in; ++k) s += static_cast<double>(x[i * in + k]) * w[o * in + k];
      y[i * out + o] = s;
    }
  return y;
}

TEST(Qat, W4HookEqualsScalarReference) {
  TrainableEncoder enc(tiny_bert(), 1);
  QatOptions o;
  o.spec = parse_quant_spec("w4a16-g32-asym");
  Qat qat(enc, o);
  const std::string slot = "bert.encoder.layer.0.intermediate.dense";
  const int64_t m = 5, in = 64, out = 128;
  Tensor x = random_tensor({m, in}, 3), w = random_tensor({out, in}, 4, 0.05f), b = random_tensor({out}, 5);
  Var y = enc.linear_hook(slot, constant(x), parameter(w), parameter(b));
  // Reference: quantize_row_w4_ref / dequantize_row_w4_ref per row, fp32 activations.
  std::vector<float> wd(out * in), xv(x.data<float>(), x.data<float>() + m * in);
  const int g = 32;
  std::vector<uint8_t> codes(kernels::w4_row_bytes(in, g)), zps(kernels::w4_groups(in, g));
  std::vector<uint16_t> sc(kernels::w4_groups(in, g));
  for (int64_t r = 0; r < out; ++r) {
    kernels::quantize_row_w4_ref(w.data<float>() + r * in, in, g, true, codes.data(), sc.data(), zps.data());
    kernels::dequantize_row_w4_ref(codes.data(), sc.data(), zps.data(), in, g, wd.data() + r * in);
  }
  const auto ref = matmul_ref(xv, wd, b.data<float>(), m, in, out);
  for (int64_t i = 0; i < m * out; ++i) EXPECT_NEAR(y.data()[i], ref[i], 1e-5 * (1 + std::fabs(ref[i]))) << i;
  // The classifier head stays fp32 (default skip): the hook is a plain linear there.
  EXPECT_EQ(std::find(qat.slots().begin(), qat.slots().end(), "classifier"), qat.slots().end());
  EXPECT_EQ(qat.slots().size(), 2u * 6u + 1u);  // 6 per layer + pooler
}

TEST(Qat, W8A8HookEqualsScalarReference) {
  TrainableEncoder enc(tiny_bert(), 1);
  QatOptions o;
  o.spec = parse_quant_spec("w8a8");
  o.observe_steps = 0;  // ranges as set below, no observation
  Qat qat(enc, o);
  EXPECT_FALSE(qat.observing());
  const std::string slot = "bert.encoder.layer.1.output.dense";
  find_extra(enc, slot + ".input_lo").mutable_data()[0] = -1.5f;
  find_extra(enc, slot + ".input_hi").mutable_data()[0] = 2.25f;
  const int64_t m = 4, in = 128, out = 64;
  Tensor x = random_tensor({m, in}, 6), w = random_tensor({out, in}, 7, 0.05f), b = random_tensor({out}, 8);
  Var y = enc.linear_hook(slot, constant(x), parameter(w), parameter(b));
  float scale;
  int32_t zp;
  kernels::choose_u8_params(-1.5f, 2.25f, &scale, &zp);
  std::vector<float> xd(m * in), wd(out * in);
  std::vector<uint8_t> q(in);
  for (int64_t r = 0; r < m; ++r) {
    kernels::quantize_row_u8_ref(x.data<float>() + r * in, in, scale, zp, q.data());
    for (int64_t k = 0; k < in; ++k) xd[r * in + k] = static_cast<float>(q[k] - zp) * scale;
  }
  std::vector<int8_t> qw(in);
  for (int64_t r = 0; r < out; ++r) {
    float s;
    kernels::quantize_row_s8_ref(w.data<float>() + r * in, in, qw.data(), &s);
    kernels::dequantize_row_s8_ref(qw.data(), s, in, wd.data() + r * in);
  }
  const auto ref = matmul_ref(xd, wd, b.data<float>(), m, in, out);
  for (int64_t i = 0; i < m * out; ++i) EXPECT_NEAR(y.data()[i], ref[i], 1e-5 * (1 + std::fabs(ref[i]))) << i;
  // The engine's static scale of the slot is the same choose_u8_params of the range.
  const QuantSpec ss = qat.slot_spec(slot);
  EXPECT_EQ(ss.name(), "w8a8-static");
  EXPECT_EQ(ss.act_scale, scale);
  EXPECT_EQ(ss.act_zero_point, zp);
}

TEST(Qat, ObservedRangesFollowEmaOfBatchMinMax) {
  TrainableEncoder enc(tiny_bert(), 1);
  QatOptions o;
  o.spec = parse_quant_spec("w8a8");
  o.observe_steps = 2;
  o.ema = 0.75f;
  Qat qat(enc, o);
  ASSERT_TRUE(qat.observing());
  const std::string slot = "bert.encoder.layer.0.attention.self.query";
  Tensor w = random_tensor({64, 64}, 1, 0.05f), b = random_tensor({64}, 2);
  Tensor x1 = Tensor::from_f32(std::vector<float>(64 * 2, 0.5f), {2, 64});
  x1.data<float>()[3] = -2.f, x1.data<float>()[70] = 4.f;
  Tensor x2 = Tensor::from_f32(std::vector<float>(64 * 2, 0.f), {2, 64});
  x2.data<float>()[0] = -6.f, x2.data<float>()[1] = 8.f;
  enc.linear_hook(slot, constant(x1), parameter(w), parameter(b));
  EXPECT_FLOAT_EQ(qat.input_range(slot).first, -2.f);  // first batch: its min/max
  EXPECT_FLOAT_EQ(qat.input_range(slot).second, 4.f);
  {
    NoGradGuard ng;  // evaluation forwards do not observe
    enc.linear_hook(slot, constant(x2), parameter(w), parameter(b));
    EXPECT_FLOAT_EQ(qat.input_range(slot).first, -2.f);
  }
  enc.linear_hook(slot, constant(x2), parameter(w), parameter(b));
  EXPECT_FLOAT_EQ(qat.input_range(slot).first, 0.75f * -2.f + 0.25f * -6.f);
  EXPECT_FLOAT_EQ(qat.input_range(slot).second, 0.75f * 4.f + 0.25f * 8.f);
  qat.after_update(1);
  EXPECT_TRUE(qat.observing());
  qat.after_update(2);
  EXPECT_FALSE(qat.observing());
  enc.linear_hook(slot, constant(x1), parameter(w), parameter(b));  // learned from now on: no change here
  EXPECT_FLOAT_EQ(qat.input_range(slot).second, 0.75f * 4.f + 0.25f * 8.f);
}

BatchEncoding to_encoding(const EncoderBatch& b) {
  BatchEncoding be;
  be.batch = b.batch;
  be.seq = b.seq;
  be.ids = b.ids;
  be.type_ids = b.type_ids;
  be.attention_mask = b.mask;
  for (int64_t i = 0; i < b.batch; ++i) {
    int32_t n = 0;
    for (int64_t t = 0; t < b.seq; ++t) n += b.mask[i * b.seq + t];
    be.lengths.push_back(n);
  }
  return be;
}

// The packed engine model computes what the QAT model computes in eval mode. W4: the engine dequantizes exactly the
// codes fake_quant_w4 used (the 48 token rows take the dequantized-panel GEMM; the pooler's 4 rows the fp32 GEMV
// selected by SHRINK_W4_GEMV=f32), so only fp32 summation order differs: |dlogit| ~ 1e-6 relative, bound 1e-4. W8A8:
// the integer dot of the int8 kernel equals sum((qx - zp) s_x)(qw s_w) up to fp32 rounding of the fake-quant products;
// an activation sitting on a rounding tie may round the other way in the kernel's quantizer (x * (1/s) vs x / s), which
// moves one input by one step s_x and a logit by about s_x * |w| * (downstream gain) ~ 1e-3 here: bound 5e-3, and
// the mean difference must stay at the fp32 level (< 1e-4).
class QatConvert : public ::testing::TestWithParam<std::string> {};

TEST_P(QatConvert, PackedEngineLogitsEqualFakeQuantLogits) {
  // The pooler runs on m = 4 rows: the W4 GEMV. Its AVX-512 VNNI form rounds x to int8 (kernels/int4.h); the exact
  // fp32 GEMV is the one that computes what fake quantization computes.
  ::setenv("SHRINK_W4_GEMV", "f32", 1);
  TrainableEncoder enc(tiny_bert(), 3);
  perturb(enc, 9, 0.05f);
  QatOptions o;
  o.spec = parse_quant_spec(GetParam());
  Qat qat(enc, o);
  const EncoderBatch b = random_batch(4, 12, 5);
  std::mt19937 rng(1);
  if (qat.observing()) enc.forward(b, false, rng);  // one observed forward sets every range (grad on: observes)
  qat.set_observing(false);
  Var fq;
  {
    NoGradGuard ng;
    fq = enc.forward(b, false, rng).logits;
  }
  auto packed = convert_qat(enc, qat);
  int packed_slots = 0;
  for (const auto& s : packed->linears()) packed_slots += s.impl->packed() != nullptr;
  EXPECT_EQ(packed_slots, static_cast<int>(qat.slots().size()));
  EXPECT_EQ(packed->find_linear("classifier")->impl->scheme(), "f32");
  const EncoderOutput out = dynamic_cast<EncoderModel&>(*packed).forward(to_encoding(b));
  ASSERT_EQ(out.logits.numel(), fq.numel());
  const bool w4 = o.spec.scheme == WeightScheme::W4A16;
  double mean = 0;
  for (int64_t i = 0; i < fq.numel(); ++i) {
    const double d = std::fabs(fq.data()[i] - out.logits.data<float>()[i]);
    mean += d / static_cast<double>(fq.numel());
    EXPECT_LE(d, w4 ? 1e-4 : 5e-3) << i << " fake-quant " << fq.data()[i] << " engine " << out.logits.data<float>()[i];
  }
  EXPECT_LT(mean, w4 ? 1e-4 : 1e-3);
  // And the converted model is not the fp32 one: quantization visibly changed the logits.
  enc.linear_hook = nullptr;
  NoGradGuard ng;
  Var fp = enc.forward(b, false, rng).logits;
  double moved = 0;
  for (int64_t i = 0; i < fp.numel(); ++i) moved = std::max<double>(moved, std::fabs(fp.data()[i] - fq.data()[i]));
  EXPECT_GT(moved, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Schemes, QatConvert, ::testing::Values("w4a16-g32", "w4a16-g64-asym", "w8a8"));

// Label 1 rows draw their tokens from ids 3..20, label 0 rows from 21..39: a rule the model must learn.
ClassifyData rule_data(int n, uint32_t seed) {
  std::mt19937 gen(seed);
  ClassifyData d;
  for (int i = 0; i < n; ++i) {
    const int label = i % 2;
    std::vector<int32_t> ids = {1};
    const int len = 4 + static_cast<int>(gen() % 6);
    for (int t = 0; t < len; ++t)
      ids.push_back(label ? 3 + static_cast<int32_t>(gen() % 18) : 21 + static_cast<int32_t>(gen() % 19));
    ids.push_back(2);
    d.ids.push_back(ids);
    d.labels.push_back(label);
  }
  return d;
}

double mean_loss(const TrainableEncoder& enc, const ClassifyData& d) {
  NoGradGuard ng;
  std::mt19937 rng(0);
  std::vector<int64_t> idx(d.size());
  for (size_t i = 0; i < d.size(); ++i) idx[i] = static_cast<int64_t>(i);
  return cross_entropy(enc.forward(d.batch(idx), false, rng).logits, d.labels).item();
}

class QatTrain : public ::testing::TestWithParam<std::string> {};

TEST_P(QatTrain, FewUpdatesReduceTheLoss) {
  TrainableEncoder enc(tiny_bert(32, 64), 4);
  enc.dropout = 0.f;
  QatOptions o;
  o.spec = parse_quant_spec(GetParam());
  o.observe_steps = 5;
  Qat qat(enc, o);
  const ClassifyData tr = rule_data(32, 1);
  ClassifyData none;
  const double before = mean_loss(enc, tr);
  TrainOptions t;
  t.epochs = 10;  // 20 updates, constant learning rate: enough to fit 32 rows of an easy rule
  t.batch = 16;
  t.lr = 5e-3f;
  t.warmup_fraction = 0;
  t.decay = Decay::Constant;
  t.after_update = [&qat](int64_t s) { qat.after_update(s); };
  const auto rep = train_classifier(enc, tr, none, t);
  EXPECT_FALSE(qat.observing());
  const double after = mean_loss(enc, tr);
  EXPECT_LT(after, before - 0.2) << "before " << before << " after " << after << " steps " << rep.steps;
  if (o.spec.scheme == WeightScheme::W8A8) {
    // The learned ranges are proper intervals around the activations' values.
    for (const auto& s : qat.slots()) {
      const auto [lo, hi] = qat.input_range(s);
      EXPECT_LT(lo, hi) << s;
      EXPECT_TRUE(std::isfinite(lo) && std::isfinite(hi)) << s;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Schemes, QatTrain, ::testing::Values("w4a16-g32", "w8a8"));

TEST(Qat, RejectsSchemesItDoesNotTrain) {
  TrainableEncoder enc(tiny_bert(), 1);
  QatOptions o;
  o.spec = parse_quant_spec("bf16");
  EXPECT_THROW(Qat(enc, o), Error);
  o.spec = parse_quant_spec("w4a16-g32");
  o.skip = {"."};
  EXPECT_THROW(Qat(enc, o), Error);
  o.skip = {"("};
  EXPECT_THROW(Qat(enc, o), Error);
}

}  // namespace
}  // namespace shrink::train
