// shrink lowrank MODEL --rank R | --energy E [--layers REGEX] --out DIR: truncated-SVD factorization of chosen
// linears, with optional recovery fine-tuning of an encoder classifier, text (--data) or ViT (--images) (factors
// trained through linear_hook).
#include <fmt/format.h>
#include <shrink/compress/lowrank.h>
#include <shrink/core/error.h>
#include <shrink/formats/config.h>
#include <shrink/formats/model_dir.h>
#include <shrink/formats/safetensors.h>
#include <shrink/train/qat.h>
#include <shrink/train/trainer.h>

#include <cstdio>
#include <map>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/train_flags.h"

namespace shrink::cli {

namespace {

struct Flags {
  std::string model, tokenizer, out, layers;
  DataFlags data;
  int64_t rank = 0;
  double energy = 0, dropout = 0.1, max_minutes = 0;
  int epochs = 0, batch = 32;
  float lr = 2e-4f;
  uint64_t seed = 0;
  CommonFlags common;
};

Flags& F() {
  static Flags f;
  return f;
}

// Recovery: the classifier's weights on the tape with every factored slot computed as B (A x) + b, A and B trained
// as extra parameters; then the engine model is rebuilt from the trained weights with the trained factors.
std::unique_ptr<Model> recover(const Model& factored, const train::ClassifySource& tr, const train::ClassifySource& va,
                               nlohmann::json& info) {
  const Flags& f = F();
  train::TrainableEncoder enc(factored.config(), factored.tensors(), f.seed);
  enc.dropout = static_cast<float>(f.dropout);
  struct Factors {
    train::Var a, b;
  };
  auto factors = std::make_shared<std::map<std::string, Factors>>();
  for (const auto& s : factored.linears())
    if (const LowRankLinear* lr = as_lowrank(s.impl.get())) {
      Factors fa{train::parameter(lr->a().clone()), train::parameter(lr->b().clone())};
      enc.extra_parameters.push_back({s.name + "." + kLowRankA, fa.a, true});
      enc.extra_parameters.push_back({s.name + "." + kLowRankB, fa.b, true});
      factors->emplace(s.name, fa);
    }
  enc.linear_hook = [factors](const std::string& slot, const train::Var& x, const train::Var& w, const train::Var& b) {
    auto it = factors->find(slot);
    if (it == factors->end()) return train::linear(x, w, b);
    return train::linear(train::linear(x, it->second.a, train::Var()), it->second.b, b);
  };
  train::TrainOptions o;
  o.epochs = f.epochs;
  o.batch = f.batch;
  o.lr = f.lr;
  o.seed = f.seed;
  o.max_minutes = f.max_minutes;
  const auto rep = train::train_classifier(enc, tr, va, o);
  info = rep.to_json();
  auto m = build_model(factored.config(), enc.state(), factored.source());
  for (auto& [name, fa] : *factors) {
    LinearSlot* s = m->find_linear(name);
    check(s != nullptr, "lowrank recovery: the rebuilt model has no Linear '{}'", name);
    s->impl = std::make_unique<LowRankLinear>(fa.a.value().clone(), fa.b.value().clone(), s->bias);
    s->weight = Tensor();
  }
  return m;
}

void run() {
  Flags& f = F();
  if ((f.rank > 0) == (f.energy > 0)) fail("lowrank: give exactly one of --rank R or --energy E (e.g. --energy 0.9)");
  if (f.epochs > 0 && !f.data.given())
    fail("lowrank: --epochs (recovery fine-tuning) needs --data FILE.tsv or --images [DIR]");
  const bool quiet = f.common.quiet || f.common.json;
  auto model = open_model(f.model, f.tokenizer);

  // Validation rows (and training rows for recovery) from --data / --images, split as shrink train splits them.
  ClassifySplit data;
  EncoderModel* em = nullptr;
  double acc_before = -1;
  if (f.data.given()) {
    em = &as_encoder(*model, f.data.images_given ? "lowrank --images" : "lowrank --data");
    data = load_classify_sources(f.data, model->config(), f.model,
                                 em->takes_images() ? nullptr : &model->require_tokenizer(), f.seed);
    check(data.val->size() > 0, "lowrank: the validation split of {} is empty; raise --val-fraction",
          f.data.describe());
    acc_before = train::engine_accuracy(*em, *data.val);
  }
  const train::ClassifySource* va = data.val.get();

  LowRankOptions opt;
  opt.rank = f.rank;
  opt.energy = f.energy;
  opt.layers = f.layers;
  opt.seed = f.seed;
  const LowRankReport rep = lowrank_model(*model, opt);
  for (const auto& l : rep.layers)
    if (!quiet && l.rank == 0) std::fprintf(stderr, "%s: %s\n", l.name.c_str(), l.note.c_str());

  nlohmann::json j;
  double acc_factored = -1, acc_recovered = -1;
  if (em) acc_factored = train::engine_accuracy(*em, *va);
  if (f.epochs > 0 && rep.factored > 0) {
    if (!quiet)
      std::fprintf(stderr, "recovery: fine-tuning the factors for %d epochs on %zu rows\n", f.epochs,
                   data.train->size());
    nlohmann::json tj;
    model = recover(*model, *data.train, *va, tj);
    j["recovery"] = tj;
    acc_recovered = train::engine_accuracy(as_encoder(*model, "lowrank"), *va);
  }

  SaveOptions so;
  so.tokenizer = f.tokenizer;
  so.recipe = {
      {"command", "lowrank"}, {"rank", f.rank}, {"energy", f.energy}, {"layers", opt.layers}, {"epochs", f.epochs}};
  const SaveResult saved = save_model(*model, f.out, so);

  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : rep.layers)
    layers.push_back({{"name", l.name},
                      {"in", l.in},
                      {"out", l.out},
                      {"rank", l.rank},
                      {"energy_kept", l.energy_kept},
                      {"bytes_before", l.bytes_before},
                      {"bytes_after", l.bytes_after},
                      {"note", l.note},
                      {"ms", l.ms}});
  j.update({{"out", saved.dir.string()},
            {"factored", rep.factored},
            {"skipped", rep.skipped},
            {"bytes_before", rep.bytes_before},
            {"bytes_after", rep.bytes_after},
            {"time_ms", rep.time_ms},
            {"size_bytes", saved.size_bytes},
            {"layers", layers}});
  if (em) {
    j["val_examples"] = va->size();
    j["accuracy_before"] = acc_before;
    j["accuracy_factored"] = acc_factored;
    if (acc_recovered >= 0) j["accuracy_recovered"] = acc_recovered;
  }
  if (f.common.json) {
    print_json(j);
    return;
  }
  if (f.common.quiet) return;
  std::printf("%s: %d layers factored, %d kept dense; linears %.3f MB -> %.3f MB (%.2fx) in %.1f s\n",
              saved.dir.string().c_str(), rep.factored, rep.skipped, rep.bytes_before / 1e6, rep.bytes_after / 1e6,
              rep.bytes_after ? static_cast<double>(rep.bytes_before) / rep.bytes_after : 1.0, rep.time_ms / 1e3);
  for (const auto& l : rep.layers)
    if (l.rank > 0)
      std::printf("  %-50s %5lld x %-5lld rank %-5lld energy %.3f  %s\n", l.name.c_str(), static_cast<long long>(l.out),
                  static_cast<long long>(l.in), static_cast<long long>(l.rank), l.energy_kept, l.note.c_str());
  if (em) {
    std::printf("  accuracy on %zu validation rows: before %.2f%%, factored %.2f%%", va->size(), 100 * acc_before,
                100 * acc_factored);
    if (acc_recovered >= 0) std::printf(", after recovery %.2f%%", 100 * acc_recovered);
    std::printf("\n");
  }
}

}  // namespace

void register_lowrank(CLI::App& app) {
  auto* sub = app.add_subcommand("lowrank", "factor linears with a truncated SVD (rank or energy), optional recovery");
  Flags& f = F();
  sub->add_option("model", f.model, "model directory or file")->required();
  sub->add_option("--rank", f.rank, "rank of every factored layer")->check(CLI::PositiveNumber);
  sub->add_option("--energy", f.energy, "smallest rank keeping this share of sum sigma^2 (0 < E <= 1)")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--layers", f.layers, "regex of slots to factor (default: every encoder/decoder block Linear)");
  sub->add_option("--out", f.out, "output directory")->required();
  sub->add_option("--tokenizer", f.tokenizer, "tokenizer file (llama2.c models); copied into the output");
  f.data.add_to(sub, false, "TSV sentence<TAB>label: report accuracy before/after on its validation split");
  sub->add_option("--epochs", f.epochs,
                  "recovery fine-tuning epochs on the training split of --data / --images (encoders)");
  sub->add_option("--batch", f.batch)->check(CLI::PositiveNumber);
  sub->add_option("--lr", f.lr, "recovery learning rate");
  sub->add_option("--max-minutes", f.max_minutes, "recovery time budget (0: none)");
  sub->add_option("--seed", f.seed);
  add_common_flags(sub, f.common);
  sub->callback([] {
    apply(F().common);
    run();
  });
}

}  // namespace shrink::cli
