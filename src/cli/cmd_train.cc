// shrink train --task classify --data FILE.tsv | --images [DIR] | --task lm --data FILE.txt: train or fine-tune a
// BERT-style text classifier, a ViT image classifier (Fashion-MNIST) or a LLaMA-style language model, with
// validation, early stopping and a time budget.
#include <fmt/format.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/eval/classification.h>
#include <shrink/formats/safetensors.h>
#include <shrink/models/synth.h>
#include <shrink/train/data.h>
#include <shrink/train/lm_trainer.h>
#include <shrink/train/trainer.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/train_flags.h"

namespace shrink::cli {

namespace {

struct Flags {
  std::string task = "classify", data, preset = "bert-mini", init, out, tokenizer;
  TrainFlags train;  // the optimizer and schedule
  int max_length = 64, vocab_size = 8000;
  int hidden = 64, layers = 4, heads = 4, ff = 128, patch = 4, kv_heads = 0, ctx = 128;
  int64_t limit = 0;
  double val_fraction = 0.1, dropout = 0.1;
  DataFlags images;  // --images [DIR]: --task image, as every other command that takes images spells it
  CommonFlags common;
  CLI::App* sub = nullptr;
  bool given(const char* flag) const { return sub && sub->count(flag) > 0; }
};

Flags& F() {
  static Flags f;
  return f;
}

// Trains with a progress line on stderr; prints the summary or the JSON report.
train::TrainReport run(train::TrainableEncoder& model, const train::ClassifySource& tr,
                       const train::ClassifySource& va) {
  const Flags& f = F();
  const bool quiet = f.common.quiet || f.common.json;
  if (!quiet)
    std::fprintf(stderr, "training %s (%d layers, hidden %d) on %zu examples, validating on %zu\n",
                 model.config().model_type.c_str(), model.config().num_layers, model.config().hidden_size, tr.size(),
                 va.size());
  return train::train_classifier(model, tr, va, train::TrainOptions(f.train.schedule()), progress_line(quiet));
}

void report(const train::TrainReport& rep, size_t ntr, size_t nva, nlohmann::json extra) {
  const Flags& f = F();
  nlohmann::json j = rep.to_json();
  j["out"] = f.out;
  j["train_examples"] = ntr;
  j["val_examples"] = nva;
  j["val_accuracy"] = rep.best_val_accuracy;
  j.update(extra);
  if (f.common.json)
    print_json(j);
  else if (!f.common.quiet)
    std::printf("%s: val accuracy %.2f%%%s after %lld updates in %.1f s (%.0f samples/s, %.0f%% of time in GEMM)\n",
                f.out.c_str(), 100 * rep.best_val_accuracy,
                extra.contains("test_accuracy")
                    ? fmt::format(", test accuracy {:.2f}%", 100 * extra["test_accuracy"].get<double>()).c_str()
                    : "",
                static_cast<long long>(rep.steps), rep.seconds, rep.samples_per_s, 100 * rep.gemm_share);
}

void train_text() {
  Flags& f = F();
  if (f.data.empty()) fail("train --task classify needs --data FILE.tsv (sentence<TAB>label with a header)");
  LabeledText raw = read_labeled_tsv(f.data);
  check(!raw.texts.empty(), "{}: no examples; expected sentence<TAB>label lines after the header", f.data);
  if (f.limit > 0 && static_cast<size_t>(f.limit) < raw.texts.size()) {
    raw.texts.resize(f.limit);
    raw.labels.resize(f.limit);
  }
  int labels = 0;
  for (int l : raw.labels) labels = std::max(labels, l + 1);
  // Tokenizer: given, the init model's, or learned here.
  std::unique_ptr<Tokenizer> tok;
  std::filesystem::path tok_file;
  std::string learned;  // tokenizer.json text when the vocabulary is learned here
  if (!f.tokenizer.empty()) {
    tok = load_tokenizer(f.tokenizer);
    tok_file = f.tokenizer;
  } else if (!f.init.empty()) {
    tok = load_tokenizer(f.init);
    tok_file = std::filesystem::path(f.init) / "tokenizer.json";
    check(std::filesystem::exists(tok_file), "{}: no tokenizer.json to copy into the trained model; pass --tokenizer",
          f.init);
  } else {
    learned = train::build_wordpiece_tokenizer(raw.texts, f.vocab_size).dump();
    tok = parse_tokenizer_json(learned, "learned WordPiece vocabulary");
  }
  std::unique_ptr<train::TrainableEncoder> model;
  if (!f.init.empty()) {
    ModelConfig cfg = read_config(std::filesystem::path(f.init) / "config.json");
    if (cfg.num_labels != labels) {
      cfg.num_labels = labels;
      cfg.id2label.clear();
      cfg.raw.erase("id2label");
      cfg.raw.erase("label2id");
      cfg.raw["num_labels"] = labels;
    }
    model = std::make_unique<train::TrainableEncoder>(cfg, read_safetensors_model(f.init).tensors, f.train.seed);
  } else {
    const SynthPreset& p = find_synth_preset(f.preset);
    check(p.arch == "bert" || p.arch == "distilbert",
          "--preset {} is a {} model; train --task classify needs a bert or distilbert preset", f.preset, p.arch);
    nlohmann::json j = synth_config_json(p);
    j["vocab_size"] = tok->vocab_size();
    j["num_labels"] = labels;
    j.erase("id2label");
    j.erase("label2id");
    j["max_position_embeddings"] = std::max(f.max_length, 64);
    model = std::make_unique<train::TrainableEncoder>(parse_config(j, "preset " + f.preset), f.train.seed);
  }
  model->dropout = static_cast<float>(f.dropout);
  const auto all = train::tokenize_classify(raw, *tok, f.max_length);
  auto [tr, va] = train::split_data(all, f.val_fraction, f.train.seed);
  const auto rep = run(*model, tr, va);
  model->save(f.out, tok_file);
  if (!learned.empty()) {
    AtomicFileWriter w(std::filesystem::path(f.out) / "tokenizer.json");
    w.write(learned.data(), learned.size());
    w.commit();
  }
  report(rep, tr.size(), va.size(), nlohmann::json::object());
}

void train_lm() {
  Flags& f = F();
  if (f.data.empty()) fail("train --task lm needs --data FILE.txt (plain text)");
  std::string text = read_text_file(f.data);
  check(!text.empty(), "{}: the text file is empty; language-model training needs text", f.data);
  if (f.limit > 0 && static_cast<size_t>(f.limit) < text.size()) text.resize(f.limit);  // bytes for text
  std::unique_ptr<train::TrainableDecoder> model;
  std::unique_ptr<Tokenizer> tok;
  std::filesystem::path tok_file;
  std::string learned;
  if (!f.init.empty()) {
    auto m = open_model(f.init, f.tokenizer);
    as_decoder(*m, "train --task lm");
    model = std::make_unique<train::TrainableDecoder>(m->config(), m->tensors());
    tok_file = train::tokenizer_file_of(f.init, f.tokenizer);
    tok = load_tokenizer(tok_file, m->config().vocab_size);
  } else {
    if (!f.tokenizer.empty()) {
      tok = load_tokenizer(f.tokenizer);
      tok_file = f.tokenizer;
    } else {
      learned = train::byte_level_tokenizer_json().dump();
      tok = parse_tokenizer_json(learned, "byte-level tokenizer");
    }
    const std::string preset = f.given("--preset") ? f.preset : "llama-tiny";
    const SynthPreset& p = find_synth_preset(preset);
    check(p.arch == "llama", "--preset {} is a {} model; train --task lm needs a llama preset (e.g. llama-tiny)",
          preset, p.arch);
    nlohmann::json j = synth_config_json(p);
    j["vocab_size"] = tok->vocab_size();
    j["max_position_embeddings"] = std::max<int>(f.ctx, p.context);
    if (f.given("--hidden")) j["hidden_size"] = f.hidden;
    if (f.given("--layers")) j["num_hidden_layers"] = f.layers;
    if (f.given("--heads")) j["num_attention_heads"] = f.heads;
    if (f.given("--heads") || f.given("--kv-heads")) j["num_key_value_heads"] = f.kv_heads > 0 ? f.kv_heads : f.heads;
    if (f.given("--ff")) j["intermediate_size"] = f.ff;
    check(j["hidden_size"].get<int>() % j["num_attention_heads"].get<int>() == 0,
          "hidden size {} is not a multiple of {} heads", j["hidden_size"].get<int>(),
          j["num_attention_heads"].get<int>());
    j.erase("head_dim");
    if (tok->bos_id() >= 0) j["bos_token_id"] = tok->bos_id();
    if (tok->eos_id() >= 0) j["eos_token_id"] = tok->eos_id();
    model = std::make_unique<train::TrainableDecoder>(parse_config(j, "preset " + preset), f.train.seed);
  }
  const std::vector<int32_t> ids = tok->encode(text, false);
  auto [tr, va] = train::split_lm_data(ids, f.ctx, f.val_fraction);
  const bool quiet = f.common.quiet || f.common.json;
  if (!quiet)
    std::fprintf(stderr,
                 "training llama LM (%d layers, hidden %d, %lld parameters) on %zu chunks of %d tokens, "
                 "validating on %zu\n",
                 model->config().num_layers, model->config().hidden_size,
                 static_cast<long long>(model->parameter_count()), tr.size(), f.ctx, va.size());
  const train::TrainSchedule c = F().train.schedule();
  train::LmTrainOptions o(c);
  o.lr = f.given("--lr") ? c.lr : 2e-3f;
  o.decay = f.given("--decay") ? c.decay : train::Decay::Cosine;
  const auto rep = train::train_lm(*model, tr, va, o, lm_progress_line(quiet));
  model->save(f.out, tok_file);
  if (!learned.empty()) {
    AtomicFileWriter w(std::filesystem::path(f.out) / "tokenizer.json");
    w.write(learned.data(), learned.size());
    w.commit();
  }
  nlohmann::json j = rep.to_json();
  j["out"] = f.out;
  j["train_chunks"] = tr.size();
  j["val_chunks"] = va.size();
  j["ctx"] = f.ctx;
  j["val_ppl"] = rep.best_val_ppl;
  j["parameters"] = model->parameter_count();
  if (f.common.json)
    print_json(j);
  else if (!f.common.quiet)
    std::printf(
        "%s: val perplexity %.3f (from %.3f) after %lld updates in %.1f s (%.0f tokens/s, %.0f%% of time in "
        "GEMM)\n",
        f.out.c_str(), rep.best_val_ppl, rep.initial_val_ppl, static_cast<long long>(rep.steps), rep.seconds,
        rep.tokens_per_s, 100 * rep.gemm_share);
}

void train_image() {
  Flags& f = F();
  const std::filesystem::path dir = f.images.images_given ? images_dir(f.images)
                                    : f.data.empty()      ? train::fashion_mnist_dir()
                                                          : std::filesystem::path(f.data);
  train::ImageSet train_set = train::load_fashion_mnist("train", dir);
  const train::ImageSet test_set = train::load_fashion_mnist("test", dir);
  if (f.limit > 0 && f.limit < train_set.n) {
    train_set.n = f.limit;
    train_set.pixels.resize(static_cast<size_t>(f.limit * train_set.rows * train_set.cols));
    train_set.labels.resize(f.limit);
  }
  std::optional<ModelConfig> init_config;
  if (!f.init.empty()) {
    // Fine-tuning a ViT: its patches and image size are the model's, not --patch's default.
    init_config = read_config(std::filesystem::path(f.init) / "config.json");
    if (init_config->image_size <= 0 || init_config->patch_size <= 0)
      fail("--init {}: a {} takes no images; --task image fine-tunes a ViT image classifier", f.init,
           init_config->architecture);
    if (f.given("--patch") && f.patch != init_config->patch_size)
      fail("--patch {}: the model in --init {} reads {}x{} patches; drop --patch (the model's is used)", f.patch,
           f.init, init_config->patch_size, init_config->patch_size);
    if (init_config->image_size != train_set.rows || train_set.rows != train_set.cols)
      fail("--init {}: the model takes {}x{} images, the data set has {}x{}", f.init, init_config->image_size,
           init_config->image_size, train_set.rows, train_set.cols);
    f.patch = init_config->patch_size;
  }
  check(train_set.rows % f.patch == 0, "--patch {} does not divide the {}x{} images", f.patch, train_set.rows,
        train_set.cols);
  check(f.hidden % f.heads == 0, "--hidden {} is not a multiple of --heads {}", f.hidden, f.heads);
  std::unique_ptr<train::TrainableEncoder> model;
  if (!f.init.empty()) {
    model =
        std::make_unique<train::TrainableEncoder>(*init_config, read_safetensors_model(f.init).tensors, f.train.seed);
  } else {
    nlohmann::json j = {{"architectures", {"ViTForImageClassification"}},
                        {"model_type", "vit"},
                        {"hidden_size", f.hidden},
                        {"num_hidden_layers", f.layers},
                        {"num_attention_heads", f.heads},
                        {"intermediate_size", f.ff},
                        {"hidden_act", "gelu"},
                        {"layer_norm_eps", 1e-12},
                        {"image_size", train_set.rows},
                        {"patch_size", f.patch},
                        {"num_channels", 1},
                        {"qkv_bias", true},
                        {"num_labels", 10}};
    const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                            "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    for (int i = 0; i < 10; ++i) j["id2label"][std::to_string(i)] = names[i];
    ModelConfig c;
    c.architecture = "ViTForImageClassification";
    c.model_type = "vit";
    c.hidden_size = f.hidden;
    c.num_layers = f.layers;
    c.num_heads = c.num_kv_heads = f.heads;
    c.head_dim = f.hidden / f.heads;
    c.intermediate_size = f.ff;
    c.hidden_act = "gelu";
    c.norm_eps = 1e-12f;
    c.image_size = static_cast<int>(train_set.rows);
    c.patch_size = f.patch;
    c.num_channels = 1;
    c.num_labels = 10;
    c.id2label = names;
    c.max_position_embeddings = static_cast<int>((train_set.rows / f.patch) * (train_set.cols / f.patch) + 1);
    c.raw = j;
    model = std::make_unique<train::TrainableEncoder>(c, f.train.seed);
  }
  model->dropout = static_cast<float>(f.dropout);
  auto [tr, va] = train::split_images(train_set, f.patch, f.val_fraction, f.train.seed);
  const auto rep = run(*model, tr, va);
  train::ImageData test;
  test.set = &test_set;
  test.patch = f.patch;
  const double test_acc = train::accuracy(*model, test, 256);
  model->save(f.out);
  report(rep, tr.size(), va.size(), {{"test_accuracy", test_acc}, {"test_examples", test_set.n}});
}

}  // namespace

void register_train(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "train", "train a text classifier (BERT-style), an image classifier (ViT) or a language model (LLaMA-style)");
  Flags& f = F();
  f.sub = sub;
  sub->add_option("--task", f.task, "classify (text, TSV) | image (Fashion-MNIST IDX, ViT) | lm (plain text, LLaMA)")
      ->check(CLI::IsMember({"classify", "image", "lm"}));
  auto* data = sub->add_option("--data", f.data,
                               "classify: TSV sentence<TAB>label with a header; image: directory of Fashion-MNIST "
                               "IDX files (default: the dataset-fashion-mnist package)");
  data->excludes(f.images.add_images_to(sub));
  sub->add_option("--preset", f.preset,
                  "architecture and size when training from scratch (shrink synth; classify default bert-mini, lm "
                  "default llama-tiny)");
  sub->add_option("--init", f.init, "start from this checkpoint directory instead of fresh weights");
  sub->add_option("--out", f.out, "output model directory")->required();
  sub->add_option("--tokenizer", f.tokenizer,
                  "classify: tokenizer file; default: the --init model's, else a WordPiece vocabulary learned from "
                  "--data. lm: tokenizer for a fresh model (default: byte-level) or of an --init llama2.c .bin");
  sub->add_option("--vocab-size", f.vocab_size, "size of the learned WordPiece vocabulary")
      ->check(CLI::Range(128, 1 << 20));
  sub->add_option("--hidden", f.hidden, "image: hidden size of the ViT; lm: overrides the preset's")
      ->check(CLI::PositiveNumber);
  sub->add_option("--layers", f.layers, "image: encoder layers; lm: overrides the preset's")
      ->check(CLI::PositiveNumber);
  sub->add_option("--heads", f.heads, "image: attention heads; lm: overrides the preset's")->check(CLI::PositiveNumber);
  sub->add_option("--kv-heads", f.kv_heads, "lm: key/value heads (grouped-query attention; default --heads)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--ff", f.ff, "image: feed-forward size; lm: overrides the preset's")->check(CLI::PositiveNumber);
  sub->add_option("--ctx", f.ctx, "lm: tokens per training sequence")->check(CLI::Range(2, 8192));
  sub->add_option("--patch", f.patch, "image: patch size in pixels (with --init: the model's)")
      ->check(CLI::IsMember({1, 2, 4, 7, 14, 28}));
  sub->add_option("--limit", f.limit, "use only the first N training examples (lm: bytes of text) (0: all)");
  sub->add_option("--epochs", f.train.epochs)->check(CLI::PositiveNumber);
  sub->add_option("--batch", f.train.batch)->check(CLI::PositiveNumber);
  sub->add_option("--accumulate", f.train.accumulate, "gradient accumulation steps")->check(CLI::PositiveNumber);
  sub->add_option("--lr", f.train.lr, "peak learning rate");
  sub->add_option("--warmup", f.train.warmup, "warmup fraction of the updates")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--decay", f.train.decay, "constant | linear | cosine");
  sub->add_option("--weight-decay", f.train.weight_decay);
  sub->add_option("--clip", f.train.clip, "max gradient norm (0: off)");
  sub->add_option("--dropout", f.dropout)->check(CLI::Range(0.0, 0.9));
  sub->add_option("--max-length", f.max_length, "classify: tokens per example including [CLS]/[SEP]")
      ->check(CLI::Range(4, 512));
  sub->add_option("--max-minutes", f.train.max_minutes, "time budget (0: none)");
  sub->add_option("--val-fraction", f.val_fraction, "share of the training data held out for validation")
      ->check(CLI::Range(0.0, 0.9));
  sub->add_option("--eval-every", f.train.eval_every, "updates between validation runs (0: each epoch)");
  sub->add_option("--patience", f.train.patience, "validation runs without improvement before stopping (0: never)");
  sub->add_option("--seed", f.train.seed);
  add_common_flags(sub, f.common);
  sub->callback([] {
    apply(F().common);
    if (F().images.images_given) {
      check(!F().given("--task") || F().task == "image",
            "train: --images trains an image classifier (--task image, a ViT); --task {} reads --data FILE instead",
            F().task);
      F().task = "image";
    }
    if (F().task == "image")
      train_image();
    else if (F().task == "lm")
      train_lm();
    else
      train_text();
  });
}

}  // namespace shrink::cli
