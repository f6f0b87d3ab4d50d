// Shared training flags and TSV loading (src/cli/train_flags.h).
#include "cli/train_flags.h"

#include <shrink/core/error.h>
#include <shrink/eval/classification.h>

namespace shrink::cli {

void TrainFlags::add_to(CLI::App* sub) {
  sub->add_option("--epochs", epochs, "passes over the training data")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--batch", batch, "examples per step")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--accumulate", accumulate, "gradient accumulation steps per update")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--lr", lr, "peak learning rate")->capture_default_str();
  sub->add_option("--warmup", warmup, "warmup share of the updates")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  sub->add_option("--decay", decay, "constant | linear | cosine")
      ->check(CLI::IsMember({"constant", "linear", "cosine"}))
      ->capture_default_str();
  sub->add_option("--weight-decay", weight_decay, "AdamW weight decay")->capture_default_str();
  sub->add_option("--clip", clip, "max global gradient norm (0: off)")->capture_default_str();
  sub->add_option("--max-minutes", max_minutes, "time budget; the schedule is fitted to it (0: none)")
      ->capture_default_str();
  sub->add_option("--eval-every", eval_every, "updates between validation runs (0: once per epoch)")
      ->capture_default_str();
  sub->add_option("--patience", patience, "validation runs without improvement before stopping (0: never)")
      ->capture_default_str();
  sub->add_option("--seed", seed, "seed of shuffling, dropout, the split and fresh weights")->capture_default_str();
}

train::TrainOptions TrainFlags::options() const {
  train::TrainOptions o;
  o.epochs = epochs;
  o.batch = batch;
  o.accumulate = accumulate;
  o.lr = lr;
  o.warmup_fraction = warmup;
  o.decay = train::parse_decay(decay);
  o.weight_decay = weight_decay;
  o.clip = clip;
  o.max_minutes = max_minutes;
  o.eval_every = eval_every;
  o.patience = patience;
  o.seed = seed;
  return o;
}

void DataFlags::add_to(CLI::App* sub, bool required, const std::string& what) {
  auto* d = sub->add_option("--data", data, what);
  if (required) d->required();
  sub->add_option("--max-length", max_length, "tokens per example including special tokens")
      ->check(CLI::Range(4, 512))
      ->capture_default_str();
  sub->add_option("--limit", limit, "use only the first N rows (0: all)")->check(CLI::NonNegativeNumber);
  sub->add_option("--val-fraction", val_fraction, "share of the rows held out for validation")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
}

std::pair<train::ClassifyData, train::ClassifyData> load_classify_split(const DataFlags& d, const Tokenizer& tok,
                                                                        uint64_t seed,
                                                                        const std::vector<std::string>& label_names) {
  check(!d.data.empty(), "--data FILE.tsv is required (sentence<TAB>label with a header)");
  LabeledText raw = read_labeled_tsv(d.data, label_names);
  check(!raw.texts.empty(), "{}: no examples; expected sentence<TAB>label lines after the header", d.data);
  if (d.limit > 0 && static_cast<size_t>(d.limit) < raw.texts.size()) {
    raw.texts.resize(static_cast<size_t>(d.limit));
    raw.labels.resize(static_cast<size_t>(d.limit));
  }
  return train::split_data(train::tokenize_classify(raw, tok, d.max_length), d.val_fraction, seed);
}

}  // namespace shrink::cli
