// GPTQ: codes against the independent numpy reference (tests/reference/gptq.py), RTN equality on a diagonal
// Hessian, lower layer-output error than RTN, the Hessian accumulator, and sequential calibration of a model.
#include <gtest/gtest.h>
#include <shrink/compress/calibration.h>
#include <shrink/compress/gptq.h>
#include <shrink/compress/quantize.h>
#include <shrink/compress/sequential.h>
#include <shrink/core/error.h>
#include <shrink/formats/model_dir.h>
#include <shrink/kernels/quant.h>
#include <shrink/models/synth.h>
#include <shrink/ops/qlinear.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "unit/test_util.h"

namespace shrink {
namespace {

const std::string kRef = std::string(SHRINK_SOURCE_DIR) + "/tests/reference/gptq.py";

// Calibration rows with correlated channels (a random mixing of fewer latent factors), a few outlier channels and
// `dead` channels that are always zero: the situation GPTQ is for.
std::vector<float> make_inputs(int64_t n, int64_t in, int dead, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t latent = in / 4;
  std::vector<float> mix(static_cast<size_t>(latent * in));
  for (auto& v : mix) v = nd(rng) / std::sqrt(static_cast<float>(latent));
  std::vector<float> x(static_cast<size_t>(n * in));
  std::vector<float> z(static_cast<size_t>(latent));
  for (int64_t r = 0; r < n; ++r) {
    for (auto& v : z) v = nd(rng);
    for (int64_t c = 0; c < in; ++c) {
      float s = 0.3f * nd(rng);
      for (int64_t l = 0; l < latent; ++l) s += z[l] * mix[l * in + c];
      if (c % 37 == 5) s *= 6.f;  // outlier channels
      x[r * in + c] = s;
    }
  }
  for (int d = 0; d < dead; ++d)
    for (int64_t r = 0; r < n; ++r) x[r * in + (3 + 11 * d) % in] = 0.f;
  return x;
}

std::vector<float> make_weights(int64_t out, int64_t in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.05f);
  std::vector<float> w(static_cast<size_t>(out * in));
  for (auto& v : w) v = nd(rng);
  return w;
}

Tensor hessian_of(const std::vector<float>& x, int64_t n, int64_t in) {
  HessianAccumulator acc(in);
  acc.add(x.data(), n / 2);  // two calls: the accumulation across batches is part of what is tested
  acc.add(x.data() + n / 2 * in, n - n / 2);
  return acc.hessian();
}

void write_raw(const std::string& path, const std::vector<float>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
}

struct RefOut {
  std::vector<int> codes;
  std::vector<float> scales;
  std::vector<int> zeros;
};

RefOut run_reference(const std::string& dir, int64_t out, int64_t in, int64_t n, int group, bool asym, bool act,
                     bool stat, double damp, int scale_grid, bool weighted) {
  const std::string cmd = "/usr/bin/python3 " + kRef + " " + dir + "/w.f32 " + dir + "/x.f32 " + std::to_string(out) +
                          " " + std::to_string(in) + " " + std::to_string(n) + " " + std::to_string(group) + " " +
                          (asym ? "1" : "0") + " " + (act ? "1" : "0") + " " + (stat ? "1" : "0") + " " +
                          std::to_string(damp) + " " + std::to_string(scale_grid) + " " + (weighted ? "1" : "0") +
                          " > " + dir + "/ref.txt";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream f(dir + "/ref.txt");
  RefOut r;
  std::string line;
  int part = 0;
  while (std::getline(f, line)) {
    if (line == "scales" || line == "zeros") {
      ++part;
      continue;
    }
    if (part == 0) r.codes.push_back(std::stoi(line));
    if (part == 1) r.scales.push_back(std::stof(line));
    if (part == 2) r.zeros.push_back(std::stoi(line));
  }
  return r;
}

// Codes of a packed layer by original column: W8 int8 weights, W4 nibbles (low nibble = even column).
std::vector<int> codes_of(const PackedLinear& p) {
  std::vector<int> c(static_cast<size_t>(p.out * p.in));
  if (p.spec.scheme == WeightScheme::W4A16) {
    const Tensor* t = p.find("weight_packed");
    const int64_t rb = t->dim(1);
    for (int64_t r = 0; r < p.out; ++r)
      for (int64_t k = 0; k < p.in; ++k) {
        const uint8_t b = t->data<uint8_t>()[r * rb + k / 2];
        c[r * p.in + k] = (k & 1) ? b >> 4 : b & 15;
      }
  } else {
    const Tensor* t = p.find("weight");
    for (int64_t i = 0; i < p.out * p.in; ++i) c[i] = t->data<int8_t>()[i];
  }
  return c;
}

std::vector<float> scales_of(const PackedLinear& p) {
  const Tensor* s = p.find("weight_scale");
  std::vector<float> v(static_cast<size_t>(s->numel()));
  for (int64_t i = 0; i < s->numel(); ++i)
    v[i] = s->dtype() == DType::F16 ? f16_to_f32(s->data<uint16_t>()[i]) : s->data<float>()[i];
  return v;
}

// sum over rows of ||x W^T - x Q^T||^2 through the packed layer's own forward.
double output_error(const PackedLinear& p, const std::vector<float>& w, const std::vector<float>& x, int64_t n) {
  auto dense = make_dense_linear(Tensor::from_f32(w, {p.out, p.in}));
  auto q = make_packed_linear(p);
  std::vector<float> y0(static_cast<size_t>(n * p.out)), y1(y0.size());
  dense->forward(x.data(), n, y0.data());
  q->forward(x.data(), n, y1.data());
  double e = 0;
  for (size_t i = 0; i < y0.size(); ++i)
    e += (static_cast<double>(y0[i]) - y1[i]) * (static_cast<double>(y0[i]) - y1[i]);
  return e;
}

struct Case {
  std::string scheme;
  bool act_order, static_groups;
  int64_t in;
  int scale_grid = 0;  // ScaleSearchOptions::grid (0: max scales)
  bool weighted = false;
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.scheme << (c.act_order ? "-act" : "") << (c.static_groups ? "-static" : "") << "-in" << c.in;
  if (c.scale_grid) *os << "-search" << c.scale_grid << (c.weighted ? "w" : "");
}

class GptqReference : public ::testing::TestWithParam<Case> {};

// Bounds: the reference runs in float64 with immediate (non-lazy) updates, the C++ code in float32 with blocked
// lazy updates; a weight that lands within float rounding of a code boundary can round the other way and the
// difference then propagates. Measured: 0 of 6144 codes differ in every case below; we allow 1% of codes, each off by
// at most 1 (2 for W8, whose steps are 16x finer), scales within 1% (a group's max can move by the drift too), and the
// layer output error within 2% of the reference's.
TEST_P(GptqReference, CodesMatchNumpy) {
  const Case c = GetParam();
  const int64_t out = 24, in = c.in, n = 384;
  const std::string dir = testing::temp_dir("gptq_ref").string();
  const auto w = make_weights(out, in, 7);
  const auto x = make_inputs(n, in, 2, 11);
  write_raw(dir + "/w.f32", w);
  write_raw(dir + "/x.f32", x);
  const QuantSpec spec = parse_quant_spec(c.scheme);
  GptqOptions opt;
  opt.act_order = c.act_order;
  opt.static_groups = c.static_groups;
  opt.block = 64;  // several lazy blocks even at in = 256
  opt.scale_search.grid = c.scale_grid;
  opt.scale_search.weighted = c.weighted;
  GptqStats st;
  const PackedLinear p = gptq_quantize(Tensor::from_f32(w, {out, in}), nullptr, hessian_of(x, n, in), spec, opt, &st);
  EXPECT_EQ(st.dead_columns, 2);
  p.validate("gptq test layer");
  const RefOut ref = run_reference(dir, out, in, n, spec.scheme == WeightScheme::W4A16 ? spec.group : 0, spec.asym,
                                   c.act_order, c.static_groups, opt.damp, c.scale_grid, c.weighted);
  const std::vector<int> got = codes_of(p);
  ASSERT_EQ(ref.codes.size(), got.size());
  int64_t differ = 0;
  const int max_step = spec.scheme == WeightScheme::W4A16 ? 1 : 2;
  for (size_t i = 0; i < got.size(); ++i) {
    differ += got[i] != ref.codes[i];
    ASSERT_LE(std::abs(got[i] - ref.codes[i]), max_step) << "code " << i;
  }
  RecordProperty("codes_differ", static_cast<int>(differ));
  EXPECT_LE(differ, static_cast<int64_t>(got.size() / 100)) << differ << " of " << got.size() << " codes differ";
  const std::vector<float> s = scales_of(p);
  ASSERT_EQ(s.size(), ref.scales.size());
  for (size_t i = 0; i < s.size(); ++i) EXPECT_NEAR(s[i], ref.scales[i], 0.01f * std::fabs(ref.scales[i])) << i;
  if (spec.asym) {
    const Tensor* z = p.find("weight_zero_point");
    int64_t zd = 0;
    for (int64_t i = 0; i < z->numel(); ++i) zd += std::abs(z->data<uint8_t>()[i] - ref.zeros[i]) > 0;
    EXPECT_LE(zd, z->numel() / 50 + 1);
  }
  // The reference's codes and scales, re-packed into our layout, give the same layer error.
  PackedLinear rp = p;
  for (auto& [name, t] : rp.tensors) {
    t = t.clone();
    if (name == "weight") std::copy(ref.codes.begin(), ref.codes.end(), t.data<int8_t>());
    if (name == "weight_scale" && t.dtype() == DType::F32)
      std::copy(ref.scales.begin(), ref.scales.end(), t.data<float>());
    if (name == "weight_scale" && t.dtype() == DType::F16)
      for (size_t i = 0; i < ref.scales.size(); ++i) t.data<uint16_t>()[i] = f32_to_f16(ref.scales[i]);
    if (name == "weight_zero_point")
      for (size_t i = 0; i < ref.zeros.size(); ++i) t.data<uint8_t>()[i] = static_cast<uint8_t>(ref.zeros[i]);
    if (name == "weight_packed") {
      const int64_t rb = t.dim(1);
      for (int64_t r = 0; r < out; ++r)
        for (int64_t k = 0; k < in; ++k) {
          uint8_t& b = t.data<uint8_t>()[r * rb + k / 2];
          const int q = ref.codes[r * in + k];
          b = (k & 1) ? static_cast<uint8_t>((b & 0x0F) | (q << 4)) : static_cast<uint8_t>((b & 0xF0) | q);
        }
    }
  }
  const double e_got = output_error(p, w, x, n), e_ref = output_error(rp, w, x, n);
  EXPECT_NEAR(e_got, e_ref, 0.02 * e_ref);
}

INSTANTIATE_TEST_SUITE_P(
    Schemes, GptqReference,
    ::testing::Values(Case{"w4a16-g32", false, false, 256}, Case{"w4a16-g32-asym", false, false, 256},
                      Case{"w4a16-g64", true, false, 256}, Case{"w4a16-g128-asym", true, false, 256},
                      Case{"w4a16-g32", false, true, 256}, Case{"w4a16-g64", false, false, 200},
                      Case{"w8a16", false, false, 256}, Case{"w8a16", true, false, 200},
                      // The scale search (IST-DASLab mse): dynamic and static groups, W8 rows.
                      Case{"w4a16-g32", false, false, 256, 100}, Case{"w4a16-g32-asym", false, false, 256, 100, true},
                      Case{"w4a16-g64", true, false, 200, 100, true}, Case{"w8a16", false, false, 256, 100}));

// With a diagonal Hessian nothing propagates: GPTQ must be round-to-nearest, byte for byte (also checks that the
// grids are the references' grids).
TEST(Gptq, DiagonalHessianIsRoundToNearest) {
  const int64_t out = 16, in = 96;
  const auto w = make_weights(out, in, 3);
  std::vector<float> h(static_cast<size_t>(in * in), 0.f);
  for (int64_t i = 0; i < in; ++i) h[i * in + i] = 0.5f + 0.01f * static_cast<float>(i);
  for (const char* scheme : {"w4a16-g32", "w4a16-g64-asym", "w8a16", "w8a8"}) {
    const QuantSpec spec = parse_quant_spec(scheme);
    const Tensor wt = Tensor::from_f32(w, {out, in});
    for (bool act : {false, true}) {
      GptqOptions opt;
      opt.act_order = act;
      opt.scale_search.grid = 0;  // the max scales of round-to-nearest
      const PackedLinear g = gptq_quantize(wt, nullptr, Tensor::from_f32(h, {in, in}), spec, opt);
      const PackedLinear r = quantize_linear_weights(wt, nullptr, spec);
      ASSERT_EQ(g.tensors.size(), r.tensors.size());
      for (size_t i = 0; i < g.tensors.size(); ++i) {
        const Tensor& a = g.tensors[i].second;
        const Tensor& b = r.tensors[i].second;
        ASSERT_EQ(a.nbytes(), b.nbytes());
        EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0)
            << scheme << " act " << act << " " << g.tensors[i].first;
      }
    }
  }
}

// The point of GPTQ: lower output error than RTN on the calibration rows (the objective it minimises).
TEST(Gptq, LowerLayerErrorThanRoundToNearest) {
  const int64_t out = 64, in = 256, n = 512;
  const auto w = make_weights(out, in, 5);
  const auto x = make_inputs(n, in, 0, 9);
  const Tensor h = hessian_of(x, n, in);
  for (const char* scheme : {"w4a16-g32", "w4a16-g128-asym", "w8a16"}) {
    const QuantSpec spec = parse_quant_spec(scheme);
    const Tensor wt = Tensor::from_f32(w, {out, in});
    const double rtn = output_error(quantize_linear_weights(wt, nullptr, spec), w, x, n);
    for (bool act : {false, true}) {
      GptqOptions opt;
      opt.act_order = act;
      const double gptq = output_error(gptq_quantize(wt, nullptr, h, spec, opt), w, x, n);
      EXPECT_LT(gptq, 0.8 * rtn) << scheme << " act_order " << act << ": gptq " << gptq << " rtn " << rtn;
    }
  }
}

// The scale search on a hand-computed group: W4 sym, values {1, 0.28} (group 32, the rest zero padding), importance
// {1, 100}, norm 2, grid 4 (p in {1, 0.75, 0.5}).
//   p = 1:    s = 1 / -8 = -0.125;   1 -> code 0 = 1 (exact); 0.28 -> round(-2.24 + 8) = 6 -> 0.25: 100 * 0.03^2 = 0.09
//   p = 0.75: s = -0.09375; 1 -> code round(-10.67 + 8) = 0 -> 0.75: 0.25^2 = 0.0625; 0.28 -> round(-2.987 + 8) = 5
//             -> 0.28125: 100 * 0.00125^2 = 1.5625e-4; total 0.06265625
//   p = 0.5:  s = -0.0625;   1 -> 0.5: 0.25; 0.28 -> round(-4.48 + 8) = 4 -> 0.25: 0.09; total 0.34
TEST(GptqScaleSearch, HandComputedGroup) {
  const float v[2] = {1.f, 0.28f}, imp[2] = {1.f, 100.f};
  ScaleSearchOptions opt;
  opt.grid = 4;
  opt.norm = 2;
  const GroupScaleChoice c = search_group_scale(v, 2, parse_quant_spec("w4a16-g32"), opt, imp);
  EXPECT_FLOAT_EQ(c.shrink, 0.75f);
  EXPECT_FLOAT_EQ(c.scale, -0.09375f);
  EXPECT_EQ(c.zero_point, 8);
  EXPECT_NEAR(c.error_max, 0.09, 1e-6);
  EXPECT_NEAR(c.error_best, 0.06265625, 1e-6);
  // Without the importance the error of 0.28 counts once: the max scale wins (0.0009 < 0.0625 + 1.5625e-6).
  const GroupScaleChoice plain = search_group_scale(v, 2, parse_quant_spec("w4a16-g32"), opt);
  EXPECT_FLOAT_EQ(plain.shrink, 1.f);
  EXPECT_FLOAT_EQ(plain.scale, -0.125f);
  EXPECT_NEAR(plain.error_best, 0.0009, 1e-7);
}

// On random groups with outliers the searched scale never has a higher error than the max scale, whose error is
// that of the round-to-nearest reference quantizer (kernels/quant.h), and the reported error is that of the
// returned scale and zero point recomputed here.
TEST(GptqScaleSearch, NeverWorseThanMaxScale) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 1.f);
  ScaleSearchOptions opt;
  opt.grid = 100;
  int improved = 0, cases = 0;
  for (const char* scheme : {"w4a16-g32", "w4a16-g32-asym", "w8a16"}) {
    const QuantSpec spec = parse_quant_spec(scheme);
    const bool w4 = spec.scheme == WeightScheme::W4A16;
    for (int t = 0; t < 200; ++t) {
      const int64_t n = w4 ? 32 - (t % 3) * 7 : 96;  // also groups shorter than 32 (padding)
      std::vector<float> v(static_cast<size_t>(n)), imp(v.size());
      for (auto& x : v) x = nd(rng);
      v[static_cast<size_t>(t) % v.size()] *= 4.f;  // an outlier
      for (auto& x : imp) x = 0.1f + std::fabs(nd(rng));
      const bool use_imp = t % 2 == 1;
      const GroupScaleChoice c = search_group_scale(v.data(), n, spec, opt, use_imp ? imp.data() : nullptr);
      // The max scale's error from the reference quantizer.
      std::vector<float> dq(v.size());
      if (w4) {
        uint8_t codes[16];
        uint16_t sc = 0;
        uint8_t zp = 0;
        kernels::quantize_row_w4_ref(v.data(), n, 32, spec.asym, codes, &sc, &zp);
        kernels::dequantize_row_w4_ref(codes, &sc, spec.asym ? &zp : nullptr, n, 32, dq.data());
      } else {
        std::vector<int8_t> q(v.size());
        float sc = 0;
        kernels::quantize_row_s8_ref(v.data(), n, q.data(), &sc);
        kernels::dequantize_row_s8_ref(q.data(), sc, n, dq.data());
      }
      double e_max = 0, e_best = 0;
      for (int64_t j = 0; j < n; ++j) {
        const double w = use_imp ? imp[j] : 1.0;
        e_max += w * std::pow(std::fabs(static_cast<double>(dq[j]) - v[j]), 2.4);
        const int lo = w4 ? 0 : -127, hi = w4 ? 15 : 127;
        const float q = std::clamp(std::round(v[j] / c.scale + static_cast<float>(c.zero_point)),
                                   static_cast<float>(lo), static_cast<float>(hi));
        e_best +=
            w * std::pow(std::fabs(static_cast<double>((q - static_cast<float>(c.zero_point)) * c.scale) - v[j]), 2.4);
      }
      EXPECT_NEAR(c.error_max, e_max, 1e-6 * (1 + e_max)) << scheme << " case " << t;
      EXPECT_NEAR(c.error_best, e_best, 1e-3 * (1 + e_best)) << scheme << " case " << t;
      EXPECT_LE(c.error_best, e_max * (1 + 1e-9)) << scheme << " case " << t;
      improved += c.error_best < 0.99 * e_max;
      ++cases;
    }
  }
  EXPECT_GT(improved, cases / 4) << "the search should pay off on groups with outliers";
}

TEST(Gptq, HessianAccumulatorMatchesDirectSum) {
  const int64_t in = 40, n = 70;
  const auto x = make_inputs(n, in, 1, 4);
  const Tensor h = hessian_of(x, n, in);
  for (int64_t i = 0; i < in; ++i)
    for (int64_t j = 0; j < in; ++j) {
      double s = 0;
      for (int64_t r = 0; r < n; ++r) s += static_cast<double>(x[r * in + i]) * x[r * in + j];
      s *= 2.0 / n;
      EXPECT_NEAR(h.data<float>()[i * in + j], s, 1e-4 * (1 + std::fabs(s)));
    }
}

TEST(Gptq, RejectsBadInputs) {
  const Tensor w = Tensor::from_f32(make_weights(8, 32, 1), {8, 32});
  const Tensor h16 = Tensor::zeros(DType::F32, {16, 16});
  EXPECT_THROW(gptq_quantize(w, nullptr, h16, parse_quant_spec("w4a16-g32")), Error);
  Tensor h = Tensor::zeros(DType::F32, {32, 32});
  for (int i = 0; i < 32; ++i) h.data<float>()[i * 33] = 1.f;
  EXPECT_THROW(gptq_quantize(w, nullptr, h, parse_quant_spec("bf16")), Error);
  try {
    gptq_quantize(w, nullptr, h16, parse_quant_spec("w8a16"));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[32, 32]"), std::string::npos) << e.what();
  }
}

// The block entry points compose to the model's forward (the engine path the parity tests hold to references).
TEST(GptqSequential, BlockApiEqualsForward) {
  for (const char* preset : {"llama-tiny", "gpt2-tiny"}) {
    const auto dir = testing::temp_dir(std::string("gptq_blocks_") + preset);
    synth_model(find_synth_preset(preset), dir, 3);
    auto model = load_model(dir);
    auto* dec = dynamic_cast<DecoderModel*>(model.get());
    ASSERT_NE(dec, nullptr);
    const std::vector<int32_t> toks = {1, 17, 250, 3, 999, 42, 7, 8, 600, 11};
    const int64_t n = static_cast<int64_t>(toks.size()), vocab = dec->config().vocab_size,
                  d = dec->config().hidden_size;
    std::vector<float> ref(static_cast<size_t>(n * vocab)), got(ref.size());
    KvCache c1 = dec->new_cache(n);
    dec->forward(c1, toks.data(), n, ref.data(), true);
    std::vector<float> h(static_cast<size_t>(n * d));
    KvCache c2 = dec->new_cache(n);
    dec->embed(toks.data(), n, 0, h.data());
    for (int b = 0; b < dec->num_blocks(); ++b) dec->run_block(b, c2, h.data(), n);
    dec->head(h.data(), n, got.data());
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_EQ(got[i], ref[i]) << preset << " logit " << i;
    EXPECT_EQ(dec->block_linears(0).size(), 4u);
  }
}

// The walk's block probe gives block b's output on the first sequences: what embed -> run_block 0..b computes here,
// bit for bit, for every group of every block, and it is bounded by max_rows (whole sequences, at least one).
TEST(GptqSequential, BlockProbeEqualsBlockApi) {
  const auto dir = testing::temp_dir("gptq_probe");
  synth_model(find_synth_preset("llama-tiny"), dir, 3);
  auto model = load_model(dir);
  auto* dec = dynamic_cast<DecoderModel*>(model.get());
  ASSERT_NE(dec, nullptr);
  CalibSet set;
  set.sequences = {{1, 17, 250, 3, 999, 42, 7}, {1, 8, 600, 11, 5}, {1, 2, 3}};
  const int64_t d = dec->config().hidden_size;
  // Expected: each sequence through the blocks one by one (block outputs per block, sequences concatenated).
  std::vector<std::vector<float>> expect(static_cast<size_t>(dec->num_blocks()));
  for (const auto& seq : set.sequences) {
    const int64_t n = static_cast<int64_t>(seq.size());
    std::vector<float> h(static_cast<size_t>(n * d));
    KvCache c = dec->new_cache(n);
    dec->embed(seq.data(), n, 0, h.data());
    for (int b = 0; b < dec->num_blocks(); ++b) {
      c.reset();
      dec->run_block(b, c, h.data(), n);
      expect[b].insert(expect[b].end(), h.begin(), h.end());
    }
  }
  int probes = 0;
  GroupVisitor visit;
  visit.capture = [](int, const std::vector<LinearSlot*>&) -> RowSink { return [](const float*, int64_t) {}; };
  visit.captured = [&](int block, const std::vector<LinearSlot*>&, const BlockProbe& probe) {
    if (block < 0) {
      EXPECT_FALSE(probe);
      return;
    }
    std::vector<float> all, first, one;
    probe(1000, &all);
    probe(12, &first);  // 7 + 5 tokens: the first two sequences
    probe(1, &one);     // never less than one sequence
    const auto& e = expect[block];
    ASSERT_EQ(all.size(), e.size());
    for (size_t i = 0; i < e.size(); ++i) ASSERT_EQ(all[i], e[i]) << "block " << block << " value " << i;
    EXPECT_EQ(first.size(), static_cast<size_t>(12 * d));
    EXPECT_EQ(one.size(), static_cast<size_t>(7 * d));
    ++probes;
  };
  walk_decoder_blocks(*dec, set, visit);
  EXPECT_EQ(probes, 4 * dec->num_blocks());
}

double logits_nmse(Model& cand, Model& base, const std::vector<int32_t>& toks) {
  auto& c = dynamic_cast<DecoderModel&>(cand);
  auto& b = dynamic_cast<DecoderModel&>(base);
  const int64_t n = static_cast<int64_t>(toks.size()), vocab = b.config().vocab_size;
  std::vector<float> yb(static_cast<size_t>(n * vocab)), yc(yb.size());
  KvCache kb = b.new_cache(n), kc = c.new_cache(n);
  b.forward(kb, toks.data(), n, yb.data(), true);
  c.forward(kc, toks.data(), n, yc.data(), true);
  return kernels::nmse(yc.data(), yb.data(), n * vocab);
}

// Whole-model GPTQ on a synthetic LLaMA: every block linear packed, the saved model loads and reproduces the
// in-memory logits, and the logits stay closer to fp32 than round-to-nearest's on text outside the calibration set.
TEST(GptqSequential, SynthLlamaBeatsRoundToNearest) {
  const auto dir = testing::temp_dir("gptq_seq");
  synth_model(find_synth_preset("llama-tiny"), dir / "base", 5);
  const auto text = testing::fixture("text/tinyshakespeare.txt");
  auto base = load_model(dir / "base");
  std::vector<int32_t> eval = base->require_tokenizer().encode(
      "ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.", true);
  eval.resize(std::min<size_t>(eval.size(), 64));

  QuantizeOptions opt;
  opt.scheme = parse_quant_spec("w4a16-g32");
  auto rtn = load_model(dir / "base");
  quantize_model(*rtn, opt);

  opt.method = QuantMethod::Gptq;
  opt.calib = text;
  opt.calib_samples = 16;
  opt.calib_seq_len = 64;
  auto gptq = load_model(dir / "base");
  const QuantizeReport rep = quantize_model(*gptq, opt);
  EXPECT_EQ(rep.gptq.layers.size(), 14u);  // 2 blocks x 7; lm_head skipped by default
  EXPECT_EQ(rep.gptq.blocks.size(), 2u);
  EXPECT_EQ(rep.gptq.calib_rows, 16 * 64);
  for (const auto& l : rep.layers) {
    if (l.name != "lm_head") {
      EXPECT_EQ(l.scheme, "w4a16-g32") << l.name;
    }
  }

  const double e_rtn = logits_nmse(*rtn, *base, eval), e_gptq = logits_nmse(*gptq, *base, eval);
  EXPECT_LT(e_gptq, e_rtn) << "gptq " << e_gptq << " rtn " << e_rtn;

  save_model(*gptq, dir / "q", {});
  auto loaded = load_model(dir / "q");
  EXPECT_EQ(logits_nmse(*loaded, *gptq, eval), 0.0);
}

// The per-block bookkeeping of both paths (decoder block walk with lm_head, encoder per-layer forwards): one report
// per block in order, each block's time covering its forward and GPTQ parts, and the peak RSS a high-water mark
// (never decreasing from block to block).
TEST(GptqSequential, BlockReportsAddUp) {
  for (const char* preset : {"llama-tiny", "bert-tiny"}) {
    const auto dir = testing::temp_dir(std::string("gptq_report_") + preset);
    synth_model(find_synth_preset(preset), dir, 7);
    auto model = load_model(dir);
    std::map<std::string, QuantSpec> plan;
    for (const auto& s : model->linears()) plan.emplace(s.name, parse_quant_spec("w4a16-g32"));
    const CalibSet set =
        read_calib_set(testing::fixture("text/tinyshakespeare.txt"), model->require_tokenizer(), 4, 32);
    const GptqReport rep = gptq_model(*model, set, plan, GptqOptions{});
    const int layers = model->config().num_layers;
    ASSERT_EQ(rep.blocks.size(), static_cast<size_t>(layers + 1)) << preset;  // + lm_head / pooler and classifier
    EXPECT_EQ(rep.layers.size(), plan.size()) << preset;
    size_t rss = 0;
    for (size_t i = 0; i < rep.blocks.size(); ++i) {
      const GptqBlockReport& b = rep.blocks[i];
      EXPECT_EQ(b.block, i + 1 < rep.blocks.size() ? static_cast<int>(i) : -1) << preset;
      EXPECT_GT(b.forward_ms, 0) << preset << " block " << b.block;
      EXPECT_GT(b.gptq_ms, 0) << preset << " block " << b.block;
      EXPECT_GE(b.time_ms, b.forward_ms + b.gptq_ms) << preset << " block " << b.block;
      EXPECT_GE(b.peak_rss_bytes, std::max<size_t>(rss, 1)) << preset << " block " << b.block;
      rss = b.peak_rss_bytes;
    }
    EXPECT_GE(rep.time_ms, rep.blocks.back().time_ms) << preset;
  }
}

TEST(GptqSequential, NeedsCalibration) {
  const auto dir = testing::temp_dir("gptq_nocalib");
  synth_model(find_synth_preset("llama-tiny"), dir, 5);
  auto model = load_model(dir);
  QuantizeOptions opt;
  opt.scheme = parse_quant_spec("w4a16-g32");
  opt.method = QuantMethod::Gptq;
  try {
    quantize_model(*model, opt);
    FAIL() << "no error without --calib";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--calib"), std::string::npos) << e.what();
  }
  for (const auto& s : model->linears()) EXPECT_EQ(s.impl->scheme(), "f32") << s.name;
}

}  // namespace
}  // namespace shrink
