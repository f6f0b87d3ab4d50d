// Closed-loop throughput at a given concurrency: C client threads each send a request as soon as their previous one
// returned; the calling thread serves them through a Batcher (batches of up to C waiting requests, one forward each).
#pragma once

#include <shrink/bench/latency.h>
#include <shrink/models/model.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

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

// Decoders at concurrency C: C sequences of the same prompt, generated together as the server's continuous batch
// runs them (one TokenStream::advance per step: the prompts in one forward, then one forward of C rows per token).
// A request is one sequence: its latency is its whole generation. Adds to `acc`; ttft_ms gets the time to the
// first token of each round (every sequence's), step_ms the time of each decode step.
struct DecodeLevel {
  ClosedLoopResult loop;
  LatencyHistogram ttft_ms, step_ms;
  int64_t tokens = 0;
  double decode_seconds = 0;  // the steps after the prompts
  // ClosedLoopResult's fields plus {"tokens_per_s" (all sequences, decode steps only), "ttft_ms", "tpot_ms" (median
  // step), "ttft", "tpot"}
  nlohmann::json to_json() const;
};
void run_decode_level(const DecoderModel& model, const std::vector<int32_t>& prompt, int gen, int concurrency,
                      double seconds, int64_t max_rounds, DecodeLevel& acc);

}  // namespace shrink
