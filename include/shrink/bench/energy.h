// Energy per inference: RAPL package counters from /sys/class/powercap when readable, otherwise an estimate from the
// process CPU time x an assumed power per busy core, labelled as such (docs/benchmarks.md).
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace shrink {

inline constexpr double kDefaultWattsPerCore = 10.0;

// Joules a RAPL counter advanced from `before` to `after` (microjoules); the counter wraps to 0 after
// max_energy_range_uj, so after < before means one wrap.
uint64_t rapl_delta_uj(uint64_t before, uint64_t after, uint64_t max_energy_range_uj);

// The estimate: CPU seconds of this process x watts per busy core / inferences.
double estimated_joules_per_inference(double cpu_seconds, double watts_per_core, int64_t inferences);

// User + system CPU seconds of this process so far (getrusage), all threads.
double process_cpu_seconds();

// The package-level RAPL domains under a powercap root: intel-rapl:N directories (AMD's driver exposes its packages
// under the same name); sub-domains (intel-rapl:N:M, inside their package) and psys are left out.
class RaplCounters {
 public:
  static RaplCounters open(const std::filesystem::path& root = "/sys/class/powercap");
  bool readable() const { return !domains_.empty(); }
  std::vector<std::string> names() const;
  std::vector<uint64_t> read() const;  // energy_uj of every domain
  double joules_between(const std::vector<uint64_t>& before, const std::vector<uint64_t>& after) const;

 private:
  struct Domain {
    std::filesystem::path energy_file;
    std::string name;
    uint64_t max_range_uj;
  };
  std::vector<Domain> domains_;
};

// Around a timed loop: start(), run, then json(inferences) gives {"joules_per_inference", "source": "rapl" |
// "estimate", "estimated", "joules", "seconds", "inferences", and "watts_per_core" + "cpu_seconds" when estimated}.
class EnergyMeter {
 public:
  explicit EnergyMeter(double watts_per_core = kDefaultWattsPerCore,
                       const std::filesystem::path& powercap_root = "/sys/class/powercap");
  void start();
  nlohmann::json json(int64_t inferences) const;

 private:
  double watts_per_core_;
  RaplCounters rapl_;
  std::vector<uint64_t> rapl_start_;
  double cpu_start_s_ = 0, wall_start_s_ = 0;
};

}  // namespace shrink
