// The forward passes every decoder shares (models/model.h): embed -> block for every layer -> head, for one
// sequence (forward, run_block, head) or several at once (forward_batch). Architectures implement embed, block and
// head_rows on rows that may belong to different sequences.
#include <shrink/core/error.h>
#include <shrink/models/model.h>

#include <algorithm>
#include <cstring>

namespace shrink {

void DecoderModel::forward(KvCache& cache, const int32_t* tokens, int64_t n, float* logits, bool all_logits) const {
  check_forward(cache, tokens, n);
  const int64_t d = config_.hidden_size;
  const size_t need = static_cast<size_t>(n) * (d + block_scratch_per_row());
  if (cache.scratch.size() < need) cache.scratch.resize(need);
  float* x = cache.scratch.data();
  float* work = x + n * d;
  const std::vector<SeqTokens> seq{{&cache, tokens, n}};
  embed(tokens, n, cache.pos, x);
  for (int li = 0; li < config_.num_layers; ++li) block(li, seq, x, n, work);
  cache.pos += n;
  if (all_logits) {
    head_rows(x, n, logits, work);
  } else {
    head_rows(x + (n - 1) * d, 1, logits, work);
  }
}

void DecoderModel::forward_batch(const std::vector<SeqTokens>& seqs, float* logits, std::vector<float>& scratch) const {
  if (seqs.empty()) return;
  int64_t n = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    check(seqs[i].cache != nullptr, "forward_batch: sequence {} has no KV cache", i);
    for (size_t j = 0; j < i; ++j)
      check(seqs[j].cache != seqs[i].cache,
            "forward_batch: sequences {} and {} share one KV cache; each sequence needs its own", j, i);
    check_forward(*seqs[i].cache, seqs[i].tokens, seqs[i].n);
    n += seqs[i].n;
  }
  const int64_t d = config_.hidden_size, b = static_cast<int64_t>(seqs.size());
  // x: all rows; work: the blocks' scratch, later the head's; last: each sequence's last row for the head.
  const size_t need = static_cast<size_t>(n) * (d + block_scratch_per_row()) + static_cast<size_t>(b * d);
  if (scratch.size() < need) scratch.resize(need);
  float* x = scratch.data();
  float* last = x + n * d;
  float* work = last + b * d;
  int64_t r = 0;
  for (const SeqTokens& s : seqs) {
    embed(s.tokens, s.n, s.cache->pos, x + r * d);
    r += s.n;
  }
  for (int li = 0; li < config_.num_layers; ++li) block(li, seqs, x, n, work);
  r = 0;
  for (int64_t i = 0; i < b; ++i) {
    const SeqTokens& s = seqs[static_cast<size_t>(i)];
    s.cache->pos += s.n;
    r += s.n;
    std::memcpy(last + i * d, x + (r - 1) * d, sizeof(float) * d);
  }
  head_rows(last, b, logits, work);
}

void DecoderModel::run_block(int i, KvCache& cache, float* hidden, int64_t n) const {
  check(i >= 0 && i < config_.num_layers, "run_block: block {} of a {}-block model", i, config_.num_layers);
  check(cache.pos + n <= cache.max_seq, "run_block: {} rows at position {} overflow a cache of {}", n, cache.pos,
        cache.max_seq);
  const size_t need = static_cast<size_t>(n) * block_scratch_per_row();
  if (cache.scratch.size() < need) cache.scratch.resize(need);
  block(i, {{&cache, nullptr, n}}, hidden, n, cache.scratch.data());
}

void DecoderModel::head(const float* hidden, int64_t n, float* logits) const {
  std::vector<float> work(static_cast<size_t>(n * config_.hidden_size));
  head_rows(hidden, n, logits, work.data());
}

}  // namespace shrink
