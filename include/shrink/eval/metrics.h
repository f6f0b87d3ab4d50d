// Pure classification metrics shared by eval, compare, recipes, sweeps and the server: per-class precision/recall/
// F1, expected calibration error, mean NLL, KL divergence of distributions, and segment assignment (length buckets).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shrink {

struct ClassMetrics {
  double precision = 0, recall = 0, f1 = 0;  // 0 when undefined (no predictions / no examples of the class)
  int64_t support = 0;                       // examples whose true label is this class
  int64_t predicted = 0;                     // examples predicted as this class
};

// From a confusion matrix [true][predicted].
std::vector<ClassMetrics> per_class_metrics(const std::vector<std::vector<int64_t>>& confusion);

// Softmax of each row of `logits` ([n][classes]) in double arithmetic, stored as float.
std::vector<float> softmax_rows(const float* logits, int64_t n, int classes);

// Expected calibration error with `bins` equal-width confidence bins over (0, 1] (bin b holds confidences in
// (b/bins, (b+1)/bins], a confidence of exactly 0 goes to the first): sum over bins of |bin| / n * |accuracy(bin) -
// mean confidence(bin)|. `confidence[i]` is the probability of the predicted class, `correct[i]` whether it is right.
double expected_calibration_error(const std::vector<double>& confidence, const std::vector<uint8_t>& correct,
                                  int bins = 15);

// KL(P || Q) = sum p_i ln(p_i / q_i) in nats of two probability vectors of n entries; terms with p_i = 0 are 0;
// q_i = 0 where p_i > 0 gives +infinity.
double kl_divergence(const double* p, const double* q, int64_t n);

// Token-count buckets: edges e_1 < ... < e_k give k + 1 buckets (0, e_1], (e_1, e_2], ..., (e_k, inf), named
// "1-e1", "e1+1-e2", ..., "ek+1+". Empty edges: one bucket "all".
struct LengthBuckets {
  std::vector<int64_t> edges;
  std::vector<std::string> names() const;
  int bucket_of(int64_t length) const;
};

// Edges at the 1/k, 2/k, ... quantiles of `lengths` (k buckets, duplicates merged), so buckets hold about equal
// numbers of examples.
LengthBuckets length_buckets_from_quantiles(std::vector<int64_t> lengths, int k = 4);
// "8,16,32" -> edges {8, 16, 32}; throws naming the text unless strictly increasing positive integers.
LengthBuckets parse_length_buckets(const std::string& text);

// Groups example indices by segment value, keeping the values in order of first appearance (or of `order` when
// given: values listed there come first, in that order).
struct Segments {
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> members;  // members[s]: example indices of segment s, ascending
};
Segments group_by(const std::vector<std::string>& value_of_example, const std::vector<std::string>& order = {});

}  // namespace shrink
