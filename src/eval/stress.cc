// Seeded text perturbations and the stress evaluation of include/shrink/eval/stress.h.
#include <shrink/core/error.h>
#include <shrink/eval/compare.h>
#include <shrink/eval/evaluate.h>
#include <shrink/eval/stress.h>

#include <algorithm>

namespace shrink {

namespace {

// splitmix64: tiny, well mixed, and the same everywhere (std:: distributions are not specified bit for bit).
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  uint64_t below(uint64_t n) { return next() % n; }
  char letter() { return static_cast<char>('a' + below(26)); }
};

Rng rng_for(const StressOptions& opt, Perturbation p, uint64_t example) {
  Rng r{opt.seed ^ (static_cast<uint64_t>(p) + 1) * 0xD1B54A32D192ED03ull};
  r.state ^= r.next() + example * 0x9E3779B97F4A7C15ull;
  r.next();
  return r;
}

bool is_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
char to_upper(char c) {
  return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
}
char to_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(text[i])) ++i;
    const size_t start = i;
    while (i < text.size() && !is_space(text[i])) ++i;
    if (i > start) words.emplace_back(text.substr(start, i - start));
  }
  return words;
}

std::string join_words(const std::vector<std::string>& words) {
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) out += (i ? " " : "") + words[i];
  return out;
}

// Chooses which of `count` candidates to edit: each at `rate`, and one at random when none was drawn.
std::vector<uint8_t> pick(Rng& rng, size_t count, double rate) {
  std::vector<uint8_t> chosen(count, 0);
  bool any = false;
  for (size_t i = 0; i < count; ++i) any |= (chosen[i] = rng.uniform() < rate) != 0;
  if (!any && count) chosen[rng.below(count)] = 1;
  return chosen;
}

std::string typos(std::string_view text, Rng& rng, double rate) {
  std::vector<size_t> letters;
  for (size_t i = 0; i < text.size(); ++i)
    if (is_letter(text[i])) letters.push_back(i);
  const std::vector<uint8_t> chosen = pick(rng, letters.size(), rate);
  std::vector<uint8_t> edit_at(text.size(), 0);
  for (size_t k = 0; k < letters.size(); ++k) edit_at[letters[k]] = chosen[k];
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (!edit_at[i]) {
      out += text[i];
      continue;
    }
    switch (rng.below(3)) {
      case 0:  // swap with the next letter when it differs (a swap of equal letters would change nothing)
        if (i + 1 < text.size() && is_letter(text[i + 1]) && text[i + 1] != text[i]) {
          out += text[i + 1];
          out += text[i];
          ++i;
          break;
        }
        [[fallthrough]];
      case 1:  // drop
        break;
      default:  // insert a random letter before it
        out += rng.letter();
        out += text[i];
    }
  }
  return out;
}

std::string oov(std::string_view text, Rng& rng, double rate) {
  std::vector<std::string> words = split_words(text);
  const std::vector<uint8_t> chosen = pick(rng, words.size(), rate);
  for (size_t w = 0; w < words.size(); ++w) {
    if (!chosen[w]) continue;
    // At least 4 letters: random short strings are too often real words ("a", "to").
    const size_t len = std::max<size_t>(4, words[w].size());
    std::string s;
    for (size_t k = 0; k < len; ++k) s += rng.letter();
    words[w] = s;
  }
  return join_words(words);
}

}  // namespace

const std::vector<Perturbation>& all_perturbations() {
  static const std::vector<Perturbation> all = {Perturbation::Typos, Perturbation::Upper, Perturbation::RandomCase,
                                                Perturbation::Truncate, Perturbation::Oov};
  return all;
}

const char* perturbation_name(Perturbation p) {
  switch (p) {
    case Perturbation::Typos: return "typos";
    case Perturbation::Upper: return "upper";
    case Perturbation::RandomCase: return "random_case";
    case Perturbation::Truncate: return "truncate";
    case Perturbation::Oov: return "oov";
  }
  return "?";
}

std::string perturb(std::string_view text, Perturbation p, const StressOptions& opt, uint64_t example) {
  check(opt.typo_rate >= 0 && opt.typo_rate <= 1, "stress: typo rate {} is outside [0, 1]", opt.typo_rate);
  check(opt.oov_rate >= 0 && opt.oov_rate <= 1, "stress: OOV rate {} is outside [0, 1]", opt.oov_rate);
  Rng rng = rng_for(opt, p, example);
  std::string out(text);
  switch (p) {
    case Perturbation::Typos: return typos(text, rng, opt.typo_rate);
    case Perturbation::Upper:
      for (char& c : out) c = to_upper(c);
      return out;
    case Perturbation::RandomCase:
      for (char& c : out)
        if (is_letter(c)) c = rng.below(2) ? to_upper(c) : to_lower(c);
      return out;
    case Perturbation::Truncate: {
      std::vector<std::string> words = split_words(text);
      words.resize((words.size() + 1) / 2);
      return join_words(words);
    }
    case Perturbation::Oov: return oov(text, rng, opt.oov_rate);
  }
  return out;
}

std::vector<StressResult> run_stress(const EncoderModel& model, const std::vector<std::string>& texts,
                                     const std::vector<int>& labels, const std::vector<float>& clean_logits,
                                     const StressOptions& opt, const RunOptions& run,
                                     const std::function<void(int64_t, int64_t)>& on_progress) {
  const int k = model.config().num_labels;
  check(clean_logits.size() == texts.size() * static_cast<size_t>(k) && labels.size() == texts.size(),
        "stress: {} texts, {} labels and {} clean logits of {} labels do not match", texts.size(), labels.size(),
        clean_logits.size(), k);
  const auto& perts = all_perturbations();
  const int64_t total = static_cast<int64_t>(texts.size() * perts.size());
  std::vector<StressResult> out;
  for (size_t pi = 0; pi < perts.size(); ++pi) {
    StressResult r;
    r.perturbation = perts[pi];
    std::vector<std::string> stressed;
    stressed.reserve(texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      stressed.push_back(perturb(texts[i], perts[pi], opt, i));
      r.changed += stressed.back() != texts[i];
    }
    const int64_t done_before = static_cast<int64_t>(pi * texts.size());
    const ClassifierRun cr = run_classifier(model, stressed, run, [&](int64_t d, int64_t) {
      if (on_progress) on_progress(done_before + d, total);
    });
    // The clean run is the "baseline" of the stressed one: agreement and KL(clean || stressed) come out directly.
    const ClassificationSummary s = summarize_classification(cr.logits, labels, k, {}, &clean_logits);
    r.n = s.n;
    r.accuracy = s.accuracy;
    r.agreement_with_clean = s.top1_agreement;
    r.kld_to_clean = s.kld;
    out.push_back(r);
  }
  return out;
}

nlohmann::json to_json(const std::vector<StressResult>& r, const StressOptions& opt) {
  nlohmann::json j = {{"seed", opt.seed}, {"typo_rate", opt.typo_rate}, {"oov_rate", opt.oov_rate}};
  for (const StressResult& s : r)
    j[perturbation_name(s.perturbation)] = {{"n", s.n},
                                            {"changed", s.changed},
                                            {"accuracy", s.accuracy},
                                            {"agreement_with_clean", s.agreement_with_clean},
                                            {"kld_to_clean", s.kld_to_clean}};
  return j;
}

}  // namespace shrink
