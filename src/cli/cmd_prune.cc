// shrink prune DIR --method magnitude|structured --sparsity S [--data FILE.tsv | --images [DIR]] --out DIR2: one-shot
// or gradual pruning (cubic ramp, recovery fine-tuning, early stop on a validation budget) of BERT / DistilBERT / ViT
// classifiers; prints a table per step.
#include <fmt/format.h>
#include <shrink/compress/prune.h>
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/formats/model_dir.h>
#include <shrink/formats/safetensors.h>
#include <shrink/train/data.h>
#include <shrink/train/trainer.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/train_flags.h"

namespace shrink::cli {

namespace {

struct Flags {
  std::string model, method = "structured", out, importance = "norm", scope = "layer";
  DataFlags data;
  double sparsity = 0.5, max_drop = 0.5;
  int steps = 1, epochs = 1, batch = 32, calib_batches = 8;
  float lr = 2e-4f;
  double max_minutes = 0;
  bool heads_only = false, ffn_only = false;
  uint64_t seed = 0;
  CommonFlags common;
};

Flags& F() {
  static Flags f;
  return f;
}

std::string params_str(int64_t n) {
  return n >= 1000000 ? fmt::format("{:.2f}M", n / 1e6) : fmt::format("{:.1f}k", n / 1e3);
}

nlohmann::json step_json(const prune::PruneStep& s) {
  return {{"step", s.step},
          {"target", s.target},
          {"achieved", s.achieved},
          {"val_accuracy", s.val_accuracy},
          {"drop_points", s.drop_points},
          {"parameters", s.parameters},
          {"seconds", s.seconds},
          {"accepted", s.accepted}};
}

void run() {
  Flags& f = F();
  namespace fs = std::filesystem;
  const prune::Method method = prune::parse_method(f.method);
  const prune::Importance importance = prune::parse_importance(f.importance);
  check(f.sparsity >= 0.0 && f.sparsity < 1.0, "--sparsity {} is outside [0, 1); e.g. 0.5 removes half", f.sparsity);
  check(!(f.heads_only && f.ffn_only), "--heads-only and --ffn-only exclude each other; pass at most one");
  check(f.scope == "layer" || f.scope == "global", "--scope '{}' is unknown; expected layer or global", f.scope);
  check(fs::is_directory(f.model) && fs::exists(fs::path(f.model) / "config.json"),
        "{}: not a model directory with config.json; shrink prune reads a Hugging Face style directory", f.model);
  ModelConfig cfg = read_config(fs::path(f.model) / "config.json");
  TensorMap tensors = read_safetensors_model(f.model).tensors;
  const bool quiet = f.common.quiet || f.common.json;

  prune::PruneOptions opt;
  opt.method = method;
  opt.sparsity = f.sparsity;
  opt.steps = f.steps;
  opt.heads = !f.ffn_only;
  opt.ffn = !f.heads_only;
  opt.global = f.scope == "global";
  opt.importance = importance;
  opt.calib_batches = f.calib_batches;
  opt.max_drop = f.max_drop;
  opt.train.epochs = std::max(f.epochs, 0);
  opt.recover = f.epochs > 0;
  opt.train.batch = f.batch;
  opt.train.lr = f.lr;
  opt.train.max_minutes = f.max_minutes;
  opt.train.seed = f.seed;
  opt.train.patience = 0;
  if (opt.train.epochs == 0) opt.train.epochs = 1;  // unused: recover is off

  const bool encoder = cfg.model_type == "bert" || cfg.model_type == "distilbert" || cfg.model_type == "vit";
  prune::PruneResult res;
  Timer timer;
  if (f.data.given()) {
    check(encoder && cfg.num_labels > 0,
          "{}: {} prunes a classifier with validation and recovery; this is a {} ({}) without a classification "
          "head. Drop it for one-shot magnitude pruning",
          f.model, f.data.images_given ? "--images" : "--data", cfg.architecture, cfg.model_type);
    const auto tok = cfg.image_size > 0 ? nullptr : load_tokenizer(f.model);
    const ClassifySplit data = load_classify_sources(f.data, cfg, f.model, tok.get(), f.seed);
    const train::ClassifySource &tr = *data.train, &va = *data.val;
    if (!quiet)
      std::fprintf(stderr, "pruning %s (%s, %s) on %zu training / %zu validation examples, %d step(s)\n",
                   f.model.c_str(), f.method.c_str(), f.importance.c_str(), tr.size(), va.size(), f.steps);
    bool header = false;
    res = prune::prune_classifier(cfg, tensors, tr, va, opt, [&](const prune::PruneStep& s) {
      if (quiet) return;
      if (!header) {
        std::printf("%-5s %-8s %-9s %-9s %-8s %-10s %-7s %s\n", "step", "target", "achieved", "val_acc", "drop",
                    "params", "time_s", "kept");
        header = true;
      }
      std::printf("%-5d %-8.3f %-9.3f %-9s %-8s %-10s %-7.1f %s\n", s.step, s.target, s.achieved,
                  fmt::format("{:.2f}%", 100 * s.val_accuracy).c_str(), fmt::format("{:+.2f}", -s.drop_points).c_str(),
                  params_str(s.parameters).c_str(), s.seconds, s.accepted ? "yes" : "no (over --max-drop)");
      std::fflush(stdout);
    });
  } else {
    // One-shot, no data: magnitude on any model's block matrices, or structured by weight norms.
    check(method == prune::Method::Magnitude || importance == prune::Importance::Norm,
          "--importance taylor needs gradients from labelled data; pass --data FILE.tsv or --images [DIR]");
    check(f.steps == 1,
          "--steps {} needs --data or --images (each step fine-tunes and validates); drop --steps for one-shot",
          f.steps);
    res.config = cfg;
    res.tensors = prune::own_f32(tensors);
    res.dense_parameters = prune::count_parameters(res.tensors);
    prune::PruneStep s;
    s.step = 1;
    s.target = f.sparsity;
    if (method == prune::Method::Magnitude) {
      const auto weights = prune::default_prunable_weights(res.tensors);
      check(!weights.empty(),
            "{}: no transformer-block weight matrices to prune (found none named like "
            "'*.layer.N.*.weight' or '*.layers.N.*.weight')",
            f.model);
      prune::apply_masks(res.tensors, prune::magnitude_masks(res.tensors, weights, f.sparsity, opt.global));
      s.achieved = prune::zero_fraction(res.tensors, weights);
    } else {
      check(encoder, "{}: structured pruning supports bert, distilbert and vit encoders; this is {} ({})", f.model,
            cfg.architecture, cfg.model_type);
      const auto r = prune::plan_removal(res.config, prune::norm_scores(res.config, res.tensors),
                                         opt.heads ? f.sparsity : 0.0, opt.ffn ? f.sparsity : 0.0, opt.global);
      prune::remove_structures(res.config, res.tensors, r);
      s.achieved = 1.0 - static_cast<double>(prune::count_parameters(res.tensors)) / res.dense_parameters;
    }
    s.parameters = prune::count_parameters(res.tensors);
    s.accepted = true;
    s.seconds = timer.elapsed_ms() * 1e-3;
    res.steps.push_back(s);
    if (!quiet)
      std::printf("one-shot %s pruning: target %.3f, achieved %.3f, parameters %s -> %s\n", f.method.c_str(),
                  f.sparsity, s.achieved, params_str(res.dense_parameters).c_str(), params_str(s.parameters).c_str());
  }
  // What was done, for info and for whoever reads the directory later.
  nlohmann::json& sp = res.config.raw["shrink_pruning"];
  if (!sp.is_object()) sp = nlohmann::json::object();
  sp["method"] = f.method;
  sp["sparsity_target"] = f.sparsity;
  if (method == prune::Method::Structured) {
    sp["importance"] = f.importance;
    sp["removed"] = f.heads_only ? "heads" : f.ffn_only ? "ffn" : "heads+ffn";
  }
  sp["steps_kept"] = static_cast<int>(
      std::count_if(res.steps.begin(), res.steps.end(), [](const prune::PruneStep& s) { return s.accepted; }));
  // build_model checks the pruned tensors as the engine will load them; save_model writes the directory atomically
  // and copies the tokenizer files beside the source.
  auto model = build_model(res.config, res.tensors, f.model);
  SaveOptions so;
  so.recipe = {{"prune", f.method}, {"sparsity", f.sparsity}, {"steps", f.steps}};
  const SaveResult saved = save_model(*model, f.out, so);
  const prune::PruneStep* last = nullptr;
  for (const auto& s : res.steps)
    if (s.accepted) last = &s;
  if (f.common.json) {
    nlohmann::json steps = nlohmann::json::array();
    for (const auto& s : res.steps) steps.push_back(step_json(s));
    print_json({{"out", f.out},
                {"method", f.method},
                {"sparsity_target", f.sparsity},
                {"sparsity", last ? last->achieved : 0.0},
                {"dense_accuracy", res.dense_accuracy},
                {"val_accuracy", last ? last->val_accuracy : res.dense_accuracy},
                {"parameters_before", res.dense_parameters},
                {"parameters", model->parameters()},
                {"stopped_early", res.stopped_early},
                {"steps", steps},
                {"size_bytes", saved.size_bytes},
                {"seconds", timer.elapsed_ms() * 1e-3}});
  } else if (!f.common.quiet) {
    if (res.dense_accuracy >= 0)
      std::printf("dense val acc %.2f%%; kept %s: val acc %.2f%%%s\n", 100 * res.dense_accuracy,
                  last ? fmt::format("step {}", last->step).c_str() : "the dense model (every step broke --max-drop)",
                  100 * (last ? last->val_accuracy : res.dense_accuracy),
                  res.stopped_early ? " (stopped early: over --max-drop)" : "");
    std::printf("%s: %s parameters (was %s), %.1f MB, %.1f s\n", f.out.c_str(), params_str(model->parameters()).c_str(),
                params_str(res.dense_parameters).c_str(), saved.size_bytes / 1e6, timer.elapsed_ms() * 1e-3);
  }
}

}  // namespace

void register_prune(CLI::App& app) {
  auto* sub = app.add_subcommand("prune", "magnitude or structured (heads, FFN neurons) pruning with recovery");
  Flags& f = F();
  sub->add_option("model", f.model, "model directory (Hugging Face style or written by shrink)")->required();
  sub->add_option("--method", f.method, "magnitude (unstructured zeros) | structured (removes heads / FFN neurons)");
  sub->add_option("--sparsity", f.sparsity,
                  "final share removed in [0, 1): of the block weights (magnitude) or of heads and FFN neurons");
  f.data.add_to(sub, false, "TSV sentence<TAB>label: validation, recovery fine-tuning and Taylor gradients");
  sub->add_option("--out", f.out, "output model directory")->required();
  sub->add_flag("--heads-only", f.heads_only, "structured: remove attention heads only");
  sub->add_flag("--ffn-only", f.ffn_only, "structured: remove FFN neurons only");
  sub->add_option("--importance", f.importance, "structured: norm | taylor (|w * grad| on --data batches)");
  sub->add_option("--scope", f.scope,
                  "layer (each layer pruned to the target) | global (one threshold / ranking over all layers)");
  sub->add_option("--steps", f.steps, "prune -> fine-tune cycles on the cubic ramp (1: one-shot)");
  sub->add_option("--epochs", f.epochs, "recovery fine-tuning epochs per step (0: none)");
  sub->add_option("--max-drop", f.max_drop, "stop when validation accuracy falls more than this many points");
  sub->add_option("--lr", f.lr, "recovery learning rate");
  sub->add_option("--batch", f.batch)->check(CLI::PositiveNumber);
  sub->add_option("--max-minutes", f.max_minutes, "time budget of each recovery (0: none)");
  sub->add_option("--calib-batches", f.calib_batches, "Taylor importance: batches of --batch examples")
      ->check(CLI::PositiveNumber);
  sub->add_option("--seed", f.seed, "split and training seed (as `shrink train`, so the validation rows match)");
  add_common_flags(sub, f.common);
  sub->callback([] {
    apply(F().common);
    run();
  });
}

}  // namespace shrink::cli
