// Cost per 1,000 inferences from an instance's hourly price and the best measured throughput.
#pragma once

#include <nlohmann/json.hpp>

namespace shrink {

// AWS EC2 t3.large on-demand, Linux, us-east-1 (2 vCPU, 8 GiB): the machine class these benchmarks run on.
inline constexpr double kDefaultPricePerHour = 0.0832;
inline constexpr const char* kDefaultInstance = "AWS EC2 t3.large on-demand (2 vCPU, us-east-1, Linux)";

// price_per_hour / 3600 x (1000 / throughput_per_s) seconds; throws when throughput is not positive.
double usd_per_1k_inferences(double price_per_hour, double throughput_per_s);

// {"usd_per_1k", "price_per_hour", "throughput_per_s", "instance"}
nlohmann::json cost_json(double price_per_hour, double throughput_per_s, const std::string& instance);

}  // namespace shrink
