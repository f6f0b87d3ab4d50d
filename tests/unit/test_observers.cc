// Observers: histogram binning and merging checked by hand and against a single pass, each observer on constructed
// distributions (Gaussian + outlier, uniform), MSE against brute-force quantization, KL against a transcription of
// NVIDIA pytorch-quantization's entropy calibrator run in numpy, and W8 weights with observer clipping.
#include <gtest/gtest.h>
#include <shrink/compress/calibration.h>
#include <shrink/compress/observers.h>
#include <shrink/core/error.h>
#include <shrink/kernels/quant.h>
#include <shrink/ops/qlinear.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

namespace shrink {
namespace {

std::vector<float> gaussian(size_t n, uint64_t seed, float sigma = 1.f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<float> uniform(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

ObserverOptions obs(const std::string& name) {
  ObserverOptions o;
  o.observer = name;
  return o;
}

TEST(Histogram, BinsByHand) {
  Histogram h(16);
  const float a[] = {0.3f, -0.3f, 0.9f, 0.f};
  h.add(a, 4);
  // max |x| = 0.9 < 1 = 2^0: range 1, width 1/16. 0.3 -> floor(4.8) = 4 -> index 20; -0.3 -> -5 -> 11; 0.9 -> 14
  // -> 30; 0 -> 16.
  EXPECT_EQ(h.range(), 1.f);
  std::vector<double> want(32, 0.0);
  want[20] = want[11] = want[30] = want[16] = 1;
  EXPECT_EQ(h.counts(), want);
  // 3.0 grows the range to 4 (width 1/4): 0.3 -> 1 -> 17, -0.3 -> -2 -> 14, 0.9 -> 3 -> 19, 0 -> 16, 3.0 -> 12 -> 28.
  const float b[] = {3.f};
  h.add(b, 1);
  EXPECT_EQ(h.range(), 4.f);
  std::fill(want.begin(), want.end(), 0.0);
  want[17] = want[14] = want[19] = want[16] = want[28] = 1;
  EXPECT_EQ(h.counts(), want);
  EXPECT_EQ(h.total(), 5);
  EXPECT_EQ(h.min(), -0.3f);
  EXPECT_EQ(h.max(), 3.f);
  // |x| folded: 0.3 and -0.3 both land in [0.25, 0.5) = abs bin 1.
  const auto abs = h.abs_counts();
  EXPECT_EQ(abs[1], 2);
  EXPECT_EQ(abs[0], 1);
  EXPECT_EQ(abs[3], 1);
  EXPECT_EQ(abs[12], 1);
}

TEST(Histogram, MergeEqualsOnePassOverTheUnion) {
  // Three batches whose ranges grow (and one that shrinks), including zeros-only and non-finite values.
  std::vector<std::vector<float>> batches = {std::vector<float>(100, 0.f),
                                             gaussian(5000, 1, 0.01f),
                                             gaussian(7000, 2, 1.f),
                                             gaussian(3000, 3, 0.2f),
                                             {37.5f, -0.001f}};
  batches[2].push_back(std::numeric_limits<float>::quiet_NaN());
  std::vector<float> all;
  for (auto& b : batches) all.insert(all.end(), b.begin(), b.end());
  Histogram one(2048);
  one.add(all.data(), static_cast<int64_t>(all.size()));

  Histogram streamed(2048);  // one histogram fed batch by batch
  Histogram merged(2048);    // one histogram per batch, merged (in reverse order)
  for (auto& b : batches) streamed.add(b.data(), static_cast<int64_t>(b.size()));
  for (size_t i = batches.size(); i-- > 0;) {
    Histogram part(2048);
    part.add(batches[i].data(), static_cast<int64_t>(batches[i].size()));
    merged.merge(part);
  }
  for (const Histogram* h : {&streamed, &merged}) {
    EXPECT_EQ(h->range(), one.range());
    EXPECT_EQ(h->counts(), one.counts());
    EXPECT_EQ(h->total(), one.total());
    EXPECT_EQ(h->min(), one.min());
    EXPECT_EQ(h->max(), one.max());
    EXPECT_EQ(h->nonfinite(), 1);
  }
  EXPECT_EQ(one.total(), static_cast<double>(all.size() - 1));
  EXPECT_EQ(one.range(), 64.f);  // 37.5 < 2^6
  // Values up to FLT_MAX stay finite: the range stops at 2^127 and the largest values share the top bin.
  Histogram big(16);
  const float huge[] = {std::numeric_limits<float>::max(), -1.f};
  big.add(huge, 2);
  EXPECT_EQ(big.range(), std::ldexp(1.f, 127));
  EXPECT_EQ(big.counts()[31], 1);
  EXPECT_EQ(big.max(), std::numeric_limits<float>::max());
  EXPECT_THROW(one.merge(Histogram(1024)), Error);
}

TEST(Observers, GaussianWithOneOutlier) {
  // 1M N(0, 1) values and one at 40: min-max keeps it; percentile and KL clip it near the bulk (max |x| of the
  // Gaussian part is ~5); MSE clips it where the outlier's squared error balances the rounding noise of 1M values
  // (asymmetric, by hand: t = 15 costs (40-15)^2 + 1e6 (20/255)^2/12 = 1138 < 1353 at t = 5 < 2595 at t = 40).
  std::vector<float> v = gaussian(1000000, 11);
  v.push_back(40.f);
  Histogram h;
  h.add(v.data(), static_cast<int64_t>(v.size()));
  const float lo = *std::min_element(v.begin(), v.end());
  for (bool symmetric : {false, true}) {
    SCOPED_TRACE(symmetric ? "symmetric" : "asymmetric");
    const ClipRange mm = observe_range(h, obs("minmax"), symmetric);
    EXPECT_EQ(mm.hi, 40.f);
    EXPECT_EQ(mm.lo, symmetric ? -40.f : lo);
    for (const char* name : {"percentile", "mse", "kl"}) {
      SCOPED_TRACE(name);
      const ClipRange r = observe_range(h, obs(name), symmetric);
      EXPECT_GT(r.hi, 2.5f);
      EXPECT_LT(r.hi, std::string(name) == "mse" ? 20.f : 8.f);
      EXPECT_LT(r.lo, -2.5f);
      EXPECT_GE(r.lo, symmetric ? -8.f : lo);
    }
  }
  // Percentile 99.99 cuts 0.005% per tail: the N(0,1) quantile 1 - 5e-5 is 3.89 (tables).
  const ClipRange p = observe_range(h, obs("percentile"), false);
  EXPECT_NEAR(p.hi, 3.89f, 0.08f);
  EXPECT_NEAR(p.lo, -3.89f, 0.08f);
}

TEST(Observers, UniformDataKeepsTheFullRange) {
  const std::vector<float> v = uniform(1000000, 5, -2.f, 3.f);
  Histogram h;
  h.add(v.data(), static_cast<int64_t>(v.size()));
  for (const char* name : {"minmax", "percentile", "mse", "kl"}) {
    SCOPED_TRACE(name);
    const ClipRange a = observe_range(h, obs(name), false);
    EXPECT_GT(a.hi, 0.97f * 3.f);
    EXPECT_LE(a.hi, 3.f);
    EXPECT_LT(a.lo, 0.97f * -2.f);
    EXPECT_GE(a.lo, -2.f);
    const ClipRange s = observe_range(h, obs(name), true);
    EXPECT_GT(s.hi, 0.97f * 3.f);
    EXPECT_LE(s.hi, 3.f);
  }
}

TEST(Observers, PercentileOfAbsMatchesSortedQuantile) {
  std::vector<float> v = gaussian(200000, 3, 2.f);
  Histogram h;
  h.add(v.data(), static_cast<int64_t>(v.size()));
  ObserverOptions o = obs("percentile");
  o.percentile = 99.0;
  std::vector<float> a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = std::fabs(v[i]);
  std::sort(a.begin(), a.end());
  const float want = a[static_cast<size_t>(0.99 * static_cast<double>(a.size()))];
  EXPECT_NEAR(observe_range(h, o, true).hi, want, 2 * h.bin_width());
}

// The data's real mean squared u8 quantization error over [lo, hi] (choose_u8_params + the reference quantizer).
double u8_mse(const std::vector<float>& v, float lo, float hi) {
  float scale = 0;
  int32_t zp = 0;
  kernels::choose_u8_params(lo, hi, &scale, &zp);
  std::vector<uint8_t> q(v.size());
  kernels::quantize_row_u8_ref(v.data(), static_cast<int64_t>(v.size()), scale, zp, q.data());
  double e = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    const double d = (static_cast<double>(q[i]) - zp) * scale - v[i];
    e += d * d;
  }
  return e / static_cast<double>(v.size());
}

TEST(Observers, MseRangeIsNearTheBruteForceBest) {
  // Skewed data (a Laplace-like tail on the right): brute force over a grid of clip ranges of the real error.
  std::vector<float> v = gaussian(200000, 9, 0.5f);
  std::mt19937_64 rng(4);
  std::exponential_distribution<float> ex(1.f);
  for (int i = 0; i < 20000; ++i) v.push_back(ex(rng) * 2.f);
  Histogram h;
  h.add(v.data(), static_cast<int64_t>(v.size()));
  const ClipRange r = observe_range(h, obs("mse"), false);
  double best = std::numeric_limits<double>::infinity();
  for (int a = 1; a <= 40; ++a)
    for (int b = 1; b <= 90; ++b)
      best = std::min(best, u8_mse(v, std::max(h.min(), -0.1f * a), std::min(h.max(), 0.25f * b)));
  const double got = u8_mse(v, r.lo, r.hi);
  EXPECT_LT(got, 1.1 * best);
  EXPECT_LT(got, u8_mse(v, h.min(), h.max()));  // and better than min-max on this tail
}

TEST(Observers, KlThresholdMatchesPytorchQuantizationTranscription) {
  // Expected values: NVIDIA pytorch-quantization's _compute_amax_entropy (stride 1) transcribed to numpy, on the
  // same histograms (a hand-made one, and |N(0,1)| over 512 bins of 8/512 from erf, with and without 3 outliers).
  const std::vector<double> h1 = {5, 9, 7, 6, 4, 4, 3, 2, 2, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1};
  EXPECT_EQ(kl_threshold_bins(h1, 4), 16);
  std::vector<double> h5(512);
  const double w = 8.0 / 512;
  for (int j = 0; j < 512; ++j)
    h5[static_cast<size_t>(j)] =
        std::floor(1e6 * (std::erf((j + 1) * w / std::sqrt(2.0)) - std::erf(j * w / std::sqrt(2.0))) + 0.5);
  EXPECT_EQ(kl_threshold_bins(h5, 128), 287);
  h5[400] += 3;
  EXPECT_EQ(kl_threshold_bins(h5, 128), 288);
  // Fewer bins than levels: nothing to clip.
  EXPECT_EQ(kl_threshold_bins({1, 2, 3}, 128), 3);
}

TEST(Observers, Errors) {
  Histogram h;
  const float x[] = {1.f, -1.f};
  h.add(x, 2);
  EXPECT_THROW(observe_range(h, obs("auto"), false), Error);
  try {
    observe_range(h, obs("entropy"), false);
    FAIL() << "no error for an unknown observer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'entropy'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("minmax, percentile, mse, kl, auto"), std::string::npos) << e.what();
  }
  ObserverOptions o = obs("percentile");
  o.percentile = 0;
  EXPECT_THROW(observe_range(h, o, false), Error);
  EXPECT_THROW(Histogram(7), Error);
  const ClipRange empty = observe_range(Histogram(), obs("mse"), false);
  EXPECT_EQ(empty.lo, 0.f);
  EXPECT_EQ(empty.hi, 0.f);
}

TEST(Observers, PerChannelMinMaxByHand) {
  ChannelMinMax c;
  const float a[] = {1, -2, 3, -4, 5, 0};  // 2 rows x 3 channels
  c.add(a, 2, 3);
  const float b[] = {0, 9, -7};
  c.add(b, 1, 3);
  EXPECT_EQ(c.lo, (std::vector<float>{-4, -2, -7}));
  EXPECT_EQ(c.hi, (std::vector<float>{1, 9, 3}));
}

// Squared error of dequantized W8 rows against the source.
double w8_error_row(const PackedLinear& p, const std::vector<float>& w, int64_t r) {
  const int8_t* q = p.find("weight")->data<int8_t>() + r * p.in;
  const float s = p.find("weight_scale")->data<float>()[r];
  double e = 0;
  for (int64_t k = 0; k < p.in; ++k) {
    const double d = static_cast<double>(q[k]) * s - w[static_cast<size_t>(r * p.in + k)];
    e += d * d;
  }
  return e;
}

TEST(WeightObserver, PerTensorMinMaxByHand) {
  const int64_t out = 3, in = 5;
  std::vector<float> w = {0.1f, -0.2f, 0.3f, 0.f, 0.05f, 1.27f, -0.5f, 0.f, 0.f, 0.f, -0.01f, 0.02f, 0.f, 0.f, 0.f};
  QuantSpec spec;
  spec.scheme = WeightScheme::W8A16;
  ObserverOptions o = obs("minmax");
  o.per_channel = false;
  PackedLinear p = quantize_w8_with_observer(Tensor::from_f32(w, {out, in}), nullptr, spec, o);
  p.validate("test layer");
  // One scale for all rows: max |w| / 127 = 0.01; codes = round(w / 0.01).
  for (int64_t r = 0; r < out; ++r) EXPECT_FLOAT_EQ(p.find("weight_scale")->data<float>()[r], 0.01f);
  const std::vector<int8_t> want = {10, -20, 30, 0, 5, 127, -50, 0, 0, 0, -1, 2, 0, 0, 0};
  const int8_t* q = p.find("weight")->data<int8_t>();
  EXPECT_EQ(std::vector<int8_t>(q, q + out * in), want);
}

TEST(WeightObserver, PerChannelObserversAndAutoIsNeverWorseThanRtn) {
  // Laplace rows (heavy tails). For 8-bit weights clipping rarely pays (the few clipped values cost more than the
  // finer step saves), so MSE keeps about the full range, percentile clips by its definition, and auto (lowest
  // real error per row, min-max among the candidates) is never worse than RTN.
  const int64_t out = 24, in = 512;
  std::mt19937_64 rng(21);
  std::exponential_distribution<float> ex(1.f / 0.02f);
  std::vector<float> w(static_cast<size_t>(out * in));
  for (size_t i = 0; i < w.size(); ++i) w[i] = (rng() & 1 ? 1.f : -1.f) * ex(rng);
  const Tensor wt = Tensor::from_f32(w, {out, in});
  QuantSpec spec;
  spec.scheme = WeightScheme::W8A8;
  const PackedLinear rtn = quantize_linear_weights(wt, nullptr, spec);
  auto with = [&](const char* name) {
    ObserverOptions o = obs(name);
    o.per_channel = true;
    o.percentile = 99.0;
    return quantize_w8_with_observer(wt, nullptr, spec, o);
  };
  const PackedLinear mse = with("mse"), au = with("auto"), mm = with("minmax"), pc = with("percentile");
  double e_rtn = 0, e_mse = 0;
  for (int64_t r = 0; r < out; ++r) {
    SCOPED_TRACE(r);
    e_rtn += w8_error_row(rtn, w, r);
    e_mse += w8_error_row(mse, w, r);
    EXPECT_LE(w8_error_row(au, w, r), w8_error_row(rtn, w, r));
    EXPECT_EQ(w8_error_row(mm, w, r), w8_error_row(rtn, w, r));
    // Percentile 99 of |w| in the row, from sorting (within two bins of the 512-bin row histogram).
    std::vector<float> a(static_cast<size_t>(in));
    float amax = 0;
    for (int64_t k = 0; k < in; ++k) a[static_cast<size_t>(k)] = std::fabs(w[static_cast<size_t>(r * in + k)]);
    std::sort(a.begin(), a.end());
    amax = a.back();
    const float want = a[static_cast<size_t>(0.99 * in)];
    const float range = std::ldexp(1.f, std::ilogb(amax) + 1);  // the histogram's power-of-two range
    EXPECT_NEAR(pc.find("weight_scale")->data<float>()[r] * 127.f, want, 2 * range / 512);
  }
  EXPECT_LE(e_mse, 1.02 * e_rtn);
  QuantSpec bad;
  bad.scheme = WeightScheme::W4A16;
  bad.group = 32;
  EXPECT_THROW(quantize_w8_with_observer(wt, nullptr, bad, obs("mse")), Error);
}

}  // namespace
}  // namespace shrink
