// Closed-loop throughput at a given concurrency: C client threads each send a request as soon as their previous one
// returned; the calling thread serves them through a Batcher (batches of up to C waiting requests, one forward each).
#pragma once

#include <shrink/bench/latency.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>

namespace shrink {

struct ClosedLoopOptions {
  int concurrency = 1;
  double seconds = 2;        // clients stop sending new requests after this long; queued ones still complete
  int64_t max_requests = 0;  // > 0: also stop after this many requests were sent
  int max_batch = 0;         // 0: the concurrency
  double batch_wait_ms = 2;  // Batcher max_wait_ms: lets the clients of a just-finished batch requeue
};

// Accumulates over several runs of one concurrency, so levels can be interleaved in rounds on a noisy machine.
struct ClosedLoopResult {
  int concurrency = 0;
  int64_t requests = 0, batches = 0;
  double seconds = 0;        // wall time of the runs, first request to last response
  LatencyHistogram latency;  // per request, queueing included
  double throughput_per_s() const { return seconds > 0 ? requests / seconds : 0; }
  double mean_batch() const { return batches ? static_cast<double>(requests) / batches : 0; }
  // {"concurrency","throughput_per_s","p50_ms","p99_ms","mean_batch","requests","batches","seconds","latency_ms"}
  nlohmann::json to_json() const;
};

// run_batch(n) serves n requests with one forward; it runs on the calling thread (the OpenMP pool's owner). Adds the
// run's requests, batches, time and latencies to `acc`. Exceptions from run_batch propagate after the clients stop.
void run_closed_loop(const ClosedLoopOptions& opt, const std::function<void(int64_t)>& run_batch,
                     ClosedLoopResult& acc);

}  // namespace shrink
