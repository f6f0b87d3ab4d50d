// Comparing a candidate (compressed) model with its base on the same inputs: perplexity or accuracy of both, mean
// KL divergence of the candidate's next-token (or label) distribution from the base's, and top-1 agreement.
#pragma once

#include <shrink/eval/classification.h>
#include <shrink/eval/perplexity.h>
#include <shrink/models/model.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace shrink {

// KL(P || Q) in nats of P = softmax(p_logits), Q = softmax(q_logits) over n classes, in double.
double kl_divergence_logits(const float* p_logits, const float* q_logits, int64_t n);

struct DecoderComparison {
  PerplexityResult base, candidate;  // the windowed protocol of eval/perplexity.h on the same windows
  double kld = 0;                    // mean over scored positions of KL(base || candidate)
  double kld_max = 0;
  double top1_agreement = 0;  // share of positions where both argmaxes agree
  int64_t positions = 0;
};

// Both models must share the vocabulary. ctx <= 0: the smaller of the two contexts.
// decode_steps: every window runs one token per forward (the decode path, its GEMV kernels and KV-cache appends, as
// generation runs) instead of one whole-window forward (the prefill GEMMs); the same positions are scored.
DecoderComparison compare_decoders(const DecoderModel& base, const DecoderModel& candidate,
                                   const std::vector<int32_t>& ids, int64_t ctx,
                                   const std::function<void(int64_t, int64_t)>& on_window = {},
                                   bool decode_steps = false);

struct EncoderComparison {
  ClassificationMetrics base, candidate;
  double kld = 0;             // mean over examples of KL(base || candidate) of the label distributions
  double top1_agreement = 0;  // share of examples with the same predicted label
  int64_t n = 0;
};

EncoderComparison compare_encoders(const EncoderModel& base, const EncoderModel& candidate, const LabeledText& data,
                                   int max_length = 128, int batch = 32,
                                   const std::function<void(int64_t, int64_t)>& on_batch = {});

}  // namespace shrink
