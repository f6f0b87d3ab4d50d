// shrink qat DIR --scheme S --data FILE.tsv | --images [DIR] --out DIR2: quantization-aware fine-tuning of a text or
// image (ViT) classifier, then the packed model; reports fp32, post-training RTN and QAT accuracy on the same
// validation rows.
#include <fmt/format.h>
#include <shrink/core/error.h>
#include <shrink/formats/config.h>
#include <shrink/formats/model_dir.h>
#include <shrink/formats/safetensors.h>
#include <shrink/train/qat.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/train_flags.h"

namespace shrink::cli {

namespace {

struct Flags {
  std::string model, scheme = "w4a16-g32", out;
  std::vector<std::string> skip;
  int observe_steps = 50;
  double dropout = 0.1;
  TrainFlags train;
  DataFlags data;
  CommonFlags common;
  Flags() {
    train.epochs = 2;
    train.lr = 1e-4f;  // fine-tuning a trained model: lower than from scratch
  }
};

Flags& F() {
  static Flags f;
  return f;
}

void run() {
  Flags& f = F();
  namespace fs = std::filesystem;
  const fs::path dir = f.model;
  check(fs::is_directory(dir), "{}: not a directory; qat starts from a trained classifier directory (shrink train)",
        f.model);
  QuantSpec spec = parse_quant_spec(f.scheme);
  const ModelConfig cfg = read_config(dir / "config.json");
  check(cfg.num_labels > 0, "{}: config.json has no num_labels; qat trains a sequence classifier", f.model);
  check_data_kind(f.data, cfg, f.model);
  const bool images = cfg.image_size > 0;
  const fs::path tok_file = images ? fs::path() : dir / "tokenizer.json";
  check(images || fs::exists(tok_file), "{}: no tokenizer.json beside the model; qat tokenizes --data with it",
        f.model);
  const auto tok = images ? nullptr : load_tokenizer(dir);

  // The same split as `shrink train` with the same --limit/--val-fraction/--seed/--max-length: the validation rows
  // are ones the model was not trained on.
  const ClassifySplit data = load_classify_sources(f.data, cfg, f.model, tok.get(), f.train.seed);
  const train::ClassifySource &tr = *data.train, &va = *data.val;
  check(va.size() > 0, "qat: the validation split is empty; raise --val-fraction or --limit");

  train::TrainableEncoder model(cfg, read_safetensors_model(dir).tensors, f.train.seed);
  model.dropout = static_cast<float>(f.dropout);
  const bool quiet = f.common.quiet || f.common.json;
  const double fp32_acc = train::accuracy(model, va);

  train::QatOptions qo;
  qo.spec = spec;
  qo.observe_steps = f.observe_steps;
  if (!f.skip.empty()) qo.skip.insert(qo.skip.end(), f.skip.begin(), f.skip.end());

  // Post-training baseline on the untouched weights: round-to-nearest of the same slots (W8A8: dynamic per-token
  // activations, the calibration-free PTQ scheme).
  double ptq_acc = 0;
  QuantSpec ptq_spec = spec;
  ptq_spec.static_act = false;
  {
    train::TrainableEncoder probe(cfg, model.state(), f.train.seed);
    train::Qat slots(probe, qo);
    auto m = build_model(cfg, model.state(), "ptq");
    for (const auto& s : slots.slots()) {
      LinearSlot* ls = m->find_linear(s);
      check(ls != nullptr, "qat: the engine model has no Linear '{}'", s);
      const Tensor* bias = ls->bias.defined() && ls->bias.numel() > 0 ? &ls->bias : nullptr;
      ls->impl = make_packed_linear(quantize_linear_weights(ls->weight, bias, ptq_spec));
    }
    ptq_acc = train::engine_accuracy(dynamic_cast<EncoderModel&>(*m), va);
  }

  train::Qat qat(model, qo);
  train::TrainOptions o = f.train.options();
  o.after_update = [&qat](int64_t step) { qat.after_update(step); };
  if (!quiet)
    std::fprintf(stderr, "qat %s: %zu layers fake-quantized, %zu training / %zu validation examples\n",
                 spec.name().c_str(), qat.slots().size(), tr.size(), va.size());
  int64_t last = 0;
  const auto rep = train::train_classifier(model, tr, va, o, [&](const train::TrainProgress& p) {
    if (quiet || (p.step - last < 10 && p.step != p.total_steps)) return;
    last = p.step;
    const std::string acc = p.val_accuracy < 0 ? "-" : fmt::format("{:.2f}%", 100 * p.val_accuracy);
    std::fprintf(stderr, "%sstep %lld/%lld  loss %.4f  val acc %s  elapsed %.0fs  ETA %.0fs   %s",
                 stderr_is_tty() ? "\r" : "", static_cast<long long>(p.step), static_cast<long long>(p.total_steps),
                 p.loss, acc.c_str(), p.elapsed_s, p.eta_s, stderr_is_tty() ? "" : "\n");
  });
  if (!quiet && stderr_is_tty()) std::fprintf(stderr, "\n");

  const double fq_acc = train::accuracy(model, va);
  const auto fq_pred = train::predict(model, va);
  auto packed = convert_qat(model, qat);
  const auto& em = dynamic_cast<EncoderModel&>(*packed);
  const auto eng_pred = train::engine_predict(em, va);
  int64_t ok = 0, agree = 0;
  for (size_t i = 0; i < eng_pred.size(); ++i) {
    ok += eng_pred[i] == va.label(i);
    agree += eng_pred[i] == fq_pred[i];
  }
  const double qat_acc = static_cast<double>(ok) / static_cast<double>(va.size());

  SaveOptions so;
  so.tokenizer = tok_file;
  so.recipe = {{"method", "qat"},
               {"scheme", spec.name()},
               {"epochs", f.train.epochs},
               {"lr", f.train.lr},
               {"data", f.data.describe()}};
  const SaveResult saved = save_model(*packed, f.out, so);

  nlohmann::json layers = nlohmann::json::array();
  for (const auto& s : qat.slots()) {
    nlohmann::json l = {{"name", s}, {"scheme", qat.slot_spec(s).name()}};
    if (spec.scheme == WeightScheme::W8A8) {
      const auto [lo, hi] = qat.input_range(s);
      l["input_range"] = {lo, hi};
    }
    layers.push_back(l);
  }
  nlohmann::json j = rep.to_json();
  j.update({{"out", saved.dir.string()},
            {"scheme", spec.name()},
            {"val_examples", va.size()},
            {"train_examples", tr.size()},
            {"fp32_accuracy", fp32_acc},
            {"ptq_scheme", ptq_spec.name()},
            {"ptq_accuracy", ptq_acc},
            {"qat_fake_quant_accuracy", fq_acc},
            {"qat_accuracy", qat_acc},
            {"engine_agreement", static_cast<double>(agree) / static_cast<double>(va.size())},
            {"size_bytes", saved.size_bytes},
            {"layers", layers}});
  if (f.common.json) {
    print_json(j);
  } else if (!f.common.quiet) {
    std::printf("%s: %s QAT accuracy %.2f%% (packed engine; fake-quant %.2f%%, agreement %.2f%%)\n",
                saved.dir.string().c_str(), spec.name().c_str(), 100 * qat_acc, 100 * fq_acc,
                100.0 * static_cast<double>(agree) / static_cast<double>(va.size()));
    std::printf("  same %zu validation rows: fp32 %.2f%%, post-training %s RTN %.2f%%\n", va.size(), 100 * fp32_acc,
                ptq_spec.name().c_str(), 100 * ptq_acc);
    std::printf("  %lld updates in %.1f s, %.2f MB on disk\n", static_cast<long long>(rep.steps), rep.seconds,
                saved.size_bytes / 1e6);
  }
}

}  // namespace

void register_qat(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "qat",
      "quantization-aware fine-tuning of a text or ViT classifier (fake-quant W8A8 or W4), saved as the packed model");
  Flags& f = F();
  sub->add_option("model", f.model, "trained classifier directory (shrink train output)")->required();
  sub->add_option("--scheme", f.scheme,
                  "w8a8 (int8 weights, static int8 activations with trained ranges) | w4a16-g32|g64|g128[-asym]");
  sub->add_option("--out", f.out, "output directory (packed model)")->required();
  sub->add_option("--skip", f.skip, "regex of more slots kept in fp32 (classifier heads always are)");
  f.data.add_to(sub, true, "TSV sentence<TAB>label with a header (the training data)");
  f.train.add_to(sub);
  sub->add_option("--dropout", f.dropout)->check(CLI::Range(0.0, 0.9));
  sub->add_option("--observe-steps", f.observe_steps,
                  "w8a8: updates during which activation ranges follow the batch min/max (EMA) before being learned");
  add_common_flags(sub, f.common);
  sub->callback([] {
    apply(F().common);
    run();
  });
}

}  // namespace shrink::cli
