// One model variant's scheduler: a bounded queue and one worker thread that runs the model. Encoders: dynamic
// batching (up to max_batch requests, or whatever arrived within batch_wait_ms of the first). Decoders: continuous
// batching: sequences join and leave the running set at token boundaries; each step advances every running
// sequence by one token and runs the prompts of the sequences that join in the same batched forward
// (DecoderModel::forward_batch: the linears run once over all rows, attention per sequence against its own KV
// cache), and a new sequence is admitted only when its worst-case KV cache fits in kv_budget_bytes.
// Every forward of every variant holds the server's engine mutex: the engine has one OpenMP pool.
#pragma once

#include <shrink/models/generate.h>
#include <shrink/serve/api.h>
#include <shrink/serve/metrics.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace shrink::serve {

using Clock = std::chrono::steady_clock;

struct WorkerOptions {
  int max_batch = 8;
  double batch_wait_ms = 2;
  int max_queue = 64;  // waiting requests (not yet started); more are refused (429)
  size_t kv_budget_bytes = 1ull << 30;
  int max_length = 128;  // classify: tokens per text (special tokens included)
  // Tests only: runs on the worker thread (no lock held) before each encoder batch or decoder step, so a test can
  // hold the worker still and fill its queue deterministically.
  std::function<void()> step_hook;
};

struct ClassifyOutcome {
  std::optional<ApiError> error;
  std::vector<int> labels;
  std::vector<std::vector<float>> probabilities;
  std::vector<int32_t> tokens;  // per text, after truncation
};
struct ClassifyJob {
  std::vector<std::string> texts;
  Clock::time_point deadline = Clock::time_point::max();  // not started by then: 504
  std::function<void(ClassifyOutcome)> done;              // called once, on the worker thread
};

struct GenerateOutcome {
  std::optional<ApiError> error;
  std::vector<int32_t> ids;
  std::string text, finish_reason;  // "stop" (EOS) or "length"
  int prompt_tokens = 0;
  double ttft_ms = 0, tpot_ms = 0;  // from submission; per output token after the first
};
struct GenerateJob {
  std::vector<int32_t> prompt;
  GenerateOptions options;
  Clock::time_point deadline = Clock::time_point::max();
  std::function<void(int32_t, const std::string&)> on_token;  // optional, on the worker thread
  std::function<void(GenerateOutcome)> done;
  std::shared_ptr<std::atomic<bool>> cancelled;  // optional: set when the client went away
};

class ModelWorker {
 public:
  ModelWorker(std::string variant, std::shared_ptr<Model> model, WorkerOptions options, std::mutex& engine,
              Metrics& metrics);
  ~ModelWorker();  // finishes every queued and running request, then joins
  ModelWorker(const ModelWorker&) = delete;
  ModelWorker& operator=(const ModelWorker&) = delete;

  // False when the queue is full (the caller answers 429). The job must fit the model's kind.
  bool submit(ClassifyJob job);
  bool submit(GenerateJob job);
  // Worst-case KV bytes of a generation (prompt + max new tokens), for admission.
  size_t kv_bytes_needed(size_t prompt_tokens, int max_new_tokens) const;

  // Requests already running keep the model they started with; new ones get `model`.
  void swap_model(std::shared_ptr<Model> model);
  std::shared_ptr<Model> model() const;
  const std::string& variant() const { return variant_; }
  const WorkerOptions& options() const { return options_; }
  size_t queue_depth() const;

 private:
  struct Sequence;
  void run();
  void run_encoder_batch(std::unique_lock<std::mutex>& lock);
  void run_decoder_step(std::unique_lock<std::mutex>& lock);
  // Sequences that left the running set this step, with the error that ended them (none: finished normally).
  using Ended = std::vector<std::pair<std::unique_ptr<Sequence>, std::optional<ApiError>>>;
  // One TokenStream::advance per model over the given sequences; ended ones are moved out (their slot left null).
  // Returns how many sequences the forwards ran.
  size_t advance_sequences(std::vector<std::unique_ptr<Sequence>*>& step, Ended& ended);
  void update_gauges();

  std::string variant_;
  WorkerOptions options_;
  std::mutex& engine_;
  Metrics& metrics_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<Model> model_;
  struct QueuedClassify {
    ClassifyJob job;
    Clock::time_point submitted;
  };
  std::deque<QueuedClassify> classify_queue_;
  struct QueuedGeneration {
    GenerateJob job;
    Clock::time_point submitted;
  };
  std::deque<QueuedGeneration> generate_queue_;
  std::vector<std::unique_ptr<Sequence>> running_;  // worker thread only
  std::vector<float> scratch_;                      // the batched forward's work memory, worker thread only
  size_t kv_in_use_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace shrink::serve
