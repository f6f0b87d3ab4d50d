// SmoothQuant: the scale formula on a hand-computed 2x3 case, lower W8A8-static output error than plain W8A8 on a
// layer with outlier input channels (measured with the packed static W8A8 kernels), exact folding on synth models,
// and the whole pass on stories260K.
#include <gtest/gtest.h>
#include <shrink/compress/quantize.h>
#include <shrink/compress/smoothquant.h>
#include <shrink/core/error.h>
#include <shrink/kernels/quant.h>
#include <shrink/models/synth.h>
#include <shrink/ops/qlinear.h>

#include <cmath>
#include <random>
#include <vector>

#include "unit/test_util.h"

namespace shrink {
namespace {

// act max |X_j| = (4, 1, 9); W = [[1, -2, 0.5], [-4, 1, 0.25]] so max |W_j| = (4, 2, 0.5).
// alpha 0.5: s = (sqrt(4)/sqrt(4), sqrt(1)/sqrt(2), sqrt(9)/sqrt(0.5)) = (1, 0.70710678, 4.24264069);
// alpha 1: s = act max; alpha 0: s = 1 / max |W_j| = (0.25, 0.5, 2).
TEST(SmoothQuant, ScaleFormulaHandComputed) {
  const Tensor w = Tensor::from_f32({1.f, -2.f, 0.5f, -4.f, 1.f, 0.25f}, {2, 3});
  const std::vector<float> act = {4.f, 1.f, 9.f};
  const std::vector<float> half = smoothquant_scales(act, {&w}, 0.5);
  ASSERT_EQ(half.size(), 3u);
  EXPECT_NEAR(half[0], 1.0, 1e-6);
  EXPECT_NEAR(half[1], 0.70710678, 1e-6);
  EXPECT_NEAR(half[2], 4.24264069, 1e-5);
  const std::vector<float> one = smoothquant_scales(act, {&w}, 1.0);
  EXPECT_NEAR(one[0], 4.0, 1e-6);
  EXPECT_NEAR(one[2], 9.0, 1e-6);
  const std::vector<float> zero = smoothquant_scales(act, {&w}, 0.0);
  EXPECT_NEAR(zero[0], 0.25, 1e-7);
  EXPECT_NEAR(zero[1], 0.5, 1e-7);
  EXPECT_NEAR(zero[2], 2.0, 1e-7);
  // Two weights: the column max is over both.
  const Tensor w2 = Tensor::from_f32({8.f, 0.f, 0.f}, {1, 3});
  EXPECT_NEAR(smoothquant_scales(act, {&w, &w2}, 0.5)[0], std::sqrt(4.0) / std::sqrt(8.0), 1e-6);
  EXPECT_THROW(smoothquant_scales(act, {&w}, 1.5), Error);
}

constexpr int64_t kRows = 512, kIn = 128, kOut = 64;

// sum ||y - y_ref||^2 of a static W8A8 packed Linear (weights w, input x, range = x's min/max) against fp32.
double static_w8a8_error(const Tensor& w, const std::vector<float>& x, const std::vector<float>& y_ref) {
  QuantSpec spec = parse_quant_spec("w8a8-static");
  const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
  kernels::choose_u8_params(*lo, *hi, &spec.act_scale, &spec.act_zero_point);
  std::vector<float> y(y_ref.size());
  make_quantized_linear(w, nullptr, spec)->forward(x.data(), kRows, y.data());
  double e = 0;
  for (size_t i = 0; i < y.size(); ++i) e += (static_cast<double>(y[i]) - y_ref[i]) * (y[i] - y_ref[i]);
  return e;
}

TEST(SmoothQuant, BeatsPlainW8A8OnOutlierChannels) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f), wd(0.f, 0.05f);
  std::vector<float> x(static_cast<size_t>(kRows * kIn)), wv(static_cast<size_t>(kOut * kIn));
  for (int64_t r = 0; r < kRows; ++r)
    for (int64_t c = 0; c < kIn; ++c) x[r * kIn + c] = nd(rng) * ((c == 5 || c == 40 || c == 97) ? 100.f : 1.f);
  for (auto& v : wv) v = wd(rng);
  const Tensor w = Tensor::from_f32(wv, {kOut, kIn});
  std::vector<float> y_ref(static_cast<size_t>(kRows * kOut));
  make_dense_linear(w)->forward(x.data(), kRows, y_ref.data());
  const double plain = static_w8a8_error(w, x, y_ref);

  std::vector<float> act_max(static_cast<size_t>(kIn), 0.f);
  for (int64_t r = 0; r < kRows; ++r)
    for (int64_t c = 0; c < kIn; ++c) act_max[c] = std::max(act_max[c], std::fabs(x[r * kIn + c]));
  const std::vector<float> s = smoothquant_scales(act_max, {&w}, 0.5);
  const testing::ScaledLinear sc = testing::scale_channels(w, x, s);
  const double smooth = static_w8a8_error(sc.w, sc.x, y_ref);
  EXPECT_LT(smooth, 0.5 * plain) << "smoothed " << smooth << " plain " << plain;

  // The search's error estimate ranks the two the same way.
  const std::vector<float> ones(static_cast<size_t>(kIn), 1.f);
  EXPECT_LT(w8a8_output_error(x.data(), kRows, {&w}, s, true), w8a8_output_error(x.data(), kRows, {&w}, ones, true));
}

// Folding the smoothing scales into norms and preceding linears leaves the fp32 model's function unchanged, with a
// fixed alpha and with the per-group search (which never picks a scale that raises its own error estimate).
TEST(SmoothQuant, FoldingKeepsFp32Outputs) {
  const auto calib = testing::calib_file("sq_calib", 60000);
  for (const bool automatic : {false, true})
    testing::expect_folding_keeps_outputs(
        "w8a8-static", 13, [&](const std::string& preset, Model& model, const auto& plan) {
          SmoothQuantOptions opt;
          opt.auto_alpha = automatic;
          SmoothQuantReport rep;
          const TensorMap edits =
              smoothquant_search(model, read_calib_set(calib, model.require_tokenizer(), 8, 64), plan, opt, &rep);
          EXPECT_FALSE(edits.empty()) << preset;
          EXPECT_EQ(rep.groups.size(), static_cast<size_t>(4 * model.config().num_layers)) << preset;
          for (const auto& g : rep.groups) {
            if (automatic) {
              EXPECT_LE(g.error_smoothed, g.error_plain) << preset << " " << g.first;
            }
          }
          return rebuild_model(model, edits);
        });
}

// stories260K, W8A8 static: SmoothQuant (alpha auto) is no worse than plain static W8A8 in KLD on held-out text.
TEST(SmoothQuant, Stories260kStatic) {
  const testing::Stories260k s = testing::stories260k("sq_260k");
  QuantizeOptions opt;
  opt.scheme = parse_quant_spec("w8a8-static");
  opt.method = QuantMethod::Static;
  opt.calib = s.calib;
  opt.calib_samples = 32;
  auto base = s.load(), plain = s.load(), smooth = s.load();
  quantize_model(plain, opt);
  opt.method = QuantMethod::SmoothQuant;
  opt.smooth.auto_alpha = true;
  const QuantizeReport rep = quantize_model(smooth, opt);
  EXPECT_EQ(rep.smooth.groups.size(), 20u);
  testing::expect_schemes(rep, "w8a8-static");
  const double k_plain = testing::kld_on(*base, *plain, s.held_out),
               k_smooth = testing::kld_on(*base, *smooth, s.held_out);
  EXPECT_LE(k_smooth, 1.05 * k_plain) << "smoothquant " << k_smooth << " plain " << k_plain;
}

TEST(SmoothQuant, NeedsW8A8) {
  const auto dir = testing::temp_dir("sq_errors");
  synth_model(find_synth_preset("llama-tiny"), dir, 5);
  auto model = load_model(dir);
  const auto calib = testing::calib_file("sq_err_calib", 20000);
  QuantizeOptions opt;
  opt.scheme = parse_quant_spec("w4a16-g32");
  opt.method = QuantMethod::SmoothQuant;
  opt.calib = calib;
  try {
    quantize_model(model, opt);
    FAIL() << "no error for a W4 scheme";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("w8a8"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace shrink
