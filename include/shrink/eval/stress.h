// Stress sets derived deterministically from an eval set (typos, casing, truncation, out-of-vocabulary words) and
// the model's accuracy and agreement with its clean predictions on each.
#pragma once

#include <shrink/eval/classification.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace shrink {

enum class Perturbation {
  Typos,       // character swaps, drops and insertions at typo_rate per ASCII letter (at least one per text)
  Upper,       // every ASCII letter upper-cased
  RandomCase,  // every ASCII letter upper- or lower-cased at random
  Truncate,    // the first half of the words (rounded up) kept
  Oov,         // words replaced at oov_rate by random letter strings (at least one per text)
};

const std::vector<Perturbation>& all_perturbations();
const char* perturbation_name(Perturbation p);  // "typos", "upper", "random_case", "truncate", "oov"

struct StressOptions {
  uint64_t seed = 20240601;
  double typo_rate = 0.05;  // per ASCII letter
  double oov_rate = 0.25;   // per word
};

// The perturbed text. Deterministic in (seed, p, example): an example's result does not depend on the others, the
// machine or the standard library (own splitmix64 generator). Only ASCII letters and ASCII whitespace word breaks
// are touched, so UTF-8 text stays valid.
std::string perturb(std::string_view text, Perturbation p, const StressOptions& opt, uint64_t example);

struct StressResult {
  Perturbation perturbation = Perturbation::Typos;
  int64_t n = 0;
  int64_t changed = 0;  // texts the perturbation changed
  double accuracy = 0;
  double agreement_with_clean = 0;  // share of examples predicted as on the clean text
  double kld_to_clean = 0;          // mean KL(clean || perturbed) of the label distributions
};

// Runs the model on every perturbation of `texts`; `clean_logits` are the model's logits on the clean texts.
std::vector<StressResult> run_stress(const EncoderModel& model, const std::vector<std::string>& texts,
                                     const std::vector<int>& labels, const std::vector<float>& clean_logits,
                                     const StressOptions& opt, const RunOptions& run,
                                     const std::function<void(int64_t, int64_t)>& on_progress = {});

nlohmann::json to_json(const std::vector<StressResult>& r, const StressOptions& opt);

}  // namespace shrink
