// Pure classification metrics of include/shrink/eval/metrics.h.
#include <shrink/core/error.h>
#include <shrink/eval/metrics.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>

namespace shrink {

std::vector<ClassMetrics> per_class_metrics(const std::vector<std::vector<int64_t>>& confusion) {
  const size_t k = confusion.size();
  std::vector<ClassMetrics> out(k);
  for (size_t c = 0; c < k; ++c) {
    check(confusion[c].size() == k, "per_class_metrics: confusion row {} has {} entries, expected {}", c,
          confusion[c].size(), k);
    for (size_t o = 0; o < k; ++o) {
      out[c].support += confusion[c][o];
      out[o].predicted += confusion[c][o];
    }
  }
  for (size_t c = 0; c < k; ++c) {
    ClassMetrics& m = out[c];
    const double tp = static_cast<double>(confusion[c][c]);
    m.precision = m.predicted ? tp / static_cast<double>(m.predicted) : 0;
    m.recall = m.support ? tp / static_cast<double>(m.support) : 0;
    // F1 = 2tp / (2tp + fp + fn) = 2tp / (predicted + support): defined (0) when precision or recall is not.
    const double denom = static_cast<double>(m.predicted + m.support);
    m.f1 = denom > 0 ? 2 * tp / denom : 0;
  }
  return out;
}

std::vector<float> softmax_rows(const float* logits, int64_t n, int classes) {
  std::vector<float> p(static_cast<size_t>(n) * classes);
  for (int64_t r = 0; r < n; ++r) {
    const float* x = logits + r * classes;
    double mx = x[0];
    for (int c = 1; c < classes; ++c) mx = std::max(mx, static_cast<double>(x[c]));
    double sum = 0;
    for (int c = 0; c < classes; ++c) sum += std::exp(x[c] - mx);
    for (int c = 0; c < classes; ++c) p[r * classes + c] = static_cast<float>(std::exp(x[c] - mx) / sum);
  }
  return p;
}

double expected_calibration_error(const std::vector<double>& confidence, const std::vector<uint8_t>& correct,
                                  int bins) {
  check(confidence.size() == correct.size(), "ECE: {} confidences for {} correctness flags", confidence.size(),
        correct.size());
  check(bins > 0, "ECE: bins must be positive, got {}", bins);
  if (confidence.empty()) return 0;
  std::vector<double> conf_sum(bins, 0), hits(bins, 0);
  std::vector<int64_t> count(bins, 0);
  for (size_t i = 0; i < confidence.size(); ++i) {
    const double c = confidence[i];
    check(c >= 0 && c <= 1, "ECE: confidence {} of example {} is outside [0, 1]", c, i);
    // Bin b is (b/B, (b+1)/B]: ceil(c * B) - 1, so a confidence on an edge goes to the lower bin.
    const int b = std::clamp(static_cast<int>(std::ceil(c * bins)) - 1, 0, bins - 1);
    conf_sum[b] += c;
    hits[b] += correct[i] ? 1 : 0;
    ++count[b];
  }
  const double n = static_cast<double>(confidence.size());
  double ece = 0;
  for (int b = 0; b < bins; ++b)
    if (count[b]) ece += static_cast<double>(count[b]) / n * std::fabs(hits[b] / count[b] - conf_sum[b] / count[b]);
  return ece;
}

double kl_divergence(const double* p, const double* q, int64_t n) {
  double kl = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (p[i] <= 0) continue;
    if (q[i] <= 0) return std::numeric_limits<double>::infinity();
    kl += p[i] * std::log(p[i] / q[i]);
  }
  return std::max(kl, 0.0);
}

std::vector<std::string> LengthBuckets::names() const {
  std::vector<std::string> out;
  if (edges.empty()) return {"all"};
  int64_t lo = 1;
  for (int64_t e : edges) {
    out.push_back(lo == e ? std::to_string(e) : std::to_string(lo) + "-" + std::to_string(e));
    lo = e + 1;
  }
  out.push_back(std::to_string(lo) + "+");
  return out;
}

int LengthBuckets::bucket_of(int64_t length) const {
  return static_cast<int>(std::lower_bound(edges.begin(), edges.end(), length) - edges.begin());
}

LengthBuckets length_buckets_from_quantiles(std::vector<int64_t> lengths, int k) {
  check(k >= 1, "length buckets: need at least 1 bucket, got {}", k);
  LengthBuckets b;
  if (lengths.empty() || k == 1) return b;
  std::sort(lengths.begin(), lengths.end());
  const size_t n = lengths.size();
  for (int q = 1; q < k; ++q) {
    // The q/k quantile (lower nearest rank); an edge equal to the largest length would leave the last bucket empty.
    const size_t idx = (n * q + k - 1) / k - 1;
    const int64_t e = lengths[std::min(idx, n - 1)];
    if (e >= lengths.back()) break;
    if (b.edges.empty() || e > b.edges.back()) b.edges.push_back(e);
  }
  return b;
}

LengthBuckets parse_length_buckets(const std::string& text) {
  LengthBuckets b;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(start, comma - start);
    int64_t v = 0;
    auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || p != item.data() + item.size() || v <= 0)
      fail("--length-buckets '{}': '{}' is not a positive integer; expected increasing token counts like 8,16,32", text,
           item);
    if (!b.edges.empty() && v <= b.edges.back())
      fail("--length-buckets '{}': {} does not exceed {}; edges must be strictly increasing, like 8,16,32", text, v,
           b.edges.back());
    b.edges.push_back(v);
    start = comma + 1;
  }
  return b;
}

Segments group_by(const std::vector<std::string>& value_of_example, const std::vector<std::string>& order) {
  Segments s;
  std::map<std::string, size_t> index;
  for (const std::string& v : order)
    if (index.emplace(v, s.names.size()).second) s.names.push_back(v), s.members.emplace_back();
  for (size_t i = 0; i < value_of_example.size(); ++i) {
    auto [it, added] = index.emplace(value_of_example[i], s.names.size());
    if (added) s.names.push_back(value_of_example[i]), s.members.emplace_back();
    s.members[it->second].push_back(static_cast<int64_t>(i));
  }
  return s;
}

}  // namespace shrink
