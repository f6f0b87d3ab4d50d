// Text generation on a DecoderModel: sampling (greedy, temperature, top-k, top-p, seeded), streaming
// callback, and the timings that `shrink generate` and `shrink bench` report.
#pragma once

#include <shrink/models/model.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace shrink {

struct SamplingOptions {
  float temperature = 0.f;  // 0: greedy (first maximum wins ties, as llama2.c)
  int top_k = 0;            // 0: off
  float top_p = 1.f;        // 1: off
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& opt) : opt_(opt), rng_(opt.seed) {}
  // Picks a token from logits[0..vocab) (modified in place when sampling).
  int32_t sample(float* logits, int64_t vocab);

 private:
  SamplingOptions opt_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
};

int32_t argmax(const float* x, int64_t n);

struct GenerateOptions {
  int max_new_tokens = 64;
  SamplingOptions sampling;
  bool stop_at_eos = true;
};

struct GenerateResult {
  std::vector<int32_t> ids;  // generated only
  std::string text;          // generated continuation only
  int prompt_tokens = 0;
  double prefill_ms = 0, ttft_ms = 0, tpot_ms = 0, tokens_per_s = 0, total_ms = 0;
};

// One sequence generated step by step: generate() runs it to the end; the server interleaves many sequences one
// token at a time (continuous batching). Holds the sequence's KV cache (prompt + max_new_tokens positions).
class TokenStream {
 public:
  // Validates the prompt against the context; `model` must outlive the stream.
  TokenStream(const DecoderModel& model, std::vector<int32_t> prompt, const GenerateOptions& opt);
  void prefill();  // feeds the prompt
  // Samples the next token from the last logits. False (and finished) at EOS or after max_new_tokens; otherwise
  // the token and the newly completed text (may be empty while a UTF-8 sequence is incomplete).
  bool next(int32_t& token, std::string& piece);
  void feed();  // feeds the token next() returned, unless it was the last one allowed
  // What prefill() or feed() would do, for many streams of one model in one DecoderModel::forward_batch: the prompt
  // of each stream not yet prefilled, the pending token of each other. Finished streams are left out, and so is a
  // stream whose last allowed token was taken (it is marked finished). scratch: work memory kept across steps by the
  // caller. Returns how many streams the forward ran (0: no forward).
  static size_t advance(const std::vector<TokenStream*>& streams, std::vector<float>& scratch);
  bool prefilled() const { return prefilled_; }
  bool finished() const { return finished_; }
  bool stopped_at_eos() const { return eos_; }
  const std::vector<int32_t>& ids() const { return ids_; }
  int prompt_tokens() const { return static_cast<int>(prompt_.size()); }
  std::string text() const;
  size_t kv_bytes() const { return cache_.kv_bytes(); }

 private:
  const DecoderModel& model_;
  GenerateOptions opt_;
  std::vector<int32_t> prompt_, ids_;
  KvCache cache_;
  std::vector<float> logits_;
  Sampler sampler_;
  std::string emitted_;
  bool finished_ = false, eos_ = false, prefilled_ = false;
};

// on_piece receives the newly completed text after each token (may be empty while a UTF-8
// sequence is incomplete).
GenerateResult generate(const DecoderModel& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                        const std::function<void(int32_t, const std::string&)>& on_piece = {});

}  // namespace shrink
