// RAPL package counters (powercap sysfs) and the labelled CPU-time estimate used where they are not readable.
#include <shrink/bench/energy.h>
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <sys/resource.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <regex>

namespace shrink {

uint64_t rapl_delta_uj(uint64_t before, uint64_t after, uint64_t max_energy_range_uj) {
  if (after >= before) return after - before;
  return max_energy_range_uj - before + after;
}

double estimated_joules_per_inference(double cpu_seconds, double watts_per_core, int64_t inferences) {
  check(inferences > 0, "energy: expected at least one inference, found {}", inferences);
  return cpu_seconds * watts_per_core / static_cast<double>(inferences);
}

double process_cpu_seconds() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

namespace {

std::optional<std::string> read_line(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::string s;
  if (!in || !std::getline(in, s)) return std::nullopt;
  return s;
}

std::optional<uint64_t> read_u64(const std::filesystem::path& p) {
  auto s = read_line(p);
  if (!s || s->empty() || s->find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::stoull(*s);
}

}  // namespace

RaplCounters RaplCounters::open(const std::filesystem::path& root) {
  RaplCounters r;
  std::error_code ec;
  if (!std::filesystem::is_directory(root, ec)) return r;
  static const std::regex package(R"(intel-rapl:[0-9]+)");
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    const std::string dir = e.path().filename().string();
    if (!std::regex_match(dir, package)) continue;
    const std::string name = read_line(e.path() / "name").value_or(dir);
    if (name == "psys") continue;  // the platform domain overlaps the packages
    auto energy = read_u64(e.path() / "energy_uj");
    auto range = read_u64(e.path() / "max_energy_range_uj");
    if (!energy || !range) return RaplCounters{};  // one unreadable package: a partial sum would mislead
    r.domains_.push_back({e.path() / "energy_uj", name, *range});
  }
  std::sort(r.domains_.begin(), r.domains_.end(),
            [](const Domain& a, const Domain& b) { return a.energy_file < b.energy_file; });
  return r;
}

std::vector<std::string> RaplCounters::names() const {
  std::vector<std::string> n;
  for (const Domain& d : domains_) n.push_back(d.name);
  return n;
}

std::vector<uint64_t> RaplCounters::read() const {
  std::vector<uint64_t> v;
  for (const Domain& d : domains_) {
    auto e = read_u64(d.energy_file);
    if (!e) fail("{}: RAPL counter became unreadable during the benchmark", d.energy_file.string());
    v.push_back(*e);
  }
  return v;
}

double RaplCounters::joules_between(const std::vector<uint64_t>& before, const std::vector<uint64_t>& after) const {
  check(before.size() == domains_.size() && after.size() == domains_.size(),
        "RAPL: expected {} counter values, found {} and {}", domains_.size(), before.size(), after.size());
  uint64_t uj = 0;
  for (size_t i = 0; i < domains_.size(); ++i) uj += rapl_delta_uj(before[i], after[i], domains_[i].max_range_uj);
  return static_cast<double>(uj) / 1e6;
}

namespace {
double now_s() {
  static const Timer epoch;
  return epoch.elapsed_ms() / 1000;
}
}  // namespace

EnergyMeter::EnergyMeter(double watts_per_core, const std::filesystem::path& powercap_root)
    : watts_per_core_(watts_per_core), rapl_(RaplCounters::open(powercap_root)) {
  check(watts_per_core > 0, "--watts-per-core: expected a positive power in watts, found {}", watts_per_core);
}

void EnergyMeter::start() {
  if (rapl_.readable()) rapl_start_ = rapl_.read();
  cpu_start_s_ = process_cpu_seconds();
  wall_start_s_ = now_s();
}

nlohmann::json EnergyMeter::json(int64_t inferences) const {
  const double seconds = now_s() - wall_start_s_;
  nlohmann::json j = {{"inferences", inferences}, {"seconds", seconds}};
  if (rapl_.readable()) {
    const double joules = rapl_.joules_between(rapl_start_, rapl_.read());
    j["source"] = "rapl";
    j["estimated"] = false;
    j["domains"] = rapl_.names();
    j["joules"] = joules;
    j["joules_per_inference"] = joules / static_cast<double>(std::max<int64_t>(1, inferences));
  } else {
    const double cpu = process_cpu_seconds() - cpu_start_s_;
    j["source"] = "estimate";
    j["estimated"] = true;
    j["watts_per_core"] = watts_per_core_;
    j["cpu_seconds"] = cpu;
    j["joules"] = cpu * watts_per_core_;
    j["joules_per_inference"] = estimated_joules_per_inference(cpu, watts_per_core_, inferences);
  }
  return j;
}

}  // namespace shrink
