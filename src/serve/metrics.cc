// Prometheus text format rendering (https://prometheus.io/docs/instrumenting/exposition_formats/).
#include <fmt/format.h>
#include <shrink/core/error.h>
#include <shrink/serve/metrics.h>

#include <algorithm>
#include <cmath>

namespace shrink::serve {

namespace {

std::string escape(const std::string& s, bool help) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '"' && !help)
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  return fmt::format("{}", v);
}

// Inserts le="bound" into a rendered label set.
std::string with_le(const std::string& labels, const std::string& le) {
  if (labels.empty()) return "{le=\"" + le + "\"}";
  return labels.substr(0, labels.size() - 1) + ",le=\"" + le + "\"}";
}

}  // namespace

std::string render_labels(const Labels& labels) {
  if (labels.empty()) return {};
  std::string s = "{";
  for (size_t i = 0; i < labels.size(); ++i)
    s += (i ? "," : "") + labels[i].first + "=\"" + escape(labels[i].second, false) + "\"";
  return s + "}";
}

void Metrics::counter(const std::string& name, const std::string& help) {
  std::lock_guard lock(mu_);
  families_[name] = Family{help, "counter", {}, {}};
}

void Metrics::gauge(const std::string& name, const std::string& help) {
  std::lock_guard lock(mu_);
  families_[name] = Family{help, "gauge", {}, {}};
}

void Metrics::histogram(const std::string& name, const std::string& help, std::vector<double> bounds) {
  check(std::is_sorted(bounds.begin(), bounds.end()), "histogram {}: bucket bounds must increase", name);
  std::lock_guard lock(mu_);
  families_[name] = Family{help, "histogram", std::move(bounds), {}};
}

Metrics::Family& Metrics::family(const std::string& name, const char* type) {
  auto it = families_.find(name);
  if (it == families_.end() || it->second.type != type)
    fail("metric {} is not declared as a {} (declare it before updating it)", name, type);
  return it->second;
}

void Metrics::inc(const std::string& name, const Labels& labels, double by) {
  std::lock_guard lock(mu_);
  family(name, "counter").series[render_labels(labels)].value += by;
}

void Metrics::set(const std::string& name, const Labels& labels, double value) {
  std::lock_guard lock(mu_);
  family(name, "gauge").series[render_labels(labels)].value = value;
}

void Metrics::observe(const std::string& name, const Labels& labels, double value) {
  std::lock_guard lock(mu_);
  Family& f = family(name, "histogram");
  Series& s = f.series[render_labels(labels)];
  if (s.buckets.empty()) s.buckets.assign(f.bounds.size() + 1, 0);
  const size_t b = std::lower_bound(f.bounds.begin(), f.bounds.end(), value) - f.bounds.begin();
  ++s.buckets[b];
  s.sum += value;
  ++s.count;
}

double Metrics::value(const std::string& name, const Labels& labels) const {
  std::lock_guard lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return 0;
  auto s = it->second.series.find(render_labels(labels));
  return s == it->second.series.end() ? 0 : s->second.value;
}

std::string Metrics::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape(f.help, true), name, f.type);
    for (const auto& [labels, s] : f.series) {
      if (f.type != "histogram") {
        out += fmt::format("{}{} {}\n", name, labels, number(s.value));
        continue;
      }
      uint64_t cumulative = 0;
      for (size_t b = 0; b <= f.bounds.size(); ++b) {
        cumulative += s.buckets[b];
        const std::string le = b < f.bounds.size() ? number(f.bounds[b]) : "+Inf";
        out += fmt::format("{}_bucket{} {}\n", name, with_le(labels, le), cumulative);
      }
      out += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, labels, number(s.sum), name, labels, s.count);
    }
  }
  return out;
}

}  // namespace shrink::serve
