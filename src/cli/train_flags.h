// Flags and data loading shared by every command that trains a classifier (train, distill, prune, qat, lowrank):
// the optimizer/schedule flags with one spelling and one meaning everywhere, and TSV -> tokenized train/validation
// split.
#pragma once

#include <shrink/tokenizers/tokenizer.h>
#include <shrink/train/trainer.h>

#include <CLI/CLI.hpp>
#include <string>
#include <utility>

namespace shrink::cli {

struct TrainFlags {
  int epochs = 3, batch = 32, accumulate = 1, eval_every = 0, patience = 3;
  float lr = 5e-4f, weight_decay = 0.01f;
  double warmup = 0.06, clip = 1.0, max_minutes = 0;
  std::string decay = "linear";
  uint64_t seed = 0;
  // Adds --epochs --batch --accumulate --lr --warmup --decay --weight-decay --clip --max-minutes --eval-every
  // --patience --seed to `sub`, with the values already in the struct as defaults (set them first to change one).
  void add_to(CLI::App* sub);
  train::TrainOptions options() const;
};

struct DataFlags {
  std::string data;  // TSV sentence<TAB>label with a header
  int max_length = 64;
  int64_t limit = 0;  // first N rows (0: all)
  double val_fraction = 0.1;
  // Adds --data (required when `required`), --max-length, --limit, --val-fraction.
  void add_to(CLI::App* sub, bool required, const std::string& what = "TSV sentence<TAB>label with a header");
};

// Reads data.data (labels by number or by the model's id2label names), keeps the first `limit` rows, tokenizes with
// `tok` (truncated to max_length) and splits off a seeded validation share.
std::pair<train::ClassifyData, train::ClassifyData> load_classify_split(
    const DataFlags& data, const Tokenizer& tok, uint64_t seed, const std::vector<std::string>& label_names = {});

}  // namespace shrink::cli
