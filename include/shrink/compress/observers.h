// Range observers for INT8 quantization: a mergeable histogram of a value stream and the observers (min-max,
// percentile, MSE, KL-entropy) that turn it into a clipping range, per tensor or per channel.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shrink {

struct ObserverOptions {
  std::string observer = "minmax";  // minmax | percentile | mse | kl | auto
  double percentile = 99.99;        // percentile: share of values kept inside the range, in percent
  bool per_channel = false;         // weights: one range per output row; activations: per input channel, reported
  int bins = 2048;                  // histogram bins per sign (KL follows TensorRT's 2048)
};

// The observers `auto` chooses among, in the order ties are broken (min-max first).
const std::vector<std::string>& observer_names();
// Throws naming the observer and listing the valid ones when `name` is not an observer (or "auto").
void check_observer_name(const std::string& name);

// Histogram of a stream of values over [-range, range) with `bins` bins per sign. The range is a power of two
// just above the largest |x| seen, and grows by doublings that merge pairs of bins, so merging histograms of
// any split of a stream gives exactly the histogram of one pass over the whole stream (counts and bounds).
// Non-finite values are counted (nonfinite()) and left out.
class Histogram {
 public:
  explicit Histogram(int bins = 2048);
  void add(const float* x, int64_t n);
  void merge(const Histogram& other);

  int bins() const { return bins_; }      // per sign; counts() has 2 * bins() entries
  float range() const { return range_; }  // 0 until a non-zero value was seen
  float bin_width() const { return range_ / static_cast<float>(bins_); }
  // Bin i covers [(i - bins) * width, (i - bins + 1) * width); zeros seen while range() is 0 sit in bin bins().
  const std::vector<double>& counts() const { return counts_; }
  double total() const { return total_; }
  float min() const { return min_; }  // exact extremes of the finite values (0 when empty)
  float max() const { return max_; }
  int64_t nonfinite() const { return nonfinite_; }
  // |x| folded onto [0, range): bins() entries.
  std::vector<double> abs_counts() const;

 private:
  void grow_to(float range);
  int bins_;
  float range_ = 0.f;
  std::vector<double> counts_;
  double total_ = 0;
  float min_ = 0.f, max_ = 0.f;
  bool seen_ = false;
  int64_t nonfinite_ = 0;
};

struct ClipRange {
  float lo = 0.f, hi = 0.f;
};

// The range an observer picks for a histogram.
//   symmetric (s8 weights, 127 levels per sign): threshold t on |x|, returns [-t, t].
//   asymmetric (u8 activations, 255 levels over [lo, hi] widened to include 0):
//     minmax     [min, max]
//     percentile lo/hi tails: the (100 - p)% and p% quantiles of the signed values (interpolated in a bin)
//     mse        the (lo, hi) pair of bin edges minimizing the expected squared quantization error (rounding
//                noise step^2/12 inside, squared clipping distance outside)
//     kl         TensorRT's entropy calibration on |x| (128 quantized bins, threshold >= 128 bins), giving
//                [-t, t] intersected with [min, max]
// Throws for "auto" (a layer-level choice) and unknown names. An empty histogram gives {0, 0}.
ClipRange observe_range(const Histogram& h, const ObserverOptions& opt, bool symmetric);

// TensorRT-style KL threshold over an |x| histogram: the bin count i (>= quantized_bins) whose reference
// distribution P (outliers folded into bin i-1) has the smallest KL(P || Q) to its quantization Q onto
// `quantized_bins` levels. Returns the threshold as a bin count (t = i * width).
int kl_threshold_bins(const std::vector<double>& abs_counts, int quantized_bins = 128);

// Per-channel min-max over rows of a [rows][channels] stream (activations: per input channel, reported only;
// our static A8 kernels take one scale per tensor).
struct ChannelMinMax {
  std::vector<float> lo, hi;
  void add(const float* x, int64_t rows, int64_t channels);
};

}  // namespace shrink
