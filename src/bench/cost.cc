// Cost per 1,000 inferences.
#include <shrink/bench/cost.h>
#include <shrink/core/error.h>

#include <cmath>

namespace shrink {

double usd_per_1k_inferences(double price_per_hour, double throughput_per_s) {
  check(std::isfinite(throughput_per_s) && throughput_per_s > 0,
        "cost: expected a positive measured throughput, found {}; the benchmark ran no inference", throughput_per_s);
  check(std::isfinite(price_per_hour) && price_per_hour >= 0,
        "--price-per-hour: expected a non-negative price in USD per hour, found {}", price_per_hour);
  return price_per_hour / 3600.0 * (1000.0 / throughput_per_s);
}

nlohmann::json cost_json(double price_per_hour, double throughput_per_s, const std::string& instance) {
  return {{"usd_per_1k", usd_per_1k_inferences(price_per_hour, throughput_per_s)},
          {"price_per_hour", price_per_hour},
          {"throughput_per_s", throughput_per_s},
          {"instance", instance}};
}

}  // namespace shrink
