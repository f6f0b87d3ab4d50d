// Closed-loop HTTP load generator (`shrink loadtest`): C clients each send a request, wait for the answer and send
// the next, for S seconds per concurrency level; latency percentiles, throughput, status counts, and the resident
// memory of the server process when its PID is given.
#pragma once

#include <shrink/bench/latency.h>
#include <shrink/serve/api.h>

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace shrink::serve {

struct LoadtestOptions {
  std::string url;  // http://host:port
  std::vector<int> concurrency{1, 2, 4, 8, 16, 32};
  double seconds = 10;
  Route route = Route::Classify;
  std::string body;    // empty: a default request for the route
  int server_pid = 0;  // > 0: sample /proc/<pid>/status VmRSS
  double timeout_s = 60;
};

struct LoadtestLevel {
  int concurrency = 0;
  double seconds = 0;
  int64_t requests = 0, ok = 0;
  LatencyHistogram latency_ms;    // requests answered 200
  std::map<int, int64_t> status;  // <= 0: no response, minus the client's httplib::Error (timeout, connection)
  int64_t rss_start_bytes = 0, rss_end_bytes = 0, rss_max_bytes = 0;
  std::vector<std::pair<double, int64_t>> rss_series;  // (seconds into the level, RSS bytes), ~10 per level
  nlohmann::json to_json() const;                      // throughput_per_s counts 200 answers
};

// "200", "429", ... or, with no HTTP answer, "no_response:" and the client's error ("Read": a read timeout or a
// connection closed before the answer; "Connection": refused or reset).
std::string status_name(int code);
// The default body for a route (two short texts; or a 16-token greedy generation).
std::string default_loadtest_body(Route route);
// Resident set of a process from /proc/<pid>/status (0 when unreadable).
int64_t process_rss_bytes(int pid);

std::vector<LoadtestLevel> run_loadtest(const LoadtestOptions& opt,
                                        const std::function<void(const LoadtestLevel&)>& on_level = {});

}  // namespace shrink::serve
