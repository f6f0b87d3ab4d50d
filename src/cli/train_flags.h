// Flags and data loading shared by every command that trains or evaluates a classifier (train, distill, prune, qat,
// lowrank, eval, quantize calibration): the optimizer/schedule flags with one spelling and one meaning everywhere, and
// the classification data, TSV text (--data, tokenized) or Fashion-MNIST-style images (--images, ViT patches), split
// into train/validation the same way everywhere.
#pragma once

#include <shrink/tokenizers/tokenizer.h>
#include <shrink/train/lm_trainer.h>
#include <shrink/train/trainer.h>

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <utility>

namespace shrink::cli {

// The progress line of a training run on stderr, at most every 10 updates and at the last:
// "[what ]step i/n  loss L  val acc A% | val ppl P  elapsed Es  ETA Es" (one line rewritten in place on a terminal).
// No callback (no output) when quiet.
std::function<void(const train::TrainProgress&)> progress_line(bool quiet, const std::string& what = "");
std::function<void(const train::LmProgress&)> lm_progress_line(bool quiet, const std::string& what = "");

struct TrainFlags {
  int epochs = 3, batch = 32, accumulate = 1, eval_every = 0, patience = 3;
  float lr = 5e-4f, weight_decay = 0.01f;
  double warmup = 0.06, clip = 1.0, max_minutes = 0;
  std::string decay = "linear";
  uint64_t seed = 0;
  // Adds --epochs --batch --accumulate --lr --warmup --decay --weight-decay --clip --max-minutes --eval-every
  // --patience --seed to `sub`, with the values already in the struct as defaults (set them first to change one).
  void add_to(CLI::App* sub);
  train::TrainSchedule schedule() const;
};

struct DataFlags {
  std::string data;    // TSV sentence<TAB>label with a header
  std::string images;  // directory of IDX files; "" or "fashion-mnist": the Debian dataset-fashion-mnist package
  int max_length = 64;
  int64_t limit = 0;  // first N rows / images (0: all)
  double val_fraction = 0.1;
  bool images_given = false;  // --images was on the command line (possibly without a directory)
  // Adds --data (one of --data / --images required when `required`), --images [DIR], --max-length, --limit,
  // --val-fraction.
  void add_to(CLI::App* sub, bool required, const std::string& what = "TSV sentence<TAB>label with a header");
  // --images [DIR] alone (eval has its own --limit), under the CLI11 name list `names`.
  CLI::Option* add_images_to(CLI::App* sub, const std::string& names = "--images");
  bool given() const { return !data.empty() || images_given; }
  // "--data FILE" or "--images DIR" (for reports and recipes).
  std::string describe() const;
};

// Reads data.data (labels by number or by the model's id2label names), keeps the first `limit` rows, tokenizes with
// `tok` (truncated to max_length) and splits off a seeded validation share.
std::pair<train::ClassifyData, train::ClassifyData> load_classify_split(
    const DataFlags& data, const Tokenizer& tok, uint64_t seed, const std::vector<std::string>& label_names = {});

// The directory --images names (the Debian package's for "" and "fashion-mnist").
std::filesystem::path images_dir(const DataFlags& data);
// Split "train" or "test" of the --images set, first `limit` images, checked against the ViT config `model` (image
// size, channels, the patch dividing the images, labels within num_labels); errors name `model_name`.
train::ImageSet load_images_for(const DataFlags& data, const std::string& split, const ModelConfig& model,
                                const std::string& model_name);

// Pixel values [n][1][rows][cols] scaled to [0, 1] (what EncoderModel::forward_images takes) of the first n images.
std::vector<float> image_pixels(const train::ImageSet& s, int64_t n);

// The train/validation examples of a classifier from --data or --images, whichever fits the model: a ViT
// (takes images) needs --images, a text classifier --data; the mismatch is an error naming the model and the flag to
// use. Images: the training split of the set, first --limit images, seeded --val-fraction held out exactly as
// `shrink train --task image` holds it out. Owns the image set the sources point into.
struct ClassifySplit {
  std::shared_ptr<const train::ImageSet> images;  // null for text
  std::unique_ptr<train::ClassifySource> train, val;
  bool is_images() const { return images != nullptr; }
};
// `tok` is only used (and must be non-null) for text.
ClassifySplit load_classify_sources(const DataFlags& data, const ModelConfig& model, const std::string& model_name,
                                    const Tokenizer* tok, uint64_t seed);
// The same check alone: fails when `data` is the wrong kind for `model`.
void check_data_kind(const DataFlags& data, const ModelConfig& model, const std::string& model_name);

}  // namespace shrink::cli
