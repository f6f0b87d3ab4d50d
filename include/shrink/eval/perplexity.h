// Perplexity of a decoder over token ids: non-overlapping windows of `ctx` tokens, each from a fresh
// cache; in a window the logits at position j score token j+1 (the llama2.c reference protocol).
#pragma once

#include <shrink/models/model.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace shrink {

struct PerplexityResult {
  double ppl = 0, nll = 0;  // exp(mean NLL), mean NLL in nats
  int64_t tokens = 0;       // predictions scored
  int64_t windows = 0;
  std::vector<double> token_nll;
};

// ctx <= 0: the model's context. `on_window(done, total)` reports progress.
PerplexityResult perplexity(const DecoderModel& model, const std::vector<int32_t>& ids, int64_t ctx,
                            const std::function<void(int64_t, int64_t)>& on_window = {});

// NLL = logsumexp(logits) - logits[target], in double.
double token_nll(const float* logits, int64_t vocab, int32_t target);

}  // namespace shrink
