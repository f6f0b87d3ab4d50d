// The training loop around TrainableEncoder: learned WordPiece vocabulary (loads as a HF tokenizer and splits
// unseen words into known pieces), deterministic splits and padded batches, learning a rule from text, early
// stopping and keeping the best weights, the time budget, and `shrink train` end to end.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/formats/config.h>
#include <shrink/models/model.h>
#include <shrink/train/trainer.h>

#include <random>

#include "test_util.h"

namespace shrink::train {
namespace {

TEST(WordPieceBuilder, VocabularyLoadsAndSplitsUnseenWords) {
  const std::vector<std::string> texts = {"The cat sat.", "the dog sat!", "A cat, a dog."};
  const auto j = build_wordpiece_tokenizer(texts, 200);
  auto tok = parse_tokenizer_json(j.dump(), "learned");
  EXPECT_EQ(tok->encode("the cat", true).size(), 4u);  // [CLS] the cat [SEP]
  const auto pieces = tok->tokenize("cats");            // unseen word: whole word then ##s
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0], "cat");
  EXPECT_EQ(pieces[1], "##s");
  EXPECT_EQ(tok->id_to_piece(tok->encode("the", true).front()), "[CLS]");
  EXPECT_THROW(build_wordpiece_tokenizer(texts, 10), Error);
}

TEST(TrainerData, SplitIsDeterministicAndBatchesArePadded) {
  ClassifyData d;
  d.pad_id = 0;
  for (int i = 0; i < 10; ++i) {
    d.ids.push_back(std::vector<int32_t>(1 + i % 4, 5 + i));
    d.labels.push_back(i % 2);
  }
  auto [a1, b1] = split_data(d, 0.3, 7);
  auto [a2, b2] = split_data(d, 0.3, 7);
  EXPECT_EQ(b1.size(), 3u);
  EXPECT_EQ(a1.size(), 7u);
  EXPECT_EQ(b1.ids, b2.ids);
  const EncoderBatch b = make_batch(d, {0, 3});
  EXPECT_EQ(b.seq, 4);
  EXPECT_EQ(b.ids, (std::vector<int32_t>{5, 0, 0, 0, 8, 8, 8, 8}));
  EXPECT_EQ(b.mask, (std::vector<int32_t>{1, 0, 0, 0, 1, 1, 1, 1}));
}

ModelConfig tiny_bert(int vocab, int labels) {
  nlohmann::json j = {{"architectures", {"BertForSequenceClassification"}}, {"model_type", "bert"},
                      {"vocab_size", vocab}, {"hidden_size", 32}, {"num_hidden_layers", 1},
                      {"num_attention_heads", 2}, {"intermediate_size", 64}, {"max_position_embeddings", 32},
                      {"type_vocab_size", 2}, {"num_labels", labels}};
  return parse_config(j, "test");
}

// Sentiment-like rule: label 1 iff "good" appears.
LabeledText rule_data(int n, uint32_t seed) {
  std::mt19937 gen(seed);
  const std::vector<std::string> filler = {"movie", "plot", "actor", "the", "a", "was", "really", "scene", "story"};
  LabeledText t;
  for (int i = 0; i < n; ++i) {
    const bool pos = gen() % 2;
    std::string s;
    const int len = 3 + gen() % 6, at = gen() % len;
    for (int k = 0; k < len; ++k) s += (pos && k == at ? std::string("good") : filler[gen() % filler.size()]) + " ";
    t.texts.push_back(s);
    t.labels.push_back(pos);
  }
  return t;
}

TEST(TrainClassifier, LearnsTheRuleAndReportsThroughput) {
  const LabeledText raw = rule_data(1200, 1);
  auto tok = parse_tokenizer_json(build_wordpiece_tokenizer(raw.texts, 200).dump(), "learned");
  auto [tr, va] = split_data(tokenize_classify(raw, *tok, 16), 0.2, 3);
  TrainableEncoder m(tiny_bert(tok->vocab_size(), 2), 4);
  TrainOptions o;
  o.epochs = 4;
  o.lr = 3e-3f;
  o.patience = 0;
  int calls = 0;
  const TrainReport r = train_classifier(m, tr, va, o, [&](const TrainProgress& p) {
    ++calls;
    EXPECT_LE(p.step, p.total_steps);
  });
  EXPECT_GE(r.best_val_accuracy, 0.95);
  EXPECT_EQ(calls, r.steps);
  EXPECT_GT(r.samples_per_s, 0);
  EXPECT_GT(r.gemm_share, 0);
  EXPECT_LT(r.gemm_share, 1);
  // The restored weights are the best ones: predicting again reproduces the best validation accuracy.
  const auto pred = predict(m, va);
  int ok = 0;
  for (size_t i = 0; i < pred.size(); ++i) ok += pred[i] == va.labels[i];
  EXPECT_DOUBLE_EQ(static_cast<double>(ok) / va.size(), r.best_val_accuracy);
}

TEST(TrainClassifier, EarlyStopsWhenValidationDoesNotImprove) {
  // Random labels: validation cannot improve for long; patience 1 stops after the first non-improvement.
  LabeledText raw = rule_data(400, 2);
  std::mt19937 gen(5);
  for (auto& l : raw.labels) l = gen() % 2;
  auto tok = parse_tokenizer_json(build_wordpiece_tokenizer(raw.texts, 200).dump(), "learned");
  auto [tr, va] = split_data(tokenize_classify(raw, *tok, 16), 0.25, 3);
  TrainableEncoder m(tiny_bert(tok->vocab_size(), 2), 4);
  TrainOptions o;
  o.epochs = 50;
  o.eval_every = 2;
  o.patience = 1;
  o.lr = 1e-2f;
  const TrainReport r = train_classifier(m, tr, va, o);
  EXPECT_TRUE(r.early_stopped);
  EXPECT_LT(r.steps, 50 * static_cast<int64_t>(tr.size() / 32));
  double best = 0;
  for (auto& [s, a] : r.val_curve) best = std::max(best, a);
  EXPECT_DOUBLE_EQ(best, r.best_val_accuracy);
}

TEST(TrainClassifier, BadLabelsAreNamed) {
  ClassifyData d;
  d.ids = {{1, 2}};
  d.labels = {5};
  TrainableEncoder m(tiny_bert(10, 2), 1);
  EXPECT_THROW(train_classifier(m, d, ClassifyData{}, TrainOptions{}), Error);
}

TEST(TrainCli, TrainsSavesAndTheModelClassifies) {
  const auto dir = shrink::testing::temp_dir("train_cli");
  const LabeledText raw = rule_data(300, 3);
  std::string tsv = "sentence\tlabel\n";
  for (size_t i = 0; i < raw.texts.size(); ++i) tsv += raw.texts[i] + "\t" + std::to_string(raw.labels[i]) + "\n";
  shrink::testing::write_bytes(dir / "data.tsv", tsv);
  const auto r = shrink::testing::run_cli("train --data " + (dir / "data.tsv").string() +
                                          " --preset bert-tiny --epochs 1 --max-length 16 --vocab-size 300 --out " +
                                          (dir / "model").string() + " --json --threads 2");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GE(j.at("val_accuracy").get<double>(), 0.0);
  EXPECT_EQ(j.at("train_examples").get<int>() + j.at("val_examples").get<int>(), 300);
  const auto c = shrink::testing::run_cli("classify " + (dir / "model").string() + " --data " +
                                          (dir / "data.tsv").string() + " --json");
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_EQ(nlohmann::json::parse(c.out).at("n").get<int>(), 300);
}

}  // namespace
}  // namespace shrink::train
