// The closed-loop load generator over cpp-httplib clients (one keep-alive connection per client thread).
#include <httplib.h>
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/serve/loadtest.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

namespace shrink::serve {

std::string default_loadtest_body(Route route) {
  if (route == Route::Classify) return R"({"texts": ["a gripping, funny and moving film", "dull and far too long"]})";
  if (route == Route::Completions) return R"({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0})";
  return R"({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0})";
}

int64_t process_rss_bytes(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream ss(line.substr(6));
      int64_t kb = 0;
      ss >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

std::string status_name(int code) {
  return code > 0 ? std::to_string(code) : "no_response:" + httplib::to_string(static_cast<httplib::Error>(-code));
}

nlohmann::json LoadtestLevel::to_json() const {
  nlohmann::json st = nlohmann::json::object();
  for (const auto& [code, n] : status) st[status_name(code)] = n;
  nlohmann::json j{{"concurrency", concurrency},
                   {"seconds", seconds},
                   {"requests", requests},
                   {"throughput_per_s", seconds > 0 ? static_cast<double>(ok) / seconds : 0},
                   {"latency_ms", latency_ms.summary_json()},
                   {"status", st}};
  if (rss_max_bytes > 0)
    j["server_rss_bytes"] = {
        {"start", rss_start_bytes}, {"end", rss_end_bytes}, {"max", rss_max_bytes}, {"series", rss_series}};
  return j;
}

std::vector<LoadtestLevel> run_loadtest(const LoadtestOptions& opt,
                                        const std::function<void(const LoadtestLevel&)>& on_level) {
  check(opt.url.rfind("http://", 0) == 0, "loadtest URL \"{}\": expected http://host:port", opt.url);
  check(opt.seconds > 0, "loadtest: --seconds must be positive, found {}", opt.seconds);
  const std::string path = std::string("/v1/") + route_name(opt.route);
  const std::string body = opt.body.empty() ? default_loadtest_body(opt.route) : opt.body;
  std::vector<LoadtestLevel> levels;
  for (int c : opt.concurrency) {
    check(c > 0, "loadtest: concurrency must be positive, found {}", c);
    LoadtestLevel level;
    level.concurrency = c;
    std::mutex mu;
    std::atomic<bool> stop{false};
    if (opt.server_pid > 0) level.rss_start_bytes = level.rss_max_bytes = process_rss_bytes(opt.server_pid);
    Timer wall;
    std::vector<std::thread> clients;
    for (int i = 0; i < c; ++i) {
      clients.emplace_back([&, i] {
        httplib::Client client(opt.url);
        client.set_keep_alive(true);
        client.set_read_timeout(static_cast<time_t>(opt.timeout_s), 0);
        const httplib::Headers headers{{"X-Shrink-Key", "loadtest-" + std::to_string(i)}};
        std::vector<double> latencies_ms;
        std::map<int, int64_t> status;
        int64_t ok = 0;
        while (!stop) {
          Timer t;
          auto res = client.Post(path, headers, body, "application/json");
          const double ms = t.elapsed_ms();
          const int code = res ? res->status : -static_cast<int>(res.error());
          ++status[code];
          if (code == 200) {
            latencies_ms.push_back(ms);
            ++ok;
          } else if (code == 429 || code <= 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(code <= 0 ? 50 : 5));  // closed loop, not a spin
          }
        }
        std::lock_guard lock(mu);
        for (auto& [k, n] : status) {
          level.status[k] += n;
          level.requests += n;
        }
        level.ok += ok;
        for (double ms : latencies_ms) level.latency_ms.add(ms);
      });
    }
    // RSS every 100 ms for the maximum; one sample per tenth of the level (at least every 10 s) for the trajectory.
    const double every_ms = std::min(10000.0, opt.seconds * 100);
    double next_sample_ms = every_ms;
    while (wall.elapsed_ms() < opt.seconds * 1000) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (opt.server_pid <= 0) continue;
      const int64_t rss = process_rss_bytes(opt.server_pid);
      level.rss_max_bytes = std::max(level.rss_max_bytes, rss);
      if (wall.elapsed_ms() >= next_sample_ms) {
        level.rss_series.emplace_back(wall.elapsed_ms() / 1000, rss);
        next_sample_ms += every_ms;
      }
    }
    stop = true;
    for (auto& t : clients) t.join();
    level.seconds = wall.elapsed_ms() / 1000;
    if (opt.server_pid > 0) level.rss_end_bytes = process_rss_bytes(opt.server_pid);
    if (on_level) on_level(level);
    levels.push_back(std::move(level));
  }
  return levels;
}

}  // namespace shrink::serve
