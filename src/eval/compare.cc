// Base vs candidate: the perplexity protocol of eval/perplexity.h run on both over the same windows (one forward
// each), KL(base || candidate) and top-1 agreement per position; the same over labels for encoders.
#include <shrink/core/error.h>
#include <shrink/eval/compare.h>

#include <algorithm>
#include <cmath>

namespace shrink {

double kl_divergence_logits(const float* p_logits, const float* q_logits, int64_t n) {
  double pm = p_logits[0], qm = q_logits[0];
  for (int64_t i = 1; i < n; ++i) pm = std::max(pm, double{p_logits[i]}), qm = std::max(qm, double{q_logits[i]});
  double ps = 0, qs = 0;
  for (int64_t i = 0; i < n; ++i) ps += std::exp(p_logits[i] - pm), qs += std::exp(q_logits[i] - qm);
  const double p_lse = pm + std::log(ps), q_lse = qm + std::log(qs);
  double kl = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double lp = p_logits[i] - p_lse, lq = q_logits[i] - q_lse;
    kl += std::exp(lp) * (lp - lq);
  }
  return std::max(kl, 0.0);  // rounding can leave -1e-17 for identical inputs
}

namespace {

int64_t argmax(const float* x, int64_t n) {
  return std::max_element(x, x + n) - x;
}

void finish(PerplexityResult& r) {
  double sum = 0;
  for (double v : r.token_nll) sum += v;
  r.tokens = static_cast<int64_t>(r.token_nll.size());
  r.nll = r.tokens ? sum / static_cast<double>(r.tokens) : 0;
  r.ppl = std::exp(r.nll);
}

}  // namespace

DecoderComparison compare_decoders(const DecoderModel& base, const DecoderModel& cand, const std::vector<int32_t>& ids,
                                   int64_t ctx, const std::function<void(int64_t, int64_t)>& on_window,
                                   bool decode_steps) {
  const int64_t vocab = base.config().vocab_size;
  if (cand.config().vocab_size != vocab)
    fail("compare: the base has a vocabulary of {} tokens and the candidate {} ({}); compare models of one family",
         vocab, cand.config().vocab_size, cand.source().string());
  const int64_t max_ctx = std::min(base.max_context(), cand.max_context());
  if (ctx <= 0) ctx = max_ctx;
  check(ctx >= 2, "compare: context must be at least 2 tokens, got {}", ctx);
  if (ctx > max_ctx) fail("compare: --ctx {} exceeds the models' context of {} tokens", ctx, max_ctx);
  check(ids.size() >= 2, "compare: the text gives {} token(s); at least 2 are needed to score one prediction",
        ids.size());
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t windows = (n + ctx - 1) / ctx;
  DecoderComparison r;
  KvCache cb = base.new_cache(ctx), cc = cand.new_cache(ctx);
  std::vector<float> lb, lc;
  double kld_sum = 0;
  int64_t agree = 0;
  for (int64_t w = 0; w < windows; ++w) {
    const int64_t begin = w * ctx, len = std::min(ctx, n - begin);
    if (len < 2) break;
    cb.reset();
    cc.reset();
    lb.resize(static_cast<size_t>(len * vocab));
    lc.resize(static_cast<size_t>(len * vocab));
    if (decode_steps) {
      for (int64_t j = 0; j < len; ++j) {
        base.forward(cb, ids.data() + begin + j, 1, lb.data() + j * vocab, true);
        cand.forward(cc, ids.data() + begin + j, 1, lc.data() + j * vocab, true);
      }
    } else {
      base.forward(cb, ids.data() + begin, len, lb.data(), true);
      cand.forward(cc, ids.data() + begin, len, lc.data(), true);
    }
    // Position j predicts token j+1: the same positions perplexity scores.
    for (int64_t j = 0; j + 1 < len; ++j) {
      const float* pb = &lb[j * vocab];
      const float* pc = &lc[j * vocab];
      r.base.token_nll.push_back(token_nll(pb, vocab, ids[begin + j + 1]));
      r.candidate.token_nll.push_back(token_nll(pc, vocab, ids[begin + j + 1]));
      const double kl = kl_divergence_logits(pb, pc, vocab);
      kld_sum += kl;
      r.kld_max = std::max(r.kld_max, kl);
      agree += argmax(pb, vocab) == argmax(pc, vocab);
      ++r.positions;
    }
    ++r.base.windows;
    ++r.candidate.windows;
    if (on_window) on_window(w + 1, windows);
  }
  finish(r.base);
  finish(r.candidate);
  r.kld = kld_sum / static_cast<double>(r.positions);
  r.top1_agreement = static_cast<double>(agree) / static_cast<double>(r.positions);
  return r;
}

EncoderComparison compare_encoders(const EncoderModel& base, const EncoderModel& cand, const LabeledText& data,
                                   int max_length, int batch, const std::function<void(int64_t, int64_t)>& on_batch) {
  for (const EncoderModel* m : {&base, &cand})
    if (!m->has_classifier())
      fail("{}: {} has no classification head; compare --data needs ...ForSequenceClassification models",
           m->source().string(), m->config().architecture);
  const int labels = base.config().num_labels;
  if (cand.config().num_labels != labels)
    fail("compare: the base has {} labels and the candidate {} ({}); compare models of one task", labels,
         cand.config().num_labels, cand.source().string());
  check(!data.texts.empty(), "compare: the data file has no examples");
  check(batch > 0, "compare: batch must be positive, got {}", batch);
  const Tokenizer& tb = base.require_tokenizer();
  const Tokenizer& tc = cand.require_tokenizer();
  EncodeOptions eo;
  eo.max_length = std::min({max_length, base.config().max_position_embeddings, cand.config().max_position_embeddings});
  std::vector<int> pb, pc;
  double kld_sum = 0;
  const size_t total = data.texts.size();
  for (size_t i = 0; i < total; i += static_cast<size_t>(batch)) {
    std::vector<std::string> chunk(data.texts.begin() + static_cast<std::ptrdiff_t>(i),
                                   data.texts.begin() + static_cast<std::ptrdiff_t>(std::min(total, i + batch)));
    const EncoderOutput ob = base.forward(tb.encode_batch(chunk, eo));
    const EncoderOutput oc = cand.forward(tc.encode_batch(chunk, eo));
    for (size_t r = 0; r < chunk.size(); ++r) {
      const float* lb = ob.logits.data<float>() + r * labels;
      const float* lc = oc.logits.data<float>() + r * labels;
      pb.push_back(static_cast<int>(argmax(lb, labels)));
      pc.push_back(static_cast<int>(argmax(lc, labels)));
      kld_sum += kl_divergence_logits(lb, lc, labels);
    }
    if (on_batch) on_batch(static_cast<int64_t>(pb.size()), static_cast<int64_t>(total));
  }
  EncoderComparison r;
  r.n = static_cast<int64_t>(pb.size());
  r.base = classification_metrics(pb, data.labels, labels);
  r.candidate = classification_metrics(pc, data.labels, labels);
  int64_t agree = 0;
  for (size_t i = 0; i < pb.size(); ++i) agree += pb[i] == pc[i];
  r.kld = kld_sum / static_cast<double>(r.n);
  r.top1_agreement = static_cast<double>(agree) / static_cast<double>(r.n);
  return r;
}

}  // namespace shrink
