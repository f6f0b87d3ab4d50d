// Pareto frontier: O(n^2) dominance checks; result files hold tens to hundreds of rows.
#include <shrink/report/pareto.h>

#include <cmath>

namespace shrink {

namespace {

// Every objective as "higher is better" so one comparison serves all three.
struct Goodness {
  double v[3];
  bool valid;
};

Goodness goodness(const ParetoPoint& p) {
  Goodness g{{p.higher_is_better ? p.quality : -p.quality, -p.p99_ms, -p.size_bytes}, !p.excluded};
  for (double x : g.v) g.valid = g.valid && std::isfinite(x);
  return g;
}

}  // namespace

bool dominates(const ParetoPoint& a, const ParetoPoint& b) {
  const Goodness ga = goodness(a), gb = goodness(b);
  if (!ga.valid) return false;
  if (!gb.valid) return true;
  bool strictly = false;
  for (int k = 0; k < 3; ++k) {
    if (ga.v[k] < gb.v[k]) return false;
    strictly = strictly || ga.v[k] > gb.v[k];
  }
  return strictly;
}

std::vector<bool> pareto_frontier(const std::vector<ParetoPoint>& points) {
  std::vector<bool> on(points.size(), false);
  for (size_t i = 0; i < points.size(); ++i) {
    if (!goodness(points[i]).valid) continue;
    bool dominated = false;
    for (size_t j = 0; j < points.size() && !dominated; ++j) dominated = j != i && dominates(points[j], points[i]);
    on[i] = !dominated;
  }
  return on;
}

}  // namespace shrink
