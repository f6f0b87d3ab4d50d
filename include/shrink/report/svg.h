// Small pieces the report's HTML and SVG are built from: escaping, "nice" axis ticks, number formatting.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace shrink {

// & < > " ' as entities: safe in element text and in quoted attributes.
std::string html_escape(std::string_view s);

// Axis ticks at 1, 2 or 5 x 10^k steps covering [lo, hi] with about `target` ticks (Heckbert's "nice numbers").
struct NiceAxis {
  double lo = 0, hi = 1, step = 1;
  std::vector<double> ticks;
  int decimals = 0;  // digits after the point that print every tick exactly
};
NiceAxis nice_axis(double lo, double hi, int target = 5);
// A tick label: `decimals` digits, no "-0".
std::string tick_label(double v, int decimals);

// Ticks at 1, 2, 5 x 10^k inside [lo, hi] (lo > 0) for a log axis.
std::vector<double> log_ticks(double lo, double hi);

}  // namespace shrink
