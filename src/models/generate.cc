// Sampling and the generation loop (prefill the prompt in one pass, then one token per step).
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/models/generate.h>

#include <algorithm>
#include <cmath>

namespace shrink {

int32_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return static_cast<int32_t>(best);
}

int32_t Sampler::sample(float* logits, int64_t vocab) {
  if (opt_.temperature <= 0.f) return argmax(logits, vocab);
  cand_.clear();
  float mx = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, logits[i]);
  for (int64_t i = 0; i < vocab; ++i)
    cand_.emplace_back(std::exp((logits[i] - mx) / opt_.temperature), static_cast<int32_t>(i));
  auto by_prob = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = cand_.size();
  if (opt_.top_k > 0 && static_cast<size_t>(opt_.top_k) < keep) {
    keep = static_cast<size_t>(opt_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), by_prob);
  } else if (opt_.top_p < 1.f) {
    std::sort(cand_.begin(), cand_.end(), by_prob);
  }
  cand_.resize(keep);
  double total = 0;
  for (auto& c : cand_) total += c.first;
  if (opt_.top_p < 1.f) {
    if (!std::is_sorted(cand_.begin(), cand_.end(), by_prob)) std::sort(cand_.begin(), cand_.end(), by_prob);
    double cum = 0;
    size_t n = 0;
    while (n < cand_.size()) {
      cum += cand_[n++].first;
      if (cum >= opt_.top_p * total) break;
    }
    cand_.resize(n);
    total = cum;
  }
  std::uniform_real_distribution<double> u(0.0, total);
  double r = u(rng_), acc = 0;
  for (auto& c : cand_) {
    acc += c.first;
    if (r < acc) return c.second;
  }
  return cand_.back().second;
}

namespace {

// Length of the longest prefix of s that ends on a complete UTF-8 sequence.
size_t complete_utf8_prefix(const std::string& s) {
  size_t n = s.size();
  size_t i = n;
  int back = 0;
  while (i > 0 && back < 4) {
    const unsigned char c = static_cast<unsigned char>(s[i - 1]);
    if ((c & 0xC0) != 0x80) {  // lead byte or ASCII
      const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
      return (n - (i - 1) >= len) ? n : i - 1;
    }
    --i;
    ++back;
  }
  return n;
}

}  // namespace

TokenStream::TokenStream(const DecoderModel& model, std::vector<int32_t> prompt, const GenerateOptions& opt)
    : model_(model), opt_(opt), prompt_(std::move(prompt)), sampler_(opt.sampling) {
  check(!prompt_.empty(), "the prompt is empty: give at least one token (text, or a BOS token)");
  const int64_t ctx = model.max_context();
  if (static_cast<int64_t>(prompt_.size()) + opt.max_new_tokens > ctx)
    fail(
        "prompt of {} tokens + {} new tokens exceeds the model's context of {} tokens; shorten the prompt or "
        "lower -n",
        prompt_.size(), opt.max_new_tokens, ctx);
  cache_ = model.new_cache(static_cast<int64_t>(prompt_.size()) + opt.max_new_tokens);
  logits_.resize(model.config().vocab_size);
}

void TokenStream::prefill() {
  model_.forward(cache_, prompt_.data(), static_cast<int64_t>(prompt_.size()), logits_.data(), false);
  prefilled_ = true;
}

bool TokenStream::next(int32_t& token, std::string& piece) {
  piece.clear();
  if (finished_ || static_cast<int>(ids_.size()) >= opt_.max_new_tokens) return !(finished_ = true);
  token = sampler_.sample(logits_.data(), static_cast<int64_t>(logits_.size()));
  const Tokenizer* tok = model_.tokenizer();
  if (opt_.stop_at_eos && tok && tok->eos_id() >= 0 && token == tok->eos_id()) return !(finished_ = eos_ = true);
  ids_.push_back(token);
  if (tok) {
    const std::string full = tok->decode(ids_);
    const size_t ok = complete_utf8_prefix(full);
    if (ok > emitted_.size()) {
      piece = full.substr(emitted_.size(), ok - emitted_.size());
      emitted_ = full.substr(0, ok);
    }
  }
  return true;
}

void TokenStream::feed() {
  if (static_cast<int>(ids_.size()) >= opt_.max_new_tokens) {
    finished_ = true;
    return;
  }
  model_.forward(cache_, &ids_.back(), 1, logits_.data(), false);
}

size_t TokenStream::advance(const std::vector<TokenStream*>& streams, std::vector<float>& scratch) {
  std::vector<TokenStream*> run;
  std::vector<SeqTokens> seqs;
  for (TokenStream* s : streams) {
    if (s->finished_) continue;
    if (s->prefilled_) {
      check(!s->ids_.empty(), "TokenStream::advance: a prefilled stream has no pending token (call next() first)");
      if (static_cast<int>(s->ids_.size()) >= s->opt_.max_new_tokens) {
        s->finished_ = true;
        continue;
      }
      seqs.push_back({&s->cache_, &s->ids_.back(), 1});
    } else {
      seqs.push_back({&s->cache_, s->prompt_.data(), static_cast<int64_t>(s->prompt_.size())});
    }
    check(run.empty() || &s->model_ == &run.front()->model_, "TokenStream::advance: streams of different models");
    run.push_back(s);
  }
  if (run.empty()) return 0;
  const int64_t vocab = static_cast<int64_t>(run.front()->logits_.size());
  thread_local std::vector<float> logits;  // kept across steps: a decode step allocates nothing
  logits.resize(run.size() * static_cast<size_t>(vocab));
  run.front()->model_.forward_batch(seqs, logits.data(), scratch);
  for (size_t i = 0; i < run.size(); ++i) {
    std::copy_n(logits.data() + i * vocab, vocab, run[i]->logits_.data());
    run[i]->prefilled_ = true;
  }
  return run.size();
}

std::string TokenStream::text() const {
  const Tokenizer* tok = model_.tokenizer();
  return tok ? tok->decode(ids_) : std::string();
}

GenerateResult generate(const DecoderModel& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                        const std::function<void(int32_t, const std::string&)>& on_piece) {
  TokenStream stream(model, prompt, opt);
  GenerateResult r;
  r.prompt_tokens = stream.prompt_tokens();
  Timer total;
  stream.prefill();
  r.prefill_ms = total.elapsed_ms();
  int32_t token = 0;
  std::string piece;
  for (bool first = true;; first = false) {
    const bool more = stream.next(token, piece);
    if (first) r.ttft_ms = total.elapsed_ms();
    if (!more) break;
    if (on_piece) on_piece(token, piece);
    stream.feed();
  }
  r.ids = stream.ids();
  r.total_ms = total.elapsed_ms();
  r.text = stream.text();
  const double decode_ms = r.total_ms - r.ttft_ms;
  const size_t steps = r.ids.size() > 1 ? r.ids.size() - 1 : 0;
  r.tpot_ms = steps ? decode_ms / static_cast<double>(steps) : 0;
  r.tokens_per_s = r.tpot_ms > 0 ? 1000.0 / r.tpot_ms : 0;
  return r;
}

}  // namespace shrink
