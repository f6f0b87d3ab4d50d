// Prometheus metrics in the text exposition format (version 0.0.4): counters, gauges and histograms with labels,
// declared once with their HELP text, updated from any thread, rendered for GET /metrics.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace shrink::serve {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
 public:
  // Declarations: a name is declared once; updating an undeclared name throws.
  void counter(const std::string& name, const std::string& help);
  void gauge(const std::string& name, const std::string& help);
  // Upper bucket bounds in increasing order (+Inf is added).
  void histogram(const std::string& name, const std::string& help, std::vector<double> bounds);

  void inc(const std::string& name, const Labels& labels, double by = 1);
  void set(const std::string& name, const Labels& labels, double value);
  void observe(const std::string& name, const Labels& labels, double value);
  // The current value of a counter or gauge series (0 when it does not exist yet).
  double value(const std::string& name, const Labels& labels) const;

  // HELP and TYPE lines, then every series; histograms as cumulative _bucket{le=...}, _sum and _count.
  std::string render() const;

 private:
  struct Series {
    double value = 0;
    std::vector<uint64_t> buckets;  // per bound (not cumulative) + the +Inf bucket
    double sum = 0;
    uint64_t count = 0;
  };
  struct Family {
    std::string help, type;
    std::vector<double> bounds;
    std::map<std::string, Series> series;  // by rendered label set
  };
  Family& family(const std::string& name, const char* type);
  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

// Label set rendered as Prometheus writes it: {a="x",b="y"} with \\, \" and \n escaped; empty for no labels.
std::string render_labels(const Labels& labels);

}  // namespace shrink::serve
