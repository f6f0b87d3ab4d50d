// Log-bucket latency histogram: bucket b covers (lo * g^(b-1), lo * g^b] with g = 1.02, lo = 1 us.
#include <shrink/bench/latency.h>

#include <algorithm>
#include <cmath>

namespace shrink {

namespace {
constexpr double kLowestMs = 1e-3;
constexpr double kGrowth = 1.02;
}  // namespace

int LatencyHistogram::bucket(double ms) {
  if (ms <= kLowestMs) return 0;
  return static_cast<int>(std::ceil(std::log(ms / kLowestMs) / std::log(kGrowth)));
}

double LatencyHistogram::upper_edge(int b) {
  return kLowestMs * std::pow(kGrowth, b);
}

void LatencyHistogram::add(double ms) {
  const int b = bucket(ms);
  if (b >= static_cast<int>(buckets_.size())) buckets_.resize(b + 1, 0);
  buckets_[b]++;
  min_ = count_ ? std::min(min_, ms) : ms;
  max_ = std::max(max_, ms);
  ++count_;
  sum_ += ms;
}

double LatencyHistogram::percentile(double q) const {
  if (!count_) return 0;
  const int64_t rank = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(q * count_)));
  int64_t seen = 0;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    seen += buckets_[b];
    if (seen >= rank) return std::min(max_, std::max(min_, upper_edge(static_cast<int>(b))));
  }
  return max_;
}

nlohmann::json LatencyHistogram::summary_json() const {
  return {{"p50", percentile(0.50)},
          {"p90", percentile(0.90)},
          {"p95", percentile(0.95)},
          {"p99", percentile(0.99)},
          {"max", max_},
          {"mean", mean()},
          {"min", min_},
          {"count", count_}};
}

nlohmann::json LatencyHistogram::buckets_json() const {
  nlohmann::json out = nlohmann::json::array();
  for (size_t b = 0; b < buckets_.size(); ++b)
    if (buckets_[b]) out.push_back({upper_edge(static_cast<int>(b)), buckets_[b]});
  return out;
}

}  // namespace shrink
