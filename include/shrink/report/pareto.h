// The Pareto frontier over (quality, p99 latency, size) that `report` and `sweep` mark (docs/results.md).
#pragma once

#include <cstddef>
#include <vector>

namespace shrink {

// One measured variant as the frontier sees it. `quality` is taken in its own direction (higher_is_better);
// excluded points (failed configurations) are never on the frontier and dominate nothing.
struct ParetoPoint {
  double quality = 0;
  bool higher_is_better = true;
  double p99_ms = 0;
  double size_bytes = 0;
  bool excluded = false;
};

// a is at least as good as b in all three objectives and strictly better in one. NaN is never better.
bool dominates(const ParetoPoint& a, const ParetoPoint& b);

// on[i] is true when no other point dominates point i (equal points do not dominate each other, so both stay).
std::vector<bool> pareto_frontier(const std::vector<ParetoPoint>& points);

}  // namespace shrink
