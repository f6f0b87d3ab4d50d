// Range observers (include/shrink/compress/observers.h): the mergeable power-of-two histogram, and min-max,
// percentile, MSE and TensorRT-style KL-entropy clipping ranges computed from it.
#include <shrink/compress/observers.h>
#include <shrink/core/error.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace shrink {

const std::vector<std::string>& observer_names() {
  static const std::vector<std::string> kNames = {"minmax", "percentile", "mse", "kl"};
  return kNames;
}

void check_observer_name(const std::string& name) {
  if (name == "auto") return;
  for (const auto& n : observer_names())
    if (n == name) return;
  fail("observer '{}' is unknown; valid observers: minmax, percentile, mse, kl, auto", name);
}

// ---- Histogram ----

Histogram::Histogram(int bins) : bins_(bins) {
  check(bins >= 16 && bins <= (1 << 20) && bins % 2 == 0,
        "histogram: {} bins per sign; expected an even number from 16 to 1048576", bins);
  counts_.assign(static_cast<size_t>(2 * bins_), 0.0);
}

void Histogram::grow_to(float range) {
  if (range_ == 0.f) {  // only zeros so far: they sit in bin bins_ whatever the range
    range_ = range;
    return;
  }
  // Doubling the range halves the resolution: bin k (offset from -bins) becomes floor(k / 2), exactly the bin a
  // value lands in when binned at the doubled range from the start (the scale factor is a power of two).
  while (range_ < range) {
    std::vector<double> next(counts_.size(), 0.0);
    for (int i = 0; i < 2 * bins_; ++i) {
      const int k = i - bins_;
      next[static_cast<size_t>((k >> 1) + bins_)] += counts_[static_cast<size_t>(i)];
    }
    counts_.swap(next);
    range_ *= 2.f;
  }
}

void Histogram::add(const float* x, int64_t n) {
  float lo = std::numeric_limits<float>::infinity(), hi = -lo, amax = 0.f;
  int64_t finite = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (!std::isfinite(v)) {
      ++nonfinite_;
      continue;
    }
    ++finite;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    amax = std::max(amax, std::fabs(v));
  }
  if (finite == 0) return;
  min_ = seen_ ? std::min(min_, lo) : lo;
  max_ = seen_ ? std::max(max_, hi) : hi;
  seen_ = true;
  total_ += static_cast<double>(finite);
  if (amax > 0.f) {
    int e = 0;
    std::frexp(amax, &e);  // amax < 2^e; values above 2^127 (near FLT_MAX) share the top bin
    const float need = std::ldexp(1.f, std::min(e, 127));
    if (need > range_) grow_to(need);
  }
  if (range_ == 0.f) {  // all zeros so far
    counts_[static_cast<size_t>(bins_)] += static_cast<double>(finite);
    return;
  }
  const float inv = static_cast<float>(bins_) / range_;  // bins_ * 2^-e: exact
  const int64_t top = 2 * static_cast<int64_t>(bins_) - 1;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (!std::isfinite(v)) continue;
    const int64_t idx = static_cast<int64_t>(std::floor(v * inv)) + bins_;
    counts_[static_cast<size_t>(std::clamp<int64_t>(idx, 0, top))] += 1.0;
  }
}

void Histogram::merge(const Histogram& other) {
  check(other.bins_ == bins_, "histogram merge: {} bins per sign vs {}; histograms must have the same bin count",
        other.bins_, bins_);
  nonfinite_ += other.nonfinite_;
  if (!other.seen_) return;
  Histogram o = other;
  const float range = std::max(range_, o.range_);
  if (range > 0.f) {
    if (range_ < range) grow_to(range);
    if (o.range_ < range) o.grow_to(range);
  }
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += o.counts_[i];
  total_ += o.total_;
  min_ = seen_ ? std::min(min_, o.min_) : o.min_;
  max_ = seen_ ? std::max(max_, o.max_) : o.max_;
  seen_ = true;
}

std::vector<double> Histogram::abs_counts() const {
  std::vector<double> a(static_cast<size_t>(bins_));
  for (int k = 0; k < bins_; ++k)
    a[static_cast<size_t>(k)] = counts_[static_cast<size_t>(bins_ + k)] + counts_[static_cast<size_t>(bins_ - 1 - k)];
  return a;
}

void ChannelMinMax::add(const float* x, int64_t rows, int64_t channels) {
  if (lo.empty()) {
    lo.assign(static_cast<size_t>(channels), std::numeric_limits<float>::infinity());
    hi.assign(static_cast<size_t>(channels), -std::numeric_limits<float>::infinity());
  }
  check(static_cast<int64_t>(lo.size()) == channels, "per-channel observer: {} channels, then {}", lo.size(), channels);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < channels; ++c) {
      const float v = x[r * channels + c];
      if (!std::isfinite(v)) continue;
      lo[static_cast<size_t>(c)] = std::min(lo[static_cast<size_t>(c)], v);
      hi[static_cast<size_t>(c)] = std::max(hi[static_cast<size_t>(c)], v);
    }
}

// ---- observers ----

namespace {

// Value below which `frac` of the counts lie, linear inside the bin (counts over `n` bins of `width` from `origin`).
double quantile(const std::vector<double>& c, double origin, double width, double total, double frac) {
  const double target = frac * total;
  double cum = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    if (c[i] > 0 && cum + c[i] >= target) {
      const double f = std::clamp((target - cum) / c[i], 0.0, 1.0);
      return origin + (static_cast<double>(i) + f) * width;
    }
    cum += c[i];
  }
  return origin + static_cast<double>(c.size()) * width;
}

// Symmetric MSE: the threshold t = k * width (k in 1..bins) minimizing rounding noise (t/127)^2/12 per value
// inside plus the squared clipping distance of the values outside (bin centres).
double mse_symmetric(const std::vector<double>& a, double width, double amax) {
  const size_t n = a.size();
  // Suffix sums over bins j >= k of count, count*centre, count*centre^2.
  std::vector<double> s0(n + 1, 0), s1(n + 1, 0), s2(n + 1, 0);
  for (size_t j = n; j-- > 0;) {
    const double c = (static_cast<double>(j) + 0.5) * width;
    s0[j] = s0[j + 1] + a[j];
    s1[j] = s1[j + 1] + a[j] * c;
    s2[j] = s2[j + 1] + a[j] * c * c;
  }
  const double total = s0[0];
  const size_t kmax = std::min(n, static_cast<size_t>(std::ceil(amax / width)));
  double best = std::numeric_limits<double>::infinity();
  size_t best_k = kmax;
  for (size_t k = 1; k <= kmax; ++k) {
    const double t = static_cast<double>(k) * width, step = t / 127.0;
    const double clip = s2[k] - 2 * t * s1[k] + t * t * s0[k];
    const double err = (total - s0[k]) * step * step / 12.0 + clip;
    if (err <= best) best = err, best_k = k;  // ties: the wider range
  }
  return std::min(static_cast<double>(best_k) * width, amax);
}

// Asymmetric MSE over pairs of bin edges lo = -a * width <= 0 <= hi = b * width with 255 levels over [lo, hi].
void mse_asymmetric(const Histogram& h, double* lo_out, double* hi_out) {
  const int bins = h.bins();
  const double w = h.bin_width();
  const auto& c = h.counts();
  const double total = h.total();
  const int amax_lo = std::clamp(static_cast<int>(std::ceil(-std::min(0.f, h.min()) / w)), 0, bins);
  const int amax_hi = std::clamp(static_cast<int>(std::ceil(std::max(0.f, h.max()) / w)), 0, bins);
  // Below lo = -a*w: bins with index offset k < -a (centre (k + 0.5) w); above hi = b*w: k >= b.
  std::vector<double> e_lo(static_cast<size_t>(amax_lo) + 1, 0), n_lo(static_cast<size_t>(amax_lo) + 1, 0);
  std::vector<double> e_hi(static_cast<size_t>(amax_hi) + 1, 0), n_hi(static_cast<size_t>(amax_hi) + 1, 0);
  for (int a = 0; a <= amax_lo; ++a) {
    const double lo = -a * w;
    double e = 0, cnt = 0;
    for (int k = -bins; k < -a; ++k) {
      const double n = c[static_cast<size_t>(k + bins)];
      if (n == 0) continue;
      const double d = (k + 0.5) * w - lo;
      e += n * d * d, cnt += n;
    }
    e_lo[static_cast<size_t>(a)] = e, n_lo[static_cast<size_t>(a)] = cnt;
  }
  for (int b = 0; b <= amax_hi; ++b) {
    const double hi = b * w;
    double e = 0, cnt = 0;
    for (int k = b; k < bins; ++k) {
      const double n = c[static_cast<size_t>(k + bins)];
      if (n == 0) continue;
      const double d = (k + 0.5) * w - hi;
      e += n * d * d, cnt += n;
    }
    e_hi[static_cast<size_t>(b)] = e, n_hi[static_cast<size_t>(b)] = cnt;
  }
  double best = std::numeric_limits<double>::infinity();
  int best_a = amax_lo, best_b = amax_hi;
  const double k12 = w * w / (12.0 * 255.0 * 255.0);
  for (int a = amax_lo; a >= 0; --a)
    for (int b = amax_hi; b >= 0; --b) {
      if (a + b == 0) continue;
      const double inside = total - n_lo[static_cast<size_t>(a)] - n_hi[static_cast<size_t>(b)];
      const double err = e_lo[static_cast<size_t>(a)] + e_hi[static_cast<size_t>(b)] +
                         inside * static_cast<double>((a + b) * (a + b)) * k12;
      if (err < best) best = err, best_a = a, best_b = b;  // first found = widest on ties
    }
  *lo_out = std::max<double>(-best_a * w, h.min());
  *hi_out = std::min<double>(best_b * w, h.max());
}

double kl_symmetric(const Histogram& h, int quantized_bins) {
  std::vector<double> a = h.abs_counts();
  const double amax = std::max(std::fabs(h.min()), std::fabs(h.max()));
  size_t n = a.size();
  while (n > 0 && a[n - 1] == 0) --n;
  if (n <= static_cast<size_t>(quantized_bins)) return amax;  // fits the levels: nothing to clip
  a.resize(n);
  const int i = kl_threshold_bins(a, quantized_bins);
  return std::min<double>(i * static_cast<double>(h.bin_width()), amax);
}

}  // namespace

int kl_threshold_bins(const std::vector<double>& abs_counts, int quantized_bins) {
  const int n = static_cast<int>(abs_counts.size());
  check(quantized_bins >= 2, "KL calibration: {} quantized bins; expected at least 2", quantized_bins);
  if (n <= quantized_bins) return n;
  // As TensorRT / NVIDIA pytorch-quantization's entropy calibrator: the zero bin is flattened to its neighbour
  // (so ReLU zeros do not dominate), P = the first i bins with the outliers folded into the last one, Q = P's
  // first i bins merged into quantized_bins groups and expanded back over the non-empty bins of each group.
  std::vector<double> bins = abs_counts;
  bins[0] = bins[1];
  std::vector<double> suffix(static_cast<size_t>(n) + 1, 0);
  for (int j = n; j-- > 0;)
    suffix[static_cast<size_t>(j)] = suffix[static_cast<size_t>(j) + 1] + bins[static_cast<size_t>(j)];
  std::vector<double> group_sum(static_cast<size_t>(quantized_bins)),
      group_nonzero(static_cast<size_t>(quantized_bins));
  std::vector<int> group_of(static_cast<size_t>(n));
  double best = std::numeric_limits<double>::infinity();
  int best_i = n;
  for (int i = quantized_bins; i <= n; ++i) {
    std::fill(group_sum.begin(), group_sum.end(), 0.0);
    std::fill(group_nonzero.begin(), group_nonzero.end(), 0.0);
    for (int j = 0; j < i; ++j) {
      const int g = static_cast<int>(static_cast<int64_t>(j) * quantized_bins / i);
      group_of[static_cast<size_t>(j)] = g;
      if (bins[static_cast<size_t>(j)] != 0) {
        group_sum[static_cast<size_t>(g)] += bins[static_cast<size_t>(j)];
        group_nonzero[static_cast<size_t>(g)] += 1;
      }
    }
    double q_total = 0;
    for (int g = 0; g < quantized_bins; ++g) q_total += group_sum[static_cast<size_t>(g)];
    const double p_total = suffix[0];
    if (q_total == 0 || p_total == 0) continue;
    double kl = 0;
    for (int j = 0; j < i; ++j) {
      double p = bins[static_cast<size_t>(j)];
      if (j == i - 1) p += suffix[static_cast<size_t>(i)];
      if (p == 0) continue;
      const int g = group_of[static_cast<size_t>(j)];
      const double q = bins[static_cast<size_t>(j)] != 0
                           ? group_sum[static_cast<size_t>(g)] / group_nonzero[static_cast<size_t>(g)]
                           : 0.0;
      if (q == 0) {
        kl = std::numeric_limits<double>::infinity();
        break;
      }
      const double pn = p / p_total, qn = q / q_total;
      kl += pn * std::log(pn / qn);
    }
    if (kl <= best) best = kl, best_i = i;  // the last minimum, as pytorch-quantization's last_argmin
  }
  return best_i;
}

ClipRange observe_range(const Histogram& h, const ObserverOptions& opt, bool symmetric) {
  const std::string& name = opt.observer;
  check_observer_name(name);
  check(name != "auto", "observe_range: 'auto' picks an observer per layer; pass one of minmax, percentile, mse, kl");
  if (h.total() == 0) return {};
  const double amax = std::max(std::fabs(h.min()), std::fabs(h.max()));
  const double w = h.bin_width();
  auto sym = [](double t) { return ClipRange{static_cast<float>(-t), static_cast<float>(t)}; };
  auto clamp_data = [&](double lo, double hi) {
    return ClipRange{static_cast<float>(std::max<double>(lo, h.min())),
                     static_cast<float>(std::min<double>(hi, h.max()))};
  };
  if (name == "minmax") return symmetric ? sym(amax) : ClipRange{h.min(), h.max()};
  if (name == "percentile") {
    check(opt.percentile > 0 && opt.percentile <= 100, "percentile observer: percentile {} is outside (0, 100]",
          opt.percentile);
    if (symmetric) return sym(std::min(amax, quantile(h.abs_counts(), 0.0, w, h.total(), opt.percentile / 100.0)));
    // Each tail loses half of what the percentile leaves out (ONNX Runtime's asymmetric percentile).
    const double cut = (100.0 - opt.percentile) / 200.0;
    const double origin = -static_cast<double>(h.range());
    return clamp_data(quantile(h.counts(), origin, w, h.total(), cut),
                      quantile(h.counts(), origin, w, h.total(), 1.0 - cut));
  }
  if (name == "mse") {
    if (symmetric) return sym(mse_symmetric(h.abs_counts(), w, amax));
    double lo = 0, hi = 0;
    mse_asymmetric(h, &lo, &hi);
    return clamp_data(lo, hi);
  }
  // kl: signed data has 128 levels per sign; one-sided data gets all 256 (pytorch-quantization's `unsigned`).
  const bool one_sided = !symmetric && h.min() >= 0.f;
  const double t = kl_symmetric(h, one_sided ? 256 : 128);
  return symmetric ? sym(t) : clamp_data(-t, t);
}

}  // namespace shrink
