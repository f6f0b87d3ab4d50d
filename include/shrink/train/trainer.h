// Fine-tuning a classifier: tokenized data, batches, the training loop (AdamW, warmup + decay, clipping,
// accumulation, early stopping on validation accuracy keeping the best weights, a time budget), evaluation, and a
// WordPiece vocabulary learned from the training texts when the user brings no tokenizer.
#pragma once

#include <shrink/eval/classification.h>
#include <shrink/tokenizers/tokenizer.h>
#include <shrink/train/data.h>
#include <shrink/train/encoder.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace shrink::train {

// Labelled examples the training loop draws batches from.
class ClassifySource {
 public:
  virtual ~ClassifySource() = default;
  virtual size_t size() const = 0;
  virtual int32_t label(size_t i) const = 0;
  virtual EncoderBatch batch(const std::vector<int64_t>& idx) const = 0;
};

struct ClassifyData : ClassifySource {
  std::vector<std::vector<int32_t>> ids;  // with special tokens, truncated
  std::vector<int32_t> labels;
  int pad_id = 0;
  size_t size() const override { return labels.size(); }
  int32_t label(size_t i) const override { return labels[i]; }
  EncoderBatch batch(const std::vector<int64_t>& idx) const override;
};

// Images (e.g. Fashion-MNIST) as ViT patch rows; `rows` selects a subset of the set (empty: all, in order).
struct ImageData : ClassifySource {
  const ImageSet* set = nullptr;
  int patch = 4;
  std::vector<int64_t> rows;
  size_t size() const override { return rows.empty() ? static_cast<size_t>(set->n) : rows.size(); }
  int32_t label(size_t i) const override { return set->labels[rows.empty() ? i : rows[i]]; }
  EncoderBatch batch(const std::vector<int64_t>& idx) const override;
};
// Deterministic split of an image set into train / validation rows.
std::pair<ImageData, ImageData> split_images(const ImageSet& s, int patch, double val_fraction, uint64_t seed);

ClassifyData tokenize_classify(const LabeledText& data, const Tokenizer& tok, int max_length);
// Deterministic split: a shuffled `val_fraction` of the rows goes to the second set.
std::pair<ClassifyData, ClassifyData> split_data(const ClassifyData& all, double val_fraction, uint64_t seed);
// Rows [idx...] right-padded to the longest.
EncoderBatch make_batch(const ClassifyData& d, const std::vector<int64_t>& idx);

// The optimizer and schedule settings every training loop takes (classifier, language model, distillation, QAT);
// the defaults are the classifier's (LmTrainOptions sets its own).
struct TrainSchedule {
  int epochs = 3;
  int batch = 32;
  int accumulate = 1;  // gradient accumulation steps per update
  float lr = 5e-4f;
  double warmup_fraction = 0.06;
  Decay decay = Decay::Linear;
  float weight_decay = 0.01f;
  double clip = 1.0;       // max global gradient norm (0: off)
  double max_minutes = 0;  // 0: no time budget
  int eval_every = 0;      // updates between validation runs (0: once per epoch)
  int patience = 3;        // validation runs without improvement before stopping (0: never stop early)
  uint64_t seed = 0;
};

struct TrainOptions : TrainSchedule {
  TrainOptions() = default;
  explicit TrainOptions(const TrainSchedule& s) : TrainSchedule(s) {}
  // Loss of one batch; default: cross-entropy of out.logits against `labels`. Distillation mixes in a teacher here
  // (idx are the rows of the training source the batch holds).
  std::function<Var(const EncoderForward& out, const EncoderBatch& b, const std::vector<int64_t>& idx,
                    const std::vector<int32_t>& labels)>
      loss;
  // Called after every optimizer update (pruning re-applies its masks here, so zeros stay zero).
  std::function<void(int64_t step)> after_update;
};

struct TrainProgress {
  int64_t step = 0, total_steps = 0;
  double loss = 0;           // running mean of the last updates
  double val_accuracy = -1;  // last validation accuracy (-1: none yet)
  double elapsed_s = 0, eta_s = 0;
};

struct TrainReport {
  int64_t steps = 0;
  double seconds = 0, samples_per_s = 0, gemm_share = 0;
  double best_val_accuracy = -1, final_train_loss = 0;
  bool early_stopped = false, time_budget_hit = false;
  std::vector<std::pair<int64_t, double>> val_curve;  // (step, accuracy)
  nlohmann::json to_json() const;
};

// Trains in place; when `val` is non-empty the weights with the best validation accuracy are restored at the end.
// With a time budget the learning-rate schedule is fitted to it: after a few updates the number of updates that fit
// is estimated (validation time included) and the decay ends there rather than at the end of the last epoch.
TrainReport train_classifier(TrainableEncoder& model, const ClassifySource& train, const ClassifySource& val,
                             const TrainOptions& opt, const std::function<void(const TrainProgress&)>& progress = {});
// Predicted labels (argmax), no gradients, batches of `batch`.
std::vector<int> predict(const TrainableEncoder& model, const ClassifySource& d, int batch = 64);
double accuracy(const TrainableEncoder& model, const ClassifySource& d, int batch = 64);

// A BERT-style WordPiece tokenizer.json (lowercasing BERT normalizer, BertPreTokenizer, [CLS] A [SEP] template)
// whose vocabulary is the special tokens, every character seen (alone and as ##continuation) and the most frequent
// words, up to vocab_size entries.
nlohmann::json build_wordpiece_tokenizer(const std::vector<std::string>& texts, int vocab_size);

}  // namespace shrink::train
