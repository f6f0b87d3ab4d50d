// Closed-loop driver: client threads only submit and wait; the caller's thread runs every forward.
#include <shrink/bench/batcher.h>
#include <shrink/bench/concurrency.h>
#include <shrink/core/timer.h>
#include <shrink/models/generate.h>

#include <algorithm>
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

nlohmann::json DecodeLevel::to_json() const {
  nlohmann::json j = loop.to_json();
  j["tokens_per_s"] = decode_seconds > 0 ? static_cast<double>(tokens) / decode_seconds : 0;
  j["ttft_ms"] = ttft_ms.percentile(0.5);
  j["tpot_ms"] = step_ms.percentile(0.5);
  j["ttft"] = ttft_ms.summary_json();
  j["tpot"] = step_ms.summary_json();
  return j;
}

void run_decode_level(const DecoderModel& model, const std::vector<int32_t>& prompt, int gen, int concurrency,
                      double seconds, int64_t max_rounds, DecodeLevel& acc) {
  check(concurrency >= 1, "--concurrency: expected levels >= 1, got {}", concurrency);
  acc.loop.concurrency = concurrency;
  GenerateOptions g;
  g.max_new_tokens = gen;
  g.stop_at_eos = false;
  std::vector<float> scratch;
  Timer wall;
  for (int64_t round = 0; max_rounds > 0 ? round < max_rounds : (round == 0 || wall.elapsed_ms() < seconds * 1000);
       ++round) {
    std::vector<std::unique_ptr<TokenStream>> owned;
    std::vector<TokenStream*> streams;
    for (int c = 0; c < concurrency; ++c) {
      owned.push_back(std::make_unique<TokenStream>(model, prompt, g));
      streams.push_back(owned.back().get());
    }
    Timer t;
    TokenStream::advance(streams, scratch);
    acc.ttft_ms.add(t.elapsed_ms());
    // The first tokens come from the prompts' logits; each later one from a decode step, which is what is timed.
    int32_t token = 0;
    std::string piece;
    for (TokenStream* s : streams) s->next(token, piece);
    Timer decode;
    for (;;) {
      Timer step;
      TokenStream::advance(streams, scratch);
      if (std::all_of(streams.begin(), streams.end(), [](const TokenStream* s) { return s->finished(); })) break;
      for (TokenStream* s : streams)
        if (s->next(token, piece)) ++acc.tokens;
      acc.step_ms.add(step.elapsed_ms());
    }
    acc.decode_seconds += decode.elapsed_ms() / 1000;
    const double ms = t.elapsed_ms();
    for (int c = 0; c < concurrency; ++c) acc.loop.latency.add(ms);
    acc.loop.requests += concurrency;
    acc.loop.batches += 1;
    acc.loop.seconds += ms / 1000;
  }
}

}  // namespace shrink
