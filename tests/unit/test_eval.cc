// eval: metrics against hand-computed cases, TSV errors, stress perturbations doing what they say, batched runs
// against one-text forwards, and `shrink eval` end to end on a synth BERT and on stories260K.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/eval/evaluate.h>
#include <shrink/eval/stress.h>
#include <shrink/models/synth.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "unit/test_util.h"

namespace shrink {
namespace {

using testing::fixture;
using testing::run_cli;
using testing::temp_dir;
using testing::write_bytes;

using testing::error_of;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(EvalMetrics, ConfusionPerClassAndMacroF1ByHand) {
  // truth 0 0 0 1 1 2, predicted 0 0 1 1 2 2 -> confusion [true][pred] = [2 1 0; 0 1 1; 0 0 1], accuracy 4/6.
  // class 0: tp 2, predicted 2, support 3 -> P 1, R 2/3, F1 = 2*2/(2+3) = 0.8
  // class 1: tp 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 = 2/(2+2) = 0.5
  // class 2: tp 1, predicted 2, support 1 -> P 1/2, R 1, F1 = 2/(2+1) = 2/3;  macro-F1 = (0.8 + 0.5 + 2/3) / 3
  const std::vector<int> truth = {0, 0, 0, 1, 1, 2}, pred = {0, 0, 1, 1, 2, 2};
  const ClassificationMetrics m = classification_metrics(pred, truth, 3);
  EXPECT_DOUBLE_EQ(m.accuracy, 4.0 / 6);
  const std::vector<std::vector<int64_t>> want = {{2, 1, 0}, {0, 1, 1}, {0, 0, 1}};
  EXPECT_EQ(m.confusion, want);
  EXPECT_NEAR(m.macro_f1, (0.8 + 0.5 + 2.0 / 3) / 3, 1e-12);
  const auto pc = per_class_metrics(m.confusion);
  ASSERT_EQ(pc.size(), 3u);
  EXPECT_DOUBLE_EQ(pc[0].precision, 1.0);
  EXPECT_DOUBLE_EQ(pc[0].recall, 2.0 / 3);
  EXPECT_DOUBLE_EQ(pc[0].f1, 0.8);
  EXPECT_DOUBLE_EQ(pc[1].precision, 0.5);
  EXPECT_DOUBLE_EQ(pc[1].f1, 0.5);
  EXPECT_DOUBLE_EQ(pc[2].recall, 1.0);
  EXPECT_DOUBLE_EQ(pc[2].f1, 2.0 / 3);
  EXPECT_EQ(pc[0].support, 3);
  EXPECT_EQ(pc[1].predicted, 2);
  // A class never predicted and never true: precision, recall and F1 are 0, not NaN.
  const auto empty = per_class_metrics({{1, 0}, {0, 0}});
  EXPECT_EQ(empty[1].precision, 0.0);
  EXPECT_EQ(empty[1].f1, 0.0);
}

TEST(EvalMetrics, ExpectedCalibrationErrorByHand) {
  // Four examples at confidence 0.95, all right; two at 0.55, both wrong. 15 bins: 0.95 and 0.55 fall in different
  // bins -> 4/6 * |1 - 0.95| + 2/6 * |0 - 0.55| = 0.0333... + 0.18333... = 0.216666...
  const std::vector<double> conf = {0.95, 0.95, 0.95, 0.95, 0.55, 0.55};
  const std::vector<uint8_t> ok = {1, 1, 1, 1, 0, 0};
  EXPECT_NEAR(expected_calibration_error(conf, ok, 15), 4.0 / 6 * 0.05 + 2.0 / 6 * 0.55, 1e-12);
  // One bin: |accuracy 4/6 - mean confidence (3.8 + 1.1) / 6| = |0.6667 - 0.81667| = 0.15.
  EXPECT_NEAR(expected_calibration_error(conf, ok, 1), 0.15, 1e-12);
  // Bins are (b/B, (b+1)/B]: with 3 bins a confidence of exactly 1/3 belongs to the first bin, 0.5 to the second:
  // 1/2 * |1 - 1/3| + 1/2 * |0 - 0.5| = 1/3 + 1/4. (Put together they would give |0.5 - 0.41667| = 0.0833.)
  EXPECT_NEAR(expected_calibration_error({1.0 / 3, 0.5}, {1, 0}, 3), 1.0 / 3 + 0.25, 1e-12);
  // Confidence 1 in the last bin, perfectly calibrated -> 0.
  EXPECT_NEAR(expected_calibration_error({1.0, 1.0}, {1, 1}, 15), 0.0, 1e-15);
  EXPECT_TRUE(contains(error_of([] { expected_calibration_error({1.5}, {1}); }), "outside [0, 1]"));
}

TEST(EvalMetrics, KlDivergenceOfKnownDistributions) {
  const double p[2] = {0.25, 0.75}, q[2] = {0.5, 0.5};
  EXPECT_NEAR(kl_divergence(p, q, 2), 0.25 * std::log(0.5) + 0.75 * std::log(1.5), 1e-15);  // 0.130812...
  EXPECT_NEAR(kl_divergence(q, p, 2), 0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3), 1e-15);
  const double one_hot[3] = {1, 0, 0}, uniform[3] = {1.0 / 3, 1.0 / 3, 1.0 / 3};
  EXPECT_NEAR(kl_divergence(one_hot, uniform, 3), std::log(3.0), 1e-15);  // 0 ln 0 terms are 0
  EXPECT_TRUE(std::isinf(kl_divergence(uniform, one_hot, 3)));
  // softmax_rows: logits (0, ln 3) -> (1/4, 3/4).
  const float logits[2] = {0.f, static_cast<float>(std::log(3.0))};
  const auto s = softmax_rows(logits, 1, 2);
  EXPECT_NEAR(s[0], 0.25, 1e-7);
  EXPECT_NEAR(s[1], 0.75, 1e-7);
}

TEST(EvalMetrics, SummaryNllEceAndBaselineByHand) {
  // Two examples, both with logits (0, ln 3) = probabilities (1/4, 3/4): predicted 1 both times; labels 1 and 0.
  const float l3 = static_cast<float>(std::log(3.0));
  const std::vector<float> logits = {0.f, l3, 0.f, l3};
  const std::vector<int> labels = {1, 0};
  // Baseline logits (0, 0): probabilities (1/2, 1/2), argmax 0 (the first of equals).
  const std::vector<float> base = {0.f, 0.f, 0.f, 0.f};
  const ClassificationSummary s = summarize_classification(logits, labels, 2, {}, &base);
  EXPECT_EQ(s.n, 2);
  EXPECT_DOUBLE_EQ(s.accuracy, 0.5);
  EXPECT_NEAR(s.nll, (-std::log(0.75) - std::log(0.25)) / 2, 1e-7);
  EXPECT_NEAR(s.ece, 0.25, 1e-7);                                           // one bin: confidence 0.75, accuracy 0.5
  EXPECT_NEAR(s.kld, 0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3), 1e-7);  // KL((1/2,1/2) || (1/4,3/4))
  EXPECT_EQ(s.top1_agreement, 0.0);
  EXPECT_EQ(s.baseline_accuracy, 0.5);
  // A subset: only the second example.
  const ClassificationSummary t = summarize_classification(logits, labels, 2, {1});
  EXPECT_EQ(t.n, 1);
  EXPECT_EQ(t.accuracy, 0.0);
  EXPECT_NEAR(t.nll, -std::log(0.25), 1e-7);
  EXPECT_FALSE(t.has_baseline);
}

TEST(EvalSegments, LengthBucketsAndGrouping) {
  const LengthBuckets b = parse_length_buckets("8,16,32");
  EXPECT_EQ(b.names(), (std::vector<std::string>{"1-8", "9-16", "17-32", "33+"}));
  EXPECT_EQ(b.bucket_of(1), 0);
  EXPECT_EQ(b.bucket_of(8), 0);
  EXPECT_EQ(b.bucket_of(9), 1);
  EXPECT_EQ(b.bucket_of(32), 2);
  EXPECT_EQ(b.bucket_of(33), 3);
  EXPECT_EQ(b.bucket_of(1000), 3);
  EXPECT_TRUE(contains(error_of([] { parse_length_buckets("8,8"); }), "strictly increasing"));
  EXPECT_TRUE(contains(error_of([] { parse_length_buckets("8,x"); }), "'x'"));
  EXPECT_TRUE(contains(error_of([] { parse_length_buckets("0"); }), "positive"));
  // Quartiles of 1..8 (nearest rank): 2, 4, 6 -> four buckets of two.
  const LengthBuckets q = length_buckets_from_quantiles({8, 7, 6, 5, 4, 3, 2, 1}, 4);
  EXPECT_EQ(q.edges, (std::vector<int64_t>{2, 4, 6}));
  EXPECT_EQ(q.names(), (std::vector<std::string>{"1-2", "3-4", "5-6", "7+"}));
  // All lengths equal: one bucket.
  EXPECT_TRUE(length_buckets_from_quantiles({5, 5, 5}, 4).edges.empty());
  const Segments s = group_by({"b", "a", "b", "c"}, {"c", "z"});
  EXPECT_EQ(s.names, (std::vector<std::string>{"c", "z", "b", "a"}));
  EXPECT_EQ(s.members[0], (std::vector<int64_t>{3}));
  EXPECT_TRUE(s.members[1].empty());
  EXPECT_EQ(s.members[2], (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(s.members[3], (std::vector<int64_t>{1}));
}

TEST(EvalTsv, ColumnsLinesAndErrors) {
  const auto dir = temp_dir("eval_tsv");
  write_bytes(dir / "ok.tsv", "sentence\tlabel\tsource\na good film\t1\tweb\n\nbad\tnegative\tnews\n");
  const LabeledTable t = read_labeled_table(dir / "ok.tsv", {"negative", "positive"}, 2);
  EXPECT_EQ(t.data.texts, (std::vector<std::string>{"a good film", "bad"}));
  EXPECT_EQ(t.data.labels, (std::vector<int>{1, 0}));
  EXPECT_EQ(t.lines, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(t.column("source"), (std::vector<std::string>{"web", "news"}));
  std::string msg = error_of([&] { t.column("genre"); });
  EXPECT_TRUE(contains(msg, "genre") && contains(msg, "sentence, label, source")) << msg;

  write_bytes(dir / "cols.tsv", "sentence\tlabel\tsource\nfine\t1\tweb\nno tab here 1\n");
  msg = error_of([&] { read_labeled_table(dir / "cols.tsv", {}, 2); });
  EXPECT_TRUE(contains(msg, "cols.tsv:3:") && contains(msg, "found 1")) << msg;
  write_bytes(dir / "lab.tsv", "sentence\tlabel\nfine\t1\nmeh\tmaybe\n");
  msg = error_of([&] { read_labeled_table(dir / "lab.tsv", {"negative", "positive"}, 2); });
  EXPECT_TRUE(contains(msg, "lab.tsv:3:") && contains(msg, "'maybe'") && contains(msg, "column 'label'") &&
              contains(msg, "1=positive"))
      << msg;
  // A label the model does not have.
  write_bytes(dir / "range.tsv", "sentence\tlabel\nfine\t1\nodd\t7\n");
  msg = error_of([&] { read_labeled_table(dir / "range.tsv", {"negative", "positive"}, 2); });
  EXPECT_TRUE(contains(msg, "range.tsv:3:") && contains(msg, "label 7") && contains(msg, "2 labels")) << msg;
  write_bytes(dir / "empty.tsv", "sentence\tlabel\n");
  msg = error_of([&] { read_labeled_table(dir / "empty.tsv"); });
  EXPECT_TRUE(contains(msg, "no examples")) << msg;
}

std::string strip_letters(const std::string& s) {
  std::string out;
  for (char c : s)
    if (!std::isalpha(static_cast<unsigned char>(c))) out += c;
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> w;
  std::istringstream in(s);
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

TEST(EvalStress, PerturbationsAreSeededAndDoWhatTheySay) {
  const std::string text = "The film's quiet ending, sadly, was far too long for me";
  StressOptions o;
  for (Perturbation p : all_perturbations()) {
    EXPECT_EQ(perturb(text, p, o, 3), perturb(text, p, o, 3)) << perturbation_name(p);
  }
  // Different examples and seeds give different typos.
  EXPECT_NE(perturb(text, Perturbation::Typos, o, 3), perturb(text, Perturbation::Typos, o, 4));
  StressOptions o2 = o;
  o2.seed = o.seed + 1;
  EXPECT_NE(perturb(text, Perturbation::Oov, o, 3), perturb(text, Perturbation::Oov, o2, 3));

  EXPECT_EQ(perturb(text, Perturbation::Upper, o, 0), "THE FILM'S QUIET ENDING, SADLY, WAS FAR TOO LONG FOR ME");
  const std::string rc = perturb(text, Perturbation::RandomCase, o, 0);
  EXPECT_EQ(lower(rc), lower(text));  // only case changes
  EXPECT_NE(rc, text);
  EXPECT_EQ(perturb(text, Perturbation::Truncate, o, 0), "The film's quiet ending, sadly, was");  // 6 of 11 words
  EXPECT_EQ(perturb("one", Perturbation::Truncate, o, 0), "one");
  EXPECT_EQ(perturb("a  b\tc d", Perturbation::Truncate, o, 0), "a b");

  for (uint64_t i = 0; i < 50; ++i) {
    // Typos touch letters only: punctuation and spaces survive in order; the text changes; few edits at rate 0.05.
    const std::string t = perturb(text, Perturbation::Typos, o, i);
    EXPECT_NE(t, text);
    EXPECT_EQ(strip_letters(t), strip_letters(text)) << t;
    EXPECT_LE(std::abs(static_cast<int>(t.size()) - static_cast<int>(text.size())), 12) << t;
    // OOV: same number of words, at least one replaced by a lowercase string of at least 4 letters.
    const auto w0 = words(text), w1 = words(perturb(text, Perturbation::Oov, o, i));
    ASSERT_EQ(w0.size(), w1.size());
    int replaced = 0;
    for (size_t k = 0; k < w0.size(); ++k) {
      if (w0[k] == w1[k]) continue;
      ++replaced;
      EXPECT_GE(w1[k].size(), 4u);
      for (char c : w1[k]) EXPECT_TRUE(c >= 'a' && c <= 'z') << w1[k];
    }
    EXPECT_GE(replaced, 1);
  }
  // Rate 0 keeps one edit (a stressed text always differs); rate 1 edits every letter / word.
  StressOptions all = o;
  all.oov_rate = 1;
  const auto wa = words(perturb(text, Perturbation::Oov, all, 0));
  for (size_t k = 0; k < wa.size(); ++k) EXPECT_NE(wa[k], words(text)[k]);
  StressOptions none = o;
  none.typo_rate = 0;
  EXPECT_NE(perturb(text, Perturbation::Typos, none, 0), text);
  // Non-ASCII bytes are never touched, so UTF-8 stays valid.
  const std::string utf8 =
      "caf\xc3\xa9 cr\xc3\xa8"
      "me br\xc3\xbbl\xc3\xa9"
      "e";
  for (uint64_t i = 0; i < 20; ++i) {
    const std::string t = perturb(utf8, Perturbation::Typos, all, i);
    std::string high0, high1;
    for (char c : utf8)
      if (static_cast<unsigned char>(c) >= 0x80) high0 += c;
    for (char c : t)
      if (static_cast<unsigned char>(c) >= 0x80) high1 += c;
    EXPECT_EQ(high0, high1);
  }
}

class EvalModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(temp_dir("eval_bert") / "bert");
    synth_model(find_synth_preset("bert-tiny"), *dir_, 11);
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::filesystem::path* dir_;
  static std::vector<std::string> texts() {
    return {"a fine film",   "not good at all, the plot was thin and the acting worse",
            "wonderful",     "it rained",
            "boring boring", "a classic that i would watch again and again with friends",
            "meh",           "the end",
            "so so",         "an unexpectedly moving story about a family"};
  }
};
std::filesystem::path* EvalModel::dir_ = nullptr;

TEST_F(EvalModel, BatchedSortedRunMatchesOneTextForwardsInInputOrder) {
  auto m = load_model(*dir_);
  const auto& enc = dynamic_cast<const EncoderModel&>(*m);
  const auto t = texts();
  RunOptions o;
  o.batch = 3;
  const ClassifierRun sorted = run_classifier(enc, t, o);
  o.sort_by_length = false;
  const ClassifierRun plain = run_classifier(enc, t, o);
  ASSERT_EQ(sorted.logits.size(), t.size() * 2);
  for (size_t i = 0; i < t.size(); ++i) {
    const EncoderOutput one = enc.forward(m->require_tokenizer().encode_batch({t[i]}));
    for (int c = 0; c < 2; ++c) {
      EXPECT_NEAR(sorted.logits[i * 2 + c], one.logits.data<float>()[c], 2e-5) << i;
      EXPECT_NEAR(plain.logits[i * 2 + c], one.logits.data<float>()[c], 2e-5) << i;
    }
    EXPECT_EQ(sorted.lengths[i], static_cast<int32_t>(m->require_tokenizer().encode(t[i], true).size()));
  }
}

TEST_F(EvalModel, ReportSegmentsAndStressAgreeWithIndependentCounts) {
  auto m = load_model(*dir_);
  const auto& enc = dynamic_cast<const EncoderModel&>(*m);
  const auto dir = temp_dir("eval_rep");
  std::string tsv = "sentence\tlabel\tsource\n";
  const auto t = texts();
  for (size_t i = 0; i < t.size(); ++i) tsv += t[i] + "\t" + std::to_string(i % 2) + "\t" + (i < 4 ? "a" : "b") + "\n";
  write_bytes(dir / "d.tsv", tsv);
  const LabeledTable table = read_labeled_table(dir / "d.tsv", m->config().id2label, 2);
  EvalOptions o;
  o.run.batch = 4;
  o.segment_by = {"label", "source", "length"};
  o.length_buckets = parse_length_buckets("5,10");
  o.stress = true;
  const EvalReport r = evaluate_classifier(enc, &enc, table, o);
  // Predictions one text at a time, counted here.
  std::vector<int> pred;
  for (const auto& s : t) {
    const EncoderOutput one = enc.forward(m->require_tokenizer().encode_batch({s}));
    pred.push_back(one.logits.data<float>()[1] > one.logits.data<float>()[0]);
  }
  int correct = 0, correct_a = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    correct += pred[i] == static_cast<int>(i % 2);
    if (i < 4) correct_a += pred[i] == static_cast<int>(i % 2);
  }
  EXPECT_EQ(r.overall.n, 10);
  EXPECT_DOUBLE_EQ(r.overall.accuracy, correct / 10.0);
  EXPECT_EQ(r.overall.kld, 0.0);  // the model against itself
  EXPECT_EQ(r.overall.top1_agreement, 1.0);
  ASSERT_EQ(r.segments.size(), 3u);
  // By label, a segment's accuracy is that class's recall.
  ASSERT_EQ(r.segments[0].rows.size(), 2u);
  for (int c = 0; c < 2; ++c) EXPECT_DOUBLE_EQ(r.segments[0].rows[c].accuracy, r.overall.per_class[c].recall);
  EXPECT_EQ(r.segments[1].names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.segments[1].rows[0].n, 4);
  EXPECT_DOUBLE_EQ(r.segments[1].rows[0].accuracy, correct_a / 4.0);
  int64_t total = 0;
  for (const auto& row : r.segments[2].rows) total += row.n;
  EXPECT_EQ(total, 10);
  ASSERT_EQ(r.stress.size(), all_perturbations().size());
  for (const StressResult& s : r.stress) {
    EXPECT_EQ(s.n, 10);
    if (s.perturbation == Perturbation::Upper || s.perturbation == Perturbation::RandomCase) {
      // The BERT tokenizer lowercases (synth tokenizer.json: BertNormalizer lowercase), so case cannot matter.
      EXPECT_EQ(s.agreement_with_clean, 1.0);
      EXPECT_NEAR(s.kld_to_clean, 0.0, 1e-9);
      EXPECT_DOUBLE_EQ(s.accuracy, r.overall.accuracy);
    }
    if (s.perturbation == Perturbation::Truncate) {
      // Recount: the model on the truncated texts, one at a time.
      int agree = 0;
      for (size_t i = 0; i < t.size(); ++i) {
        const EncoderOutput one = enc.forward(
            m->require_tokenizer().encode_batch({perturb(t[i], Perturbation::Truncate, o.stress_options, i)}));
        agree += (one.logits.data<float>()[1] > one.logits.data<float>()[0]) == pred[i];
      }
      EXPECT_DOUBLE_EQ(s.agreement_with_clean, agree / 10.0);
      int64_t multi_word = 0;  // truncation keeps a one-word text as it is
      for (const auto& x : t) multi_word += words(x).size() > 1;
      EXPECT_EQ(s.changed, multi_word);
    }
  }
}

nlohmann::json parse_json(const testing::RunResult& r) {
  EXPECT_EQ(r.code, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

TEST_F(EvalModel, CliEndToEnd) {
  const auto dir = temp_dir("eval_cli");
  std::string tsv = "sentence\tlabel\tsource\n";
  const auto t = texts();
  for (size_t i = 0; i < t.size(); ++i) tsv += t[i] + "\t" + std::to_string(i % 2) + "\t" + (i < 4 ? "a" : "b") + "\n";
  write_bytes(dir / "d.tsv", tsv);
  const std::string model = dir_->string(), data = (dir / "d.tsv").string();
  const auto j = parse_json(run_cli("eval " + model + " --data " + data + " --baseline " + model +
                                    " --segment-by length --segment-by source --length-buckets 4,8 --stress --batch 3 "
                                    "--json"));
  for (const char* k : {"accuracy", "macro_f1", "n", "ece", "nll", "kld", "top1_agreement", "confusion", "per_class",
                        "baseline", "segments", "stress", "examples_per_s"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["n"], 10);
  EXPECT_EQ(j["kld"].get<double>(), 0.0);
  EXPECT_EQ(j["top1_agreement"].get<double>(), 1.0);
  EXPECT_EQ(j["segments"]["source"].size(), 2u);
  EXPECT_EQ(j["segments"]["source"][0]["segment"], "a");
  EXPECT_EQ(j["segments"]["source"][0]["n"], 4);
  EXPECT_EQ(j["segments"]["length"][0]["segment"], "1-4");
  EXPECT_EQ(j["stress"]["upper"]["agreement_with_clean"].get<double>(), 1.0);
  // The confusion matrix adds up to n and its diagonal to the accuracy.
  int64_t sum = 0, diag = 0;
  for (size_t a = 0; a < 2; ++a)
    for (size_t b = 0; b < 2; ++b)
      sum += j["confusion"][a][b].get<int64_t>(), diag += a == b ? j["confusion"][a][b].get<int64_t>() : 0;
  EXPECT_EQ(sum, 10);
  EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), diag / 10.0);
  // classify --data reports the same numbers.
  const auto c = parse_json(run_cli("classify " + model + " --data " + data + " --json"));
  EXPECT_DOUBLE_EQ(c["accuracy"].get<double>(), j["accuracy"].get<double>());
  EXPECT_DOUBLE_EQ(c["macro_f1"].get<double>(), j["macro_f1"].get<double>());
  EXPECT_EQ(c["confusion"], j["confusion"]);
  // --limit; human tables.
  EXPECT_EQ(parse_json(run_cli("eval " + model + " --data " + data + " --limit 3 --json"))["n"], 3);
  const auto h = run_cli("eval " + model + " --data " + data + " --segment-by label --stress -q");
  EXPECT_EQ(h.code, 0) << h.err;
  for (const char* part : {"accuracy", "per class", "confusion", "by label", "stress", "random_case"})
    EXPECT_TRUE(contains(h.out, part)) << part << "\n" << h.out;
}

TEST_F(EvalModel, CliErrors) {
  const auto dir = temp_dir("eval_cli_err");
  const std::string model = dir_->string();
  write_bytes(dir / "bad.tsv", "sentence\tlabel\ngood\t1\nbad\tx\n");
  auto r = run_cli("eval " + model + " --data " + (dir / "bad.tsv").string());
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.err, "bad.tsv:3:") && contains(r.err, "'x'")) << r.err;
  write_bytes(dir / "lab.tsv", "sentence\tlabel\ngood\t1\nbad\t2\n");
  r = run_cli("eval " + model + " --data " + (dir / "lab.tsv").string());
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.err, "lab.tsv:3:") && contains(r.err, "label 2")) << r.err;
  write_bytes(dir / "ok.tsv", "sentence\tlabel\ngood\t1\n");
  r = run_cli("eval " + model + " --data " + (dir / "ok.tsv").string() + " --segment-by genre");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.err, "no column named 'genre'") && contains(r.err, "sentence, label")) << r.err;
  // A BERT without a classification head.
  const auto headless = dir / "headless";
  std::filesystem::copy(*dir_, headless);
  auto cfg = nlohmann::json::parse(std::ifstream(headless / "config.json"));
  cfg["architectures"] = {"BertModel"};
  std::ofstream(headless / "config.json") << cfg.dump();
  r = run_cli("eval " + headless.string() + " --data " + (dir / "ok.tsv").string());
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.err, "no classification head")) << r.err;
  // A decoder given --data.
  r = run_cli("eval " + fixture("stories260K/stories260K.bin").string() + " --tokenizer " +
              fixture("stories260K/tok512.bin").string() + " --data " + (dir / "ok.tsv").string());
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.err, "--text")) << r.err;
}

TEST(EvalCli, DecoderPerplexityIsPplAndBaselineIsCompare) {
  const std::string m = fixture("stories260K/stories260K.bin").string();
  const std::string tok = " --tokenizer " + fixture("stories260K/tok512.bin").string();
  const std::string text = " --text " + fixture("text/tinyshakespeare.txt").string() + " --max-tokens 300 --ctx 128";
  const auto e = parse_json(run_cli("eval " + m + tok + text + " --json"));
  const auto p = parse_json(run_cli("ppl " + m + tok + text + " --json"));
  EXPECT_DOUBLE_EQ(e["ppl"].get<double>(), p["ppl"].get<double>());
  EXPECT_EQ(e["tokens"], p["tokens"]);
  const auto b = parse_json(run_cli("eval " + m + tok + text + " --baseline " + m + " --json"));
  EXPECT_DOUBLE_EQ(b["ppl"].get<double>(), p["ppl"].get<double>());
  EXPECT_DOUBLE_EQ(b["baseline"]["ppl"].get<double>(), p["ppl"].get<double>());
  EXPECT_EQ(b["kld"].get<double>(), 0.0);
  EXPECT_EQ(b["top1_agreement"].get<double>(), 1.0);
}

}  // namespace
}  // namespace shrink
