// Shared training flags and classification data loading, TSV or images (src/cli/train_flags.h).
#include "cli/train_flags.h"

#include <fmt/format.h>
#include <shrink/core/error.h>
#include <shrink/eval/classification.h>
#include <shrink/train/data.h>

#include <cstdio>

#include "cli/common.h"

namespace shrink::cli {

namespace {

template <class P>
std::function<void(const P&)> progress(bool quiet, const std::string& what) {
  if (quiet) return {};
  auto last = std::make_shared<int64_t>(0);
  const std::string prefix = what.empty() ? "" : what + " ";
  return [last, prefix](const P& p) {
    if (p.step - *last < 10 && p.step != p.total_steps) return;
    *last = p.step;
    std::string val;
    if constexpr (std::is_same_v<P, train::TrainProgress>)
      val = p.val_accuracy < 0 ? "-" : fmt::format("val acc {:.2f}%", 100 * p.val_accuracy);
    else
      val = p.val_ppl < 0 ? "-" : fmt::format("val ppl {:.3f}", p.val_ppl);
    const bool tty = stderr_is_tty();
    std::fprintf(stderr, "%s%sstep %lld/%lld  loss %.4f  %s  elapsed %.0fs  ETA %.0fs   %s", tty ? "\r" : "",
                 prefix.c_str(), static_cast<long long>(p.step), static_cast<long long>(p.total_steps), p.loss,
                 val.c_str(), p.elapsed_s, p.eta_s, tty ? "" : "\n");
    if (p.step == p.total_steps && tty) std::fprintf(stderr, "\n");
  };
}

}  // namespace

std::function<void(const train::TrainProgress&)> progress_line(bool quiet, const std::string& what) {
  return progress<train::TrainProgress>(quiet, what);
}
std::function<void(const train::LmProgress&)> lm_progress_line(bool quiet, const std::string& what) {
  return progress<train::LmProgress>(quiet, what);
}

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

train::TrainSchedule TrainFlags::schedule() const {
  train::TrainSchedule o;
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
  auto* d =
      sub->add_option("--data", data, what + (required ? " (text classifiers; this or --images is required)" : ""));
  auto* im = add_images_to(sub);
  d->excludes(im);
  sub->add_option("--max-length", max_length, "text: tokens per example including special tokens")
      ->check(CLI::Range(4, 512))
      ->capture_default_str();
  sub->add_option("--limit", limit, "use only the first N rows / images (0: all)")->check(CLI::NonNegativeNumber);
  sub->add_option("--val-fraction", val_fraction, "share of the rows held out for validation")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
}

CLI::Option* DataFlags::add_images_to(CLI::App* sub, const std::string& names) {
  return sub
      ->add_option_function<std::string>(
          names,
          [this](const std::string& dir) {
            images = dir;
            images_given = true;
          },
          "image classifiers (ViT): directory of Fashion-MNIST-style IDX files; without DIR or with "
          "'fashion-mnist': the dataset-fashion-mnist package")
      ->expected(0, 1);
}

std::string DataFlags::describe() const {
  if (images_given) return "--images " + images_dir(*this).string();
  return "--data " + data;
}

std::pair<train::ClassifyData, train::ClassifyData> load_classify_split(const DataFlags& d, const Tokenizer& tok,
                                                                        uint64_t seed,
                                                                        const std::vector<std::string>& label_names) {
  check(!d.data.empty(), "--data FILE.tsv is required (sentence<TAB>label with a header){}",
        d.images_given ? "; --images feeds ViT image classifiers" : "");
  LabeledText raw = read_labeled_tsv(d.data, label_names);
  check(!raw.texts.empty(), "{}: no examples; expected sentence<TAB>label lines after the header", d.data);
  if (d.limit > 0 && static_cast<size_t>(d.limit) < raw.texts.size()) {
    raw.texts.resize(static_cast<size_t>(d.limit));
    raw.labels.resize(static_cast<size_t>(d.limit));
  }
  return train::split_data(train::tokenize_classify(raw, tok, d.max_length), d.val_fraction, seed);
}

std::filesystem::path images_dir(const DataFlags& d) {
  return d.images.empty() || d.images == "fashion-mnist" ? train::fashion_mnist_dir() : std::filesystem::path(d.images);
}

void check_data_kind(const DataFlags& d, const ModelConfig& c, const std::string& name) {
  const bool vit = c.image_size > 0;
  if (!d.given())
    fail("{}: no data; pass {}", name,
         vit ? "--images [DIR] (Fashion-MNIST IDX files; default: the dataset-fashion-mnist package)"
             : "--data FILE.tsv (sentence<TAB>label with a header)");
  if (vit && !d.data.empty())
    fail(
        "{}: {} is an image classifier (ViT, {}x{} images, patch {}); it cannot read text from --data {}; pass "
        "--images [DIR] (Fashion-MNIST IDX files) instead",
        name, c.architecture, c.image_size, c.image_size, c.patch_size, d.data);
  if (!vit && d.images_given)
    fail(
        "{}: {} ({}) is a text model; --images feeds ViT image classifiers (train one with `shrink train --task "
        "image`); pass --data FILE.tsv for this model",
        name, c.architecture, c.model_type);
}

train::ImageSet load_images_for(const DataFlags& d, const std::string& split, const ModelConfig& c,
                                const std::string& name) {
  check_data_kind(d, c, name);
  train::ImageSet s = train::load_fashion_mnist(split, images_dir(d));
  const std::string where = images_dir(d).string();
  check(s.n > 0, "{}: the {} split holds no images", where, split);
  if (s.rows % c.patch_size != 0 || s.cols % c.patch_size != 0)
    fail("{}: patch size {} of {} does not divide the {}x{} images; use a model trained on these images", where,
         c.patch_size, name, s.rows, s.cols);
  if (s.rows != c.image_size || s.cols != c.image_size || c.num_channels != 1)
    fail(
        "{}: the images are {}x{} with 1 channel; {} expects {}x{} with {} channel(s) (config.json image_size, "
        "num_channels)",
        where, s.rows, s.cols, name, c.image_size, c.image_size, c.num_channels);
  if (d.limit > 0 && d.limit < s.n) {
    s.n = d.limit;
    s.pixels.resize(static_cast<size_t>(s.n * s.rows * s.cols));
    s.labels.resize(static_cast<size_t>(s.n));
  }
  for (int64_t i = 0; i < s.n; ++i)
    check(s.labels[i] >= 0 && s.labels[i] < c.num_labels,
          "{}: image {} of the {} split has label {}; {} has {} labels (num_labels)", where, i, split, s.labels[i],
          name, c.num_labels);
  return s;
}

std::vector<float> image_pixels(const train::ImageSet& s, int64_t n) {
  n = std::min(n, s.n);
  std::vector<float> px(static_cast<size_t>(n * s.rows * s.cols));
  for (size_t i = 0; i < px.size(); ++i) px[i] = s.pixels[i] / 255.f;
  return px;
}

ClassifySplit load_classify_sources(const DataFlags& d, const ModelConfig& c, const std::string& name,
                                    const Tokenizer* tok, uint64_t seed) {
  check_data_kind(d, c, name);
  ClassifySplit out;
  if (d.images_given) {
    auto set = std::make_shared<const train::ImageSet>(load_images_for(d, "train", c, name));
    auto [tr, va] = train::split_images(*set, c.patch_size, d.val_fraction, seed);
    out.images = set;
    out.train = std::make_unique<train::ImageData>(std::move(tr));
    out.val = std::make_unique<train::ImageData>(std::move(va));
    return out;
  }
  check(tok != nullptr, "{}: no tokenizer to read --data {} with", name, d.data);
  auto [tr, va] = load_classify_split(d, *tok, seed);
  for (const train::ClassifyData* part : {&tr, &va})
    for (int32_t l : part->labels)
      check(l >= 0 && l < c.num_labels, "{}: label {} is outside the {} labels of {}", d.data, l, c.num_labels, name);
  out.train = std::make_unique<train::ClassifyData>(std::move(tr));
  out.val = std::make_unique<train::ClassifyData>(std::move(va));
  return out;
}

}  // namespace shrink::cli
