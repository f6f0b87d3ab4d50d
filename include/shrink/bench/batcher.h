// A request queue and batcher, the way a server runs one model: any number of client threads submit requests and
// block; ONE worker thread (the one that owns the OpenMP pool, so forwards never run concurrently) takes up to
// max_batch waiting requests at a time and runs them as one batch. `shrink bench --concurrency` drives it
// closed-loop (bench/concurrency.h); a server can run serve() on its model thread.
#pragma once

#include <shrink/core/error.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <mutex>
#include <utility>
#include <vector>

namespace shrink {

struct BatcherOptions {
  int max_batch = 8;
  // With fewer than max_batch requests waiting, wait up to this long (from the oldest request's arrival) for more
  // before running a partial batch. 0: run whatever is waiting at once.
  double max_wait_ms = 0;
};

struct BatcherStats {
  int64_t batches = 0, requests = 0;
  double mean_batch() const { return batches ? static_cast<double>(requests) / batches : 0; }
};

template <typename Request, typename Response>
class Batcher {
 public:
  // run(batch) returns one response per request, in order; an exception fails every request of that batch.
  using RunBatch = std::function<std::vector<Response>(std::vector<Request>&)>;

  Batcher(BatcherOptions opt, RunBatch run) : opt_(opt), run_(std::move(run)) {
    check(opt_.max_batch >= 1, "batcher: max_batch must be at least 1, got {}", opt_.max_batch);
  }

  // Any thread: queues the request and blocks until its batch has run. Throws the batch's exception, or
  // shrink::Error when the batcher was stopped before the request was queued.
  Response submit(Request r) {
    std::future<Response> done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      check(!stopped_, "batcher: stopped; the request was not queued");
      queue_.push_back({std::move(r), {}, Clock::now()});
      done = queue_.back().promise.get_future();
    }
    cv_.notify_one();
    return done.get();
  }

  // The worker thread: forms and runs batches until stop() was called and the queue is empty.
  void serve() {
    for (;;) {
      std::vector<Pending> batch;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopped_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopped and drained
        if (opt_.max_wait_ms > 0 && static_cast<int>(queue_.size()) < opt_.max_batch && !stopped_) {
          const auto deadline =
              queue_.front().arrived +
              std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(opt_.max_wait_ms));
          cv_.wait_until(lock, deadline, [&] { return stopped_ || static_cast<int>(queue_.size()) >= opt_.max_batch; });
        }
        const size_t n = std::min(queue_.size(), static_cast<size_t>(opt_.max_batch));
        for (size_t i = 0; i < n; ++i) {
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
        stats_.batches++;
        stats_.requests += static_cast<int64_t>(n);
      }
      run_one(batch);
    }
  }

  // No new requests are accepted; serve() returns once the queued ones have run.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopped_ = true;
    }
    cv_.notify_all();
  }

  BatcherStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Pending {
    Request request;
    std::promise<Response> promise;
    Clock::time_point arrived;
  };

  void run_one(std::vector<Pending>& batch) {
    std::vector<Request> requests;
    requests.reserve(batch.size());
    for (Pending& p : batch) requests.push_back(std::move(p.request));
    try {
      std::vector<Response> out = run_(requests);
      check(out.size() == batch.size(), "batcher: the batch function returned {} responses for {} requests", out.size(),
            batch.size());
      for (size_t i = 0; i < batch.size(); ++i) batch[i].promise.set_value(std::move(out[i]));
    } catch (...) {
      for (Pending& p : batch) p.promise.set_exception(std::current_exception());
    }
  }

  BatcherOptions opt_;
  RunBatch run_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool stopped_ = false;
  BatcherStats stats_;
};

}  // namespace shrink
