// Escaping and axis ticks for the report's SVG plots.
#include <fmt/format.h>
#include <shrink/report/svg.h>

#include <algorithm>
#include <cmath>

namespace shrink {

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  return out;
}

namespace {

// The 1, 2, 5 or 10 x 10^k nearest x (round) or at least x (ceiling).
double nice_number(double x, bool round) {
  const double e = std::floor(std::log10(x));
  const double f = x / std::pow(10.0, e);
  double n;
  if (round)
    n = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
  else
    n = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  return n * std::pow(10.0, e);
}

}  // namespace

NiceAxis nice_axis(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (hi < lo) std::swap(lo, hi);
  if (hi == lo) {  // one value: a unit-wide (or 10%-wide) window around it
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  NiceAxis a;
  const double range = nice_number(hi - lo, false);
  a.step = nice_number(range / std::max(1, target - 1), true);
  const double k0 = std::floor(lo / a.step + 1e-9), k1 = std::ceil(hi / a.step - 1e-9);
  if (!std::isfinite(k1 - k0) || !(k1 >= k0) || k1 - k0 > 100) {  // extreme values: just the two ends
    a.ticks = {lo, hi};
    a.lo = lo;
    a.hi = hi;
    a.step = hi - lo;
    return a;
  }
  for (int i = 0; i <= std::max(1, static_cast<int>(k1 - k0)); ++i) a.ticks.push_back((k0 + i) * a.step);
  a.lo = a.ticks.front();
  a.hi = a.ticks.back();
  a.decimals = std::max(0, static_cast<int>(-std::floor(std::log10(a.step) + 1e-9)));
  return a;
}

std::string tick_label(double v, int decimals) {
  std::string s = fmt::format("{:.{}f}", v, decimals);
  if (s.find_first_not_of("-0.") == std::string::npos && s[0] == '-') s.erase(0, 1);
  return s;
}

std::vector<double> log_ticks(double lo, double hi) {
  std::vector<double> t;
  if (!(lo > 0) || !(hi >= lo)) return t;
  for (double e = std::floor(std::log10(lo)); e <= std::ceil(std::log10(hi)); ++e)
    for (double m : {1.0, 2.0, 5.0}) {
      const double v = m * std::pow(10.0, e);
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) t.push_back(v);
    }
  return t;
}

}  // namespace shrink
