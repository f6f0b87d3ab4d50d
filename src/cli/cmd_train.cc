// shrink train --task classify --data FILE.tsv [--preset NAME | --init DIR] --out DIR: fine-tune or train from
// scratch a BERT-style classifier with validation, early stopping and a time budget.
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/eval/classification.h>
#include <shrink/formats/safetensors.h>
#include <shrink/models/synth.h>
#include <shrink/train/trainer.h>

#include <cstdio>
#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/common.h"

namespace shrink::cli {

void register_train(CLI::App& app) {
  auto* sub = app.add_subcommand("train", "train a classifier (BERT-style encoder) on a TSV file");
  static std::string task = "classify", data, preset = "bert-mini", init, out, tokenizer, decay = "linear";
  static int epochs = 3, batch = 32, max_length = 64, vocab_size = 8000, patience = 3, accumulate = 1,
             eval_every = 0;
  static double max_minutes = 0, val_fraction = 0.1, clip = 1.0, warmup = 0.06, dropout = 0.1;
  static float lr = 5e-4f, weight_decay = 0.01f;
  static uint64_t seed = 0;
  static CommonFlags f;
  sub->add_option("--task", task, "classify (text classification)")->check(CLI::IsMember({"classify"}));
  sub->add_option("--data", data, "TSV: sentence<TAB>label with a header")->required();
  sub->add_option("--preset", preset, "architecture and size when training from scratch (see shrink synth)");
  sub->add_option("--init", init, "start from this checkpoint directory instead of fresh weights");
  sub->add_option("--out", out, "output model directory")->required();
  sub->add_option("--tokenizer", tokenizer, "tokenizer file; default: the --init model's, else a WordPiece "
                                            "vocabulary learned from --data");
  sub->add_option("--vocab-size", vocab_size, "size of the learned WordPiece vocabulary")->check(CLI::Range(128, 1 << 20));
  sub->add_option("--epochs", epochs)->check(CLI::PositiveNumber);
  sub->add_option("--batch", batch)->check(CLI::PositiveNumber);
  sub->add_option("--accumulate", accumulate, "gradient accumulation steps")->check(CLI::PositiveNumber);
  sub->add_option("--lr", lr, "peak learning rate");
  sub->add_option("--warmup", warmup, "warmup fraction of the updates")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--decay", decay, "constant | linear | cosine");
  sub->add_option("--weight-decay", weight_decay);
  sub->add_option("--clip", clip, "max gradient norm (0: off)");
  sub->add_option("--dropout", dropout)->check(CLI::Range(0.0, 0.9));
  sub->add_option("--max-length", max_length, "tokens per example including [CLS]/[SEP]")->check(CLI::Range(4, 512));
  sub->add_option("--max-minutes", max_minutes, "time budget (0: none)");
  sub->add_option("--val-fraction", val_fraction, "share of --data held out for validation")->check(CLI::Range(0.0, 0.9));
  sub->add_option("--eval-every", eval_every, "updates between validation runs (0: each epoch)");
  sub->add_option("--patience", patience, "validation runs without improvement before stopping (0: never)");
  sub->add_option("--seed", seed);
  add_common_flags(sub, f);
  sub->callback([] {
    apply(f);
    const LabeledText raw = read_labeled_tsv(data);
    check(!raw.texts.empty(), "{}: no examples; expected sentence<TAB>label lines after the header", data);
    int labels = 0;
    for (int l : raw.labels) labels = std::max(labels, l + 1);
    // Tokenizer: given, the init model's, or learned here.
    std::unique_ptr<Tokenizer> tok;
    std::filesystem::path tok_file;
    std::string learned;  // tokenizer.json text when the vocabulary is learned here
    if (!tokenizer.empty()) {
      tok = load_tokenizer(tokenizer);
      tok_file = tokenizer;
    } else if (!init.empty()) {
      tok = load_tokenizer(init);
      tok_file = std::filesystem::path(init) / "tokenizer.json";
      check(std::filesystem::exists(tok_file), "{}: no tokenizer.json to copy into the trained model; pass --tokenizer",
            init);
    } else {
      learned = train::build_wordpiece_tokenizer(raw.texts, vocab_size).dump();
      tok = parse_tokenizer_json(learned, "learned WordPiece vocabulary");
    }
    // Model.
    std::unique_ptr<train::TrainableEncoder> model;
    if (!init.empty()) {
      ModelConfig cfg = read_config(std::filesystem::path(init) / "config.json");
      if (cfg.num_labels != labels) {
        cfg.num_labels = labels;
        cfg.id2label.clear();
        cfg.raw.erase("id2label");
        cfg.raw.erase("label2id");
        cfg.raw["num_labels"] = labels;
      }
      model = std::make_unique<train::TrainableEncoder>(cfg, read_safetensors_model(init).tensors, seed);
    } else {
      const SynthPreset& p = find_synth_preset(preset);
      check(p.arch == "bert" || p.arch == "distilbert", "--preset {} is a {} model; train --task classify needs a "
            "bert or distilbert preset", preset, p.arch);
      nlohmann::json j = synth_config_json(p);
      j["vocab_size"] = tok->vocab_size();
      j["num_labels"] = labels;
      j.erase("id2label");
      j.erase("label2id");
      j["max_position_embeddings"] = std::max(max_length, 64);
      model = std::make_unique<train::TrainableEncoder>(parse_config(j, "preset " + preset), seed);
    }
    model->dropout = static_cast<float>(dropout);
    const auto all = train::tokenize_classify(raw, *tok, max_length);
    auto [tr, va] = train::split_data(all, val_fraction, seed);
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
    if (!f.quiet && !f.json)
      std::fprintf(stderr, "training %s (%d layers, hidden %d) on %zu examples, validating on %zu\n",
                   model->config().model_type.c_str(), model->config().num_layers, model->config().hidden_size,
                   tr.size(), va.size());
    Progress bar("train", 1, f.quiet || f.json);
    int64_t last = 0;
    const auto rep = train::train_classifier(*model, tr, va, o, [&](const train::TrainProgress& p) {
      if (f.quiet || f.json || p.step - last < 10) return;
      last = p.step;
      std::fprintf(stderr, "\rstep %lld/%lld  loss %.4f  val acc %s  elapsed %.0fs  ETA %.0fs   ",
                   static_cast<long long>(p.step), static_cast<long long>(p.total_steps), p.loss,
                   p.val_accuracy < 0 ? "-" : fmt::format("{:.2f}%", 100 * p.val_accuracy).c_str(), p.elapsed_s,
                   p.eta_s);
      if (!stderr_is_tty()) std::fprintf(stderr, "\n");
    });
    if (!f.quiet && !f.json) std::fprintf(stderr, "\n");
    model->save(out, tok_file);
    if (!learned.empty()) {
      AtomicFileWriter w(std::filesystem::path(out) / "tokenizer.json");
      w.write(learned.data(), learned.size());
      w.commit();
    }
    nlohmann::json j = rep.to_json();
    j["out"] = out;
    j["train_examples"] = tr.size();
    j["val_examples"] = va.size();
    j["val_accuracy"] = rep.best_val_accuracy;
    if (f.json)
      print_json(j);
    else if (!f.quiet)
      std::printf("%s: val accuracy %.2f%% after %lld updates in %.1f s (%.0f samples/s, %.0f%% of time in GEMM)\n",
                  out.c_str(), 100 * rep.best_val_accuracy, static_cast<long long>(rep.steps), rep.seconds,
                  rep.samples_per_s, 100 * rep.gemm_share);
  });
}

}  // namespace shrink::cli
