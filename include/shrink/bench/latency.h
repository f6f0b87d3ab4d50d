// Latency histogram with logarithmic buckets (2% wide): percentiles, mean, max, and the buckets for plots.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

namespace shrink {

class LatencyHistogram {
 public:
  void add(double ms);
  int64_t count() const { return count_; }
  double mean() const { return count_ ? sum_ / count_ : 0; }
  double max() const { return max_; }
  double min() const { return min_; }
  // q in [0, 1]; the upper edge of the bucket holding the q-th sample, capped at max().
  double percentile(double q) const;
  // {"p50","p90","p95","p99","max","mean","min","count"}
  nlohmann::json summary_json() const;
  // [[upper_edge_ms, count], ...] of non-empty buckets.
  nlohmann::json buckets_json() const;

 private:
  static int bucket(double ms);
  static double upper_edge(int b);
  std::vector<int64_t> buckets_;
  int64_t count_ = 0;
  double sum_ = 0, max_ = 0, min_ = 0;
};

}  // namespace shrink
