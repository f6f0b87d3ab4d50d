// Closed-loop driver: client threads only submit and wait; the caller's thread runs every forward.
#include <shrink/bench/batcher.h>
#include <shrink/bench/concurrency.h>
#include <shrink/core/timer.h>

#include <atomic>
#include <exception>
#include <mutex>
#include <thread>

namespace shrink {

nlohmann::json ClosedLoopResult::to_json() const {
  return {{"concurrency", concurrency},
          {"throughput_per_s", throughput_per_s()},
          {"p50_ms", latency.percentile(0.5)},
          {"p99_ms", latency.percentile(0.99)},
          {"mean_batch", mean_batch()},
          {"requests", requests},
          {"batches", batches},
          {"seconds", seconds},
          {"latency_ms", latency.summary_json()}};
}

void run_closed_loop(const ClosedLoopOptions& opt, const std::function<void(int64_t)>& run_batch,
                     ClosedLoopResult& acc) {
  check(opt.concurrency >= 1, "--concurrency: expected levels >= 1, got {}", opt.concurrency);
  acc.concurrency = opt.concurrency;
  // The request carries nothing: a bench request is "one more sequence of the benchmark's shape".
  Batcher<char, char> batcher({opt.max_batch > 0 ? opt.max_batch : opt.concurrency, opt.batch_wait_ms},
                              [&](std::vector<char>& b) {
                                run_batch(static_cast<int64_t>(b.size()));
                                return std::vector<char>(b.size(), 0);
                              });
  std::mutex mu;
  std::vector<double> latencies;
  std::atomic<int> running{opt.concurrency};
  std::atomic<int64_t> sent{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;  // the first failed batch's exception, thrown to the caller
  Timer wall;
  std::vector<std::thread> clients;
  for (int c = 0; c < opt.concurrency; ++c)
    clients.emplace_back([&] {
      std::vector<double> mine;
      while (!failed && wall.elapsed_ms() < opt.seconds * 1000 &&
             (opt.max_requests <= 0 || sent.fetch_add(1) < opt.max_requests)) {
        Timer t;
        try {
          batcher.submit(0);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mu);
          if (!error) error = std::current_exception();
          failed = true;
          break;
        }
        mine.push_back(t.elapsed_ms());
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        latencies.insert(latencies.end(), mine.begin(), mine.end());
      }
      if (--running == 0) batcher.stop();
    });
  batcher.serve();  // never throws: a batch's exception goes to its clients
  for (auto& t : clients) t.join();
  const double elapsed_ms = wall.elapsed_ms();
  if (error) std::rethrow_exception(error);
  const BatcherStats s = batcher.stats();
  acc.requests += s.requests;
  acc.batches += s.batches;
  acc.seconds += elapsed_ms / 1000;
  for (double ms : latencies) acc.latency.add(ms);
}

}  // namespace shrink
