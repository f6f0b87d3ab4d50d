// Shared helpers of the kernel micro-benchmarks: the machine they ran on, the peaks measured in the same run,
// and a summary table of results as a share of those peaks.
#pragma once

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <shrink/bench/peak.h>
#include <shrink/core/build_info.h>
#include <shrink/core/cpu.h>
#include <shrink/core/parallel.h>
#include <shrink/core/timer.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace shrink::bench {

// SHRINK_THREADS=N pins the pool; default: all cores.
inline int bench_threads() {
  const char* env = std::getenv("SHRINK_THREADS");
  set_num_threads(env ? std::atoi(env) : 0);
  return num_threads();
}

inline void print_machine(int threads) {
  fmt::print("machine: {} | isa {} | flags {} | threads {} | commit {}\n", cpu_features().model, isa_name(active_isa()),
             cpu_flags_string(), threads, commit());
}

inline std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(gen);
  return v;
}

// One line of the summary: a rate (its share of the peak is computed when printed).
struct Row {
  std::string name;
  double rate;        // GFLOP/s or GB/s
  double ms;          // best time per call
  double paired = 0;  // rate / rate of a paired reference timed in the same loop (0: none)
};

inline std::vector<Row>& rows() {
  static std::vector<Row> r;
  return r;
}

// Google Benchmark may call a case several times; the best rate over all of them is kept.
inline void record(const std::string& name, double rate, double ms, double paired = 0) {
  for (Row& r : rows())
    if (r.name == name) {
      if (rate > r.rate) r = {name, rate, ms, paired};
      return;
    }
  rows().push_back({name, rate, ms, paired});
}

inline const Row* find_row(const std::string& name) {
  for (const Row& r : rows())
    if (r.name == name) return &r;
  return nullptr;
}

inline void print_rows(const char* unit, double peak, const char* peak_name) {
  const bool paired = std::any_of(rows().begin(), rows().end(), [](const Row& r) { return r.paired > 0; });
  fmt::print("\n{:<44} {:>10} {:>10} {:>9}{}\n", "case", unit, "of peak", "best ms", paired ? "  vs paired read" : "");
  for (const Row& r : rows()) {
    fmt::print("{:<44} {:>10.1f} {:>9.1f}% {:>9.3f}", r.name, r.rate, 100.0 * r.rate / peak, r.ms);
    if (r.paired > 0) fmt::print("  {:>14.1f}%", 100.0 * r.paired);
    fmt::print("\n");
  }
  fmt::print("peak: {} = {:.1f} {}\n", peak_name, peak, unit);
}

// Runs fn once per benchmark iteration and returns the best milliseconds per call. The best call, like the
// best-of-runs peaks it is compared with, is the one least disturbed by other processes on a shared machine;
// Google Benchmark's own columns still show the mean.
template <class Fn>
double timed_loop(benchmark::State& state, Fn&& fn) {
  double best_ms = 1e30;
  for (auto _ : state) {
    Timer t;
    fn();
    best_ms = std::min(best_ms, t.elapsed_ms());
  }
  return best_ms;
}

}  // namespace shrink::bench
