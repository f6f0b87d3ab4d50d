// Perplexity by the windowed protocol of include/shrink/eval/perplexity.h.
#include <shrink/core/error.h>
#include <shrink/eval/perplexity.h>

#include <algorithm>
#include <cmath>

namespace shrink {

double token_nll(const float* logits, int64_t vocab, int32_t target) {
  double mx = logits[0];
  for (int64_t i = 1; i < vocab; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  return mx + std::log(sum) - static_cast<double>(logits[target]);
}

PerplexityResult perplexity(const DecoderModel& model, const std::vector<int32_t>& ids, int64_t ctx,
                            const std::function<void(int64_t, int64_t)>& on_window) {
  if (ctx <= 0) ctx = model.max_context();
  check(ctx >= 2, "perplexity: context must be at least 2 tokens, got {}", ctx);
  if (ctx > model.max_context())
    fail("perplexity: --ctx {} exceeds the model's context of {} tokens", ctx, model.max_context());
  check(ids.size() >= 2, "perplexity: the text gives {} token(s); at least 2 are needed to score one prediction",
        ids.size());
  const int64_t vocab = model.config().vocab_size;
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t windows = (n + ctx - 1) / ctx;
  PerplexityResult r;
  KvCache cache = model.new_cache(ctx);
  std::vector<float> logits;
  for (int64_t w = 0; w < windows; ++w) {
    const int64_t begin = w * ctx, len = std::min(ctx, n - begin);
    if (len < 2) break;
    cache.reset();
    logits.resize(static_cast<size_t>(len) * vocab);
    model.forward(cache, ids.data() + begin, len, logits.data(), true);
    for (int64_t j = 0; j + 1 < len; ++j)
      r.token_nll.push_back(token_nll(&logits[j * vocab], vocab, ids[begin + j + 1]));
    ++r.windows;
    if (on_window) on_window(w + 1, windows);
  }
  double sum = 0;
  for (double v : r.token_nll) sum += v;
  r.tokens = static_cast<int64_t>(r.token_nll.size());
  r.nll = sum / static_cast<double>(r.tokens);
  r.ppl = std::exp(r.nll);
  return r;
}

}  // namespace shrink
