// Low-rank: truncated SVD recovers hand-built low-rank matrices exactly and known singular values, energy -> rank on
// known spectra, the two-matrix Linear equals B*A in double, and a factored model saves, loads and runs the same,
// while quantize refuses its low-rank slots.
#include <gtest/gtest.h>
#include <shrink/compress/lowrank.h>
#include <shrink/compress/quantize.h>
#include <shrink/compress/scale_fold.h>
#include <shrink/core/error.h>
#include <shrink/formats/model_dir.h>
#include <shrink/train/encoder.h>

#include <cmath>
#include <fstream>
#include <random>

#include "test_util.h"

namespace shrink {
namespace {

std::vector<double> randn(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> nd(0, 1);
  std::vector<double> v(n);
  for (auto& x : v) x = nd(gen);
  return v;
}

// n x k matrix with orthonormal columns (modified Gram-Schmidt in double), row-major.
std::vector<double> orthonormal(int64_t n, int64_t k, uint32_t seed) {
  std::vector<double> q = randn(n * k, seed);
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t p = 0; p < j; ++p) {
      double d = 0;
      for (int64_t i = 0; i < n; ++i) d += q[i * k + j] * q[i * k + p];
      for (int64_t i = 0; i < n; ++i) q[i * k + j] -= d * q[i * k + p];
    }
    double nr = 0;
    for (int64_t i = 0; i < n; ++i) nr += q[i * k + j] * q[i * k + j];
    for (int64_t i = 0; i < n; ++i) q[i * k + j] /= std::sqrt(nr);
  }
  return q;
}

// W = U diag(s) V^T with orthonormal U [out, k], V [in, k].
Tensor with_spectrum(int64_t out, int64_t in, const std::vector<double>& s, uint32_t seed) {
  const int64_t k = static_cast<int64_t>(s.size());
  const auto u = orthonormal(out, k, seed), v = orthonormal(in, k, seed + 1);
  Tensor w = Tensor::empty(DType::F32, {out, in});
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < k; ++j) acc += u[o * k + j] * s[j] * v[i * k + j];
      w.data<float>()[o * in + i] = static_cast<float>(acc);
    }
  return w;
}

// max |b a - w| / max |w|
double reconstruction_error(const TruncatedSvd& r, const Tensor& w) {
  const int64_t out = w.dim(0), in = w.dim(1), k = r.rank;
  EXPECT_EQ(r.a.shape(), (Shape{k, in}));
  EXPECT_EQ(r.b.shape(), (Shape{out, k}));
  double err = 0, mx = 0;
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < k; ++j)
        acc += static_cast<double>(r.b.data<float>()[o * k + j]) * r.a.data<float>()[j * in + i];
      err = std::max(err, std::fabs(acc - w.data<float>()[o * in + i]));
      mx = std::max(mx, std::fabs(static_cast<double>(w.data<float>()[o * in + i])));
    }
  return err / mx;
}

struct Shape2 {
  int64_t out, in;
  bool randomized;
};

class SvdRecovery : public ::testing::TestWithParam<Shape2> {};

TEST_P(SvdRecovery, HandBuiltLowRankMatrixIsRecoveredExactly) {
  const auto [out, in, randomized] = GetParam();
  // W = X Y with X [out, 5], Y [5, in]: rank 5.
  const auto x = randn(out * 5, 1), y = randn(5 * in, 2);
  Tensor w = Tensor::empty(DType::F32, {out, in});
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double acc = 0;
      for (int j = 0; j < 5; ++j) acc += x[o * 5 + j] * y[j * in + i];
      w.data<float>()[o * in + i] = static_cast<float>(acc);
    }
  SvdOptions so;
  so.rank = 5;
  if (randomized) so.exact_limit = 0;
  const TruncatedSvd r = truncated_svd(w, so);
  EXPECT_EQ(r.randomized, randomized);
  EXPECT_EQ(r.rank, 5);
  EXPECT_LT(reconstruction_error(r, w), 1e-5);
  // Energy 1.0 finds the true rank: everything past the 5th singular value is rounding noise.
  SvdOptions se;
  se.energy = 0.999999;
  if (randomized) se.exact_limit = 0;
  EXPECT_EQ(truncated_svd(w, se).rank, 5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, SvdRecovery,
                         ::testing::Values(Shape2{48, 80, false}, Shape2{96, 40, false}, Shape2{200, 150, true},
                                           Shape2{120, 260, true}));

TEST(Svd, KnownSingularValuesAndEnergyRank) {
  // s^2 = 100, 25, 9, 1, 0.25: total 135.25.
  const std::vector<double> s = {10, 5, 3, 1, 0.5};
  const Tensor w = with_spectrum(40, 64, s, 7);
  SvdOptions so;
  so.rank = 5;
  const TruncatedSvd r = truncated_svd(w, so);
  ASSERT_GE(r.sigma.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(r.sigma[i], s[i], 1e-4 * s[0]) << i;
  EXPECT_NEAR(r.total_energy, 135.25, 1e-3);
  // 0.9 * 135.25 = 121.7 -> 100 + 25 = 125 reaches it: rank 2. 0.95 -> 128.5 -> 134: rank 3. 0.99 -> 133.9: rank 3.
  EXPECT_EQ(rank_for_energy(s, 135.25, 0.9), 2);
  EXPECT_EQ(rank_for_energy(s, 135.25, 0.95), 3);
  EXPECT_EQ(rank_for_energy(s, 135.25, 0.99), 3);
  EXPECT_EQ(rank_for_energy(s, 135.25, 0.995), 4);
  EXPECT_EQ(rank_for_energy(s, 135.25, 1.0), 5);
  SvdOptions se;
  se.energy = 0.9;
  const TruncatedSvd r2 = truncated_svd(w, se);
  EXPECT_EQ(r2.rank, 2);
  // Rank-2 truncation error is the third singular value (Eckart-Young, spectral norm <= max entry bound): the
  // Frobenius norm of the residual is sqrt(9 + 1 + 0.25).
  double fro = 0;
  for (int64_t o = 0; o < 40; ++o)
    for (int64_t i = 0; i < 64; ++i) {
      double acc = 0;
      for (int j = 0; j < 2; ++j)
        acc += static_cast<double>(r2.b.data<float>()[o * 2 + j]) * r2.a.data<float>()[j * 64 + i];
      const double d = acc - w.data<float>()[o * 64 + i];
      fro += d * d;
    }
  EXPECT_NEAR(std::sqrt(fro), std::sqrt(10.25), 1e-3);
  // Randomized path on the same matrix gives the same leading values.
  SvdOptions sr;
  sr.rank = 3;
  sr.exact_limit = 0;
  const TruncatedSvd r3 = truncated_svd(w, sr);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(r3.sigma[i], s[i], 1e-3 * s[0]) << i;
  EXPECT_THROW(rank_for_energy(s, 135.25, 1.5), Error);
  EXPECT_THROW(truncated_svd(w, SvdOptions{}), Error);
}

TEST(LowRankLinear, EqualsDenseProductInDouble) {
  const int64_t in = 70, out = 45, r = 6;
  const auto av = randn(r * in, 3), bv = randn(out * r, 4), biasv = randn(out, 5), xv = randn(40 * in, 6);
  Tensor a = Tensor::empty(DType::F32, {r, in}), b = Tensor::empty(DType::F32, {out, r});
  Tensor bias = Tensor::empty(DType::F32, {out});
  for (int64_t i = 0; i < a.numel(); ++i) a.data<float>()[i] = static_cast<float>(av[i]);
  for (int64_t i = 0; i < b.numel(); ++i) b.data<float>()[i] = static_cast<float>(bv[i]);
  for (int64_t i = 0; i < out; ++i) bias.data<float>()[i] = static_cast<float>(biasv[i]);
  LowRankLinear l(a, b, bias);
  EXPECT_EQ(l.in_features(), in);
  EXPECT_EQ(l.out_features(), out);
  EXPECT_EQ(l.scheme(), "lowrank-r6");
  // Runtime bytes: the two fp32 matrices and the bias, at least (GEMM panels pad columns to the kernel's width).
  EXPECT_GE(l.weight_bytes(), static_cast<size_t>((r * in + out * r + out) * 4));
  for (int64_t m : {1, 3, 40}) {  // GEMV and GEMM paths
    std::vector<float> x(m * in), y(m * out);
    for (int64_t i = 0; i < m * in; ++i) x[i] = static_cast<float>(xv[i]);
    l.forward(x.data(), m, y.data());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t o = 0; o < out; ++o) {
        double acc = biasv[o];
        for (int64_t k = 0; k < in; ++k) {
          double w = 0;  // (B A)[o][k]
          for (int64_t j = 0; j < r; ++j)
            w += static_cast<double>(b.data<float>()[o * r + j]) * a.data<float>()[j * in + k];
          acc += w * x[i * in + k];
        }
        EXPECT_NEAR(y[i * out + o], acc, 1e-4 * (1 + std::fabs(acc))) << m << " " << i << " " << o;
      }
  }
  EXPECT_THROW(LowRankLinear(a, a, Tensor()), Error);  // B's columns != A's rows
}

ModelConfig tiny_bert() {
  nlohmann::json j = {{"model_type", "bert"},    {"architectures", {"BertForSequenceClassification"}},
                      {"vocab_size", 40},        {"max_position_embeddings", 16},
                      {"num_labels", 2},         {"hidden_size", 48},
                      {"num_hidden_layers", 2},  {"num_attention_heads", 4},
                      {"intermediate_size", 96}, {"type_vocab_size", 2},
                      {"layer_norm_eps", 1e-12}, {"hidden_act", "gelu"}};
  return parse_config(j, "test config");
}

BatchEncoding batch() {
  BatchEncoding be;
  be.batch = 2;
  be.seq = 7;
  std::mt19937 gen(3);
  for (int i = 0; i < 14; ++i) {
    be.ids.push_back(static_cast<int32_t>(gen() % 40));
    be.type_ids.push_back(0);
    be.attention_mask.push_back(i < 12 ? 1 : 0);
  }
  be.lengths = {7, 5};
  return be;
}

std::unique_ptr<Model> tiny_model() {
  train::TrainableEncoder enc(tiny_bert(), 2);
  std::mt19937 gen(5);
  std::normal_distribution<float> nd(0.f, 0.05f);
  for (auto& p : enc.parameters())
    for (int64_t i = 0; i < p.var.numel(); ++i) p.var.mutable_data()[i] += nd(gen);
  return build_model(tiny_bert(), enc.state(), "in-memory");
}

TEST(LowRankPass, FactorsBlockLinearsSavesLoadsAndRunsTheSame) {
  auto model = tiny_model();
  LowRankOptions opt;
  opt.rank = 8;
  const LowRankReport rep = lowrank_model(*model, opt);
  // 2 layers x 6 block linears; pooler and classifier are not block linears.
  EXPECT_EQ(rep.factored, 12);
  EXPECT_EQ(rep.skipped, 0);
  EXPECT_EQ(model->find_linear("bert.pooler.dense")->impl->scheme(), "f32");
  EXPECT_EQ(model->find_linear("classifier")->impl->scheme(), "f32");
  const LinearSlot* q = model->find_linear("bert.encoder.layer.0.attention.self.query");
  EXPECT_EQ(q->impl->scheme(), "lowrank-r8");
  EXPECT_GE(q->impl->weight_bytes(), static_cast<size_t>((8 * 48 + 48 * 8 + 48) * 4));
  // (Runtime bytes are not asserted smaller: at rank 8 the GEMM panels pad A's 8 rows to the kernel's width.)
  const auto& em = dynamic_cast<EncoderModel&>(*model);
  const EncoderOutput before = em.forward(batch());

  const auto dir = testing::temp_dir("lowrank_save");
  save_model(*model, dir / "m");
  std::ifstream cf(dir / "m" / "config.json");
  const auto cfg = nlohmann::json::parse(cf);
  ASSERT_TRUE(cfg.contains(kLowRankConfigKey));
  EXPECT_EQ(cfg[kLowRankConfigKey]["layers"]["bert.encoder.layer.1.output.dense"], 8);
  auto loaded = load_model(dir / "m");
  EXPECT_EQ(loaded->find_linear("bert.encoder.layer.1.intermediate.dense")->impl->scheme(), "lowrank-r8");
  EXPECT_EQ(loaded->tensors().count("bert.encoder.layer.1.intermediate.dense.weight"), 0u);
  EXPECT_EQ(loaded->tensors().at("bert.encoder.layer.1.intermediate.dense.lowrank_A").shape(), (Shape{8, 48}));
  EXPECT_EQ(loaded->tensors().at("bert.encoder.layer.1.intermediate.dense.lowrank_B").shape(), (Shape{96, 8}));
  EXPECT_EQ(loaded->weight_bytes(), model->weight_bytes());
  const EncoderOutput after = dynamic_cast<EncoderModel&>(*loaded).forward(batch());
  ASSERT_EQ(after.logits.numel(), before.logits.numel());
  for (int64_t i = 0; i < after.logits.numel(); ++i)
    EXPECT_EQ(after.logits.data<float>()[i], before.logits.data<float>()[i]) << i;
}

// lowrank -> quantize: each factor becomes its own packed Linear. The logits equal those of the same low-rank model
// whose factors are replaced by the scalar reference's quantize-dequantize (fake_quantize_weights) of each factor
// (W8A16: the kernel dequantizes exactly, only the fp32 summation order differs); saved and reloaded, they are
// unchanged bit for bit.
TEST(LowRankPass, QuantizedFactorsMatchTheReferenceAndReload) {
  auto model = tiny_model();
  LowRankOptions lo;
  lo.rank = 8;
  lowrank_model(*model, lo);
  const auto dir = testing::temp_dir("lowrank_quant");
  save_model(*model, dir / "lr");
  auto reference = load_model(dir / "lr");
  auto quantized = load_model(dir / "lr");
  const QuantSpec spec = parse_quant_spec("w8a16");
  for (auto& s : reference->linears())
    if (const LowRankLinear* lr = as_lowrank(s.impl.get()))
      s.impl = std::make_unique<LowRankLinear>(fake_quantize_weights(lr->a(), spec),
                                               fake_quantize_weights(lr->b(), spec), lr->bias());
  QuantizeOptions qo;
  qo.scheme = spec;
  qo.skip = {"pooler"};  // only the factor pairs differ from the reference
  quantize_model(*quantized, qo);
  const char* layer = "bert.encoder.layer.1.intermediate.dense";
  EXPECT_EQ(quantized->find_linear(layer)->impl->scheme(), "lowrank-r8+w8a16");
  EXPECT_EQ(quantized->find_linear("bert.pooler.dense")->impl->scheme(), "f32");
  const EncoderOutput want = dynamic_cast<EncoderModel&>(*reference).forward(batch());
  const EncoderOutput got = dynamic_cast<EncoderModel&>(*quantized).forward(batch());
  ASSERT_EQ(got.logits.numel(), want.logits.numel());
  for (int64_t i = 0; i < got.logits.numel(); ++i)
    EXPECT_NEAR(got.logits.data<float>()[i], want.logits.data<float>()[i], 1e-5) << i;

  save_model(*quantized, dir / "q");
  std::ifstream cf(dir / "q" / "config.json");
  const auto cfg = nlohmann::json::parse(cf);
  EXPECT_EQ(cfg[kLowRankConfigKey]["layers"][layer], 8);
  EXPECT_EQ(cfg["quantization_config"]["shrink"]["layers"][std::string(layer) + ".lowrank_A"], "w8a16");
  EXPECT_EQ(cfg["quantization_config"]["shrink"]["layers"][std::string(layer) + ".lowrank_B"], "w8a16");
  auto reloaded = load_model(dir / "q");
  EXPECT_EQ(reloaded->tensors().count(std::string(layer) + ".lowrank_A"), 0u);  // no dense factor left
  EXPECT_EQ(reloaded->tensors().at(std::string(layer) + ".lowrank_A.weight").dtype(), DType::I8);
  EXPECT_EQ(reloaded->tensors().count(std::string(layer) + ".bias"), 0u);  // inside the packed B
  EXPECT_EQ(reloaded->find_linear(layer)->impl->scheme(), "lowrank-r8+w8a16");
  EXPECT_EQ(reloaded->weight_bytes(), quantized->weight_bytes());
  EXPECT_EQ(reloaded->parameters(), quantized->parameters());
  EXPECT_EQ(reloaded->parameters(), reference->parameters());  // the factors' shapes, not their codes
  const EncoderOutput again = dynamic_cast<EncoderModel&>(*reloaded).forward(batch());
  for (int64_t i = 0; i < again.logits.numel(); ++i)
    EXPECT_EQ(again.logits.data<float>()[i], got.logits.data<float>()[i]) << i;

  // W4 with groups wider than B's 8 inputs (padded) also saves and reloads to the same logits.
  auto q4 = load_model(dir / "lr");
  qo.scheme = parse_quant_spec("w4a16-g32");
  quantize_model(*q4, qo);
  EXPECT_EQ(q4->find_linear(layer)->impl->scheme(), "lowrank-r8+w4a16-g32");
  const EncoderOutput w4 = dynamic_cast<EncoderModel&>(*q4).forward(batch());
  save_model(*q4, dir / "q4");
  const EncoderOutput w4_again = dynamic_cast<EncoderModel&>(*load_model(dir / "q4")).forward(batch());
  for (int64_t i = 0; i < w4.logits.numel(); ++i)
    EXPECT_EQ(w4_again.logits.data<float>()[i], w4.logits.data<float>()[i]);

  // The calibrated methods need a layer's dense weight: they refuse a low-rank slot by name, and re-quantizing a
  // quantized low-rank layer is refused too.
  for (const char* method : {"gptq", "static"}) {
    auto m = load_model(dir / "lr");
    QuantizeOptions bad;
    bad.scheme = parse_quant_spec(std::string(method) == "static" ? "w8a8" : "w4a16");
    bad.method = parse_quant_method(method);
    bad.calib = testing::calib_file("lowrank", 4000);
    const std::string e = testing::error_of([&] { quantize_model(*m, bad); });
    EXPECT_NE(e.find("is low-rank"), std::string::npos) << e;
    EXPECT_NE(e.find("--method rtn"), std::string::npos) << e;
  }
  QuantizeOptions again_q;
  again_q.scheme = spec;
  const std::string e = testing::error_of([&] { quantize_model(*reloaded, again_q); });
  EXPECT_NE(e.find("already lowrank-r8+w8a16"), std::string::npos) << e;
}

TEST(LowRankPass, FullRankFactorsEqualTheDenseModel) {
  // Rank = min(in, out) keeps all the energy: logits match the dense model (when factors would be smaller).
  auto dense = tiny_model();
  auto model = tiny_model();
  LowRankOptions opt;
  opt.energy = 1.0;
  opt.layers = "intermediate\\.dense";  // 96 x 48: full rank 48 would not be smaller -> skipped, says so
  const LowRankReport rep = lowrank_model(*model, opt);
  EXPECT_EQ(rep.factored, 0);
  EXPECT_EQ(rep.skipped, 2);
  EXPECT_NE(rep.layers[0].note.find("would not be smaller"), std::string::npos) << rep.layers[0].note;
  opt.energy = 0;
  opt.rank = 40;  // 40 * 144 = 5760 > 48 * 96 = 4608: skipped
  EXPECT_EQ(lowrank_model(*model, opt).skipped, 2);
  opt.rank = 31;  // 31 * 144 = 4464 < 4608: factored
  const LowRankReport rep2 = lowrank_model(*model, opt);
  EXPECT_EQ(rep2.factored, 2);
  // The 31 largest of 48 sigma^2 hold at least 31/48 of their sum.
  EXPECT_GT(rep2.layers[0].energy_kept, 31.0 / 48.0);
  EXPECT_LE(rep2.layers[0].energy_kept, 1.0 + 1e-9);
}

TEST(LowRankPass, RejectsBadRequestsBeforeChangingAnything) {
  auto model = tiny_model();
  LowRankOptions opt;
  EXPECT_THROW(lowrank_model(*model, opt), Error);  // neither rank nor energy
  opt.rank = 4;
  opt.layers = "no_such_layer";
  EXPECT_THROW(lowrank_model(*model, opt), Error);
  opt.layers = "(";
  EXPECT_THROW(lowrank_model(*model, opt), Error);
  opt.layers = "";
  opt.energy = 0.9;
  EXPECT_THROW(lowrank_model(*model, opt), Error);  // both
  for (const auto& s : model->linears()) EXPECT_EQ(s.impl->scheme(), "f32") << s.name;
}

}  // namespace
}  // namespace shrink
