// shrink qat DIR --scheme S --data FILE.tsv | --images [DIR] --out DIR2: quantization-aware fine-tuning of a text or
// image (ViT) classifier, then the packed model; reports fp32, post-training RTN and QAT accuracy on the same
// validation rows. shrink qat LM --text FILE [--tokenizer T] --out DIR2: the same for a LLaMA-family language model
// (llama2.c .bin or HF directory), trained by KL to its own fp32 distribution (or CE on the text); reports KLD, top-1
// agreement and perplexity of RTN and QAT against fp32 on the held-out tail of the text.
#include <fmt/format.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/eval/compare.h>
#include <shrink/formats/config.h>
#include <shrink/formats/model_dir.h>
#include <shrink/formats/safetensors.h>
#include <shrink/train/qat.h>

#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/train_flags.h"

namespace shrink::cli {

namespace {

struct Flags {
  std::string model, scheme = "w4a16-g32", out;
  std::string text, tokenizer, loss = "kl";  // language models
  int ctx = 256, sample = 0, sample_length = 0;
  std::vector<std::string> skip;
  int observe_steps = 50;
  double dropout = 0.1;
  TrainFlags train;
  DataFlags data;
  CommonFlags common;
  CLI::App* sub = nullptr;
  bool given(const char* flag) const { return sub->count(flag) > 0; }
  Flags() {
    train.epochs = 2;
    train.lr = 1e-4f;  // fine-tuning a trained model: lower than from scratch
  }
};

Flags& F() {
  static Flags f;
  return f;
}

bool quiet() {
  return F().common.quiet || F().common.json;
}

train::QatOptions qat_options(const QuantSpec& spec) {
  train::QatOptions qo;
  qo.spec = spec;
  qo.observe_steps = F().observe_steps;
  qo.skip = F().skip;
  return qo;
}

// The post-training baseline: round-to-nearest of `slots` on the untouched weights (W8A8: dynamic per-token
// activations, the calibration-free PTQ scheme).
QuantSpec ptq_spec_of(QuantSpec spec) {
  spec.static_act = false;
  return spec;
}

nlohmann::json comparison_json(const DecoderComparison& c) {
  return {{"kld", c.kld}, {"top1_agreement", c.top1_agreement}, {"ppl", c.candidate.ppl}};
}

// QAT of a language model on --text: the last --val-fraction of the text (whole --ctx chunks) is held out; the fp32,
// RTN and QAT engine models are compared on it.
void run_lm(Model& m) {
  Flags& f = F();
  check(!f.data.given(),
        "{}: {} is a language model; qat trains it on plain text: pass --text FILE instead of --data/--images", f.model,
        m.config().architecture);
  check(!f.text.empty(), "{}: qat of a language model needs --text FILE (plain text to train on)", f.model);
  const DecoderModel& base = as_decoder(m, "qat");
  std::string text = read_text_file(f.text);
  check(!text.empty(), "{}: the text file is empty; qat needs text", f.text);
  if (f.data.limit > 0 && static_cast<size_t>(f.data.limit) < text.size()) text.resize(f.data.limit);
  const std::vector<int32_t> ids = m.require_tokenizer().encode(text, false);
  check(m.config().max_position_embeddings <= 0 || f.ctx <= m.config().max_position_embeddings,
        "--ctx {}: the model's context is {}; pass --ctx {} or less", f.ctx, m.config().max_position_embeddings,
        m.config().max_position_embeddings);
  auto [tr, va] = train::split_lm_data(ids, f.ctx, f.data.val_fraction);
  check(va.size() > 0, "qat: the validation tail of {} is empty; raise --val-fraction or give more text", f.text);
  if (f.sample > 0) {
    // LLM-QAT: train on the model's own samples instead of the head of the text (which is then unused).
    const int len = f.sample_length > 0 ? f.sample_length : f.ctx + 1;
    tr = train::split_lm_data(train::sample_training_tokens(base, f.sample, len, f.train.seed), f.ctx, 0).first;
  }
  const std::vector<int32_t> held(va.tokens.begin() + va.starts.front(),
                                  va.tokens.begin() + va.starts.back() + va.ctx + 1);
  const QuantSpec spec = parse_quant_spec(f.scheme);
  const train::QatLoss loss = train::parse_qat_loss(f.loss);

  train::TrainableDecoder model(m.config(), m.tensors());
  const train::QatOptions qo = qat_options(spec);
  train::Qat qat(model, qo);
  const QuantSpec ptq_spec = ptq_spec_of(spec);
  auto ptq = build_model(model.config(), model.state(), "ptq");
  train::pack_linears(*ptq, qat.slots(), [&](const std::string&) { return ptq_spec; });
  const DecoderComparison ptq_cmp = compare_decoders(base, dynamic_cast<DecoderModel&>(*ptq), held, f.ctx);
  if (!quiet())
    std::fprintf(stderr,
                 "qat %s (loss %s): %zu layers fake-quantized, %zu training / %zu validation chunks of %d tokens; "
                 "RTN on the validation tail: KLD %.5f, top-1 %.2f%%, ppl %.3f (fp32 %.3f)\n",
                 spec.name().c_str(), f.loss.c_str(), qat.slots().size(), tr.size(), va.size(), f.ctx, ptq_cmp.kld,
                 100 * ptq_cmp.top1_agreement, ptq_cmp.candidate.ppl, ptq_cmp.base.ppl);

  const train::TrainSchedule c = f.train.schedule();
  train::LmTrainOptions o(c);
  // LM defaults (measured on stories260K, docs/qat.md): 16 chunks per update at 5e-4.
  o.batch = f.given("--batch") ? c.batch : 16;
  o.lr = f.given("--lr") ? c.lr : 5e-4f;
  const auto rep = train::qat_lm(model, qat, tr, va, o, loss, lm_progress_line(quiet()));

  auto packed = convert_qat(model, qat);
  const DecoderComparison qat_cmp = compare_decoders(base, dynamic_cast<DecoderModel&>(*packed), held, f.ctx);
  // The packed engine against the training-time (fake-quant) model on the first validation chunk.
  double max_diff = 0;
  {
    train::NoGradGuard ng;
    const std::vector<int32_t> chunk(held.begin(), held.begin() + f.ctx);
    const train::Var fq = model.forward(chunk, 1, f.ctx).logits;
    std::vector<float> eng(static_cast<size_t>(fq.numel()));
    const auto& pd = dynamic_cast<DecoderModel&>(*packed);
    KvCache cache = pd.new_cache(f.ctx);
    pd.forward(cache, chunk.data(), f.ctx, eng.data(), true);
    for (size_t i = 0; i < eng.size(); ++i) max_diff = std::max<double>(max_diff, std::fabs(eng[i] - fq.data()[i]));
  }

  SaveOptions so;
  so.tokenizer = train::tokenizer_file_of(f.model, f.tokenizer);
  so.recipe = {{"method", "qat"}, {"scheme", spec.name()}, {"loss", f.loss}, {"epochs", o.epochs},
               {"lr", o.lr},      {"text", f.text},        {"ctx", f.ctx},   {"sampled_sequences", f.sample}};
  const SaveResult saved = save_model(*packed, f.out, so);

  nlohmann::json layers = nlohmann::json::array();
  for (const auto& s : qat.slots()) layers.push_back({{"name", s}, {"scheme", qat.slot_spec(s).name()}});
  nlohmann::json j = rep.to_json();
  j.update({{"out", saved.dir.string()},
            {"task", "lm"},
            {"scheme", spec.name()},
            {"loss", f.loss},
            {"ctx", f.ctx},
            {"train_chunks", tr.size()},
            {"train_data", f.sample > 0 ? "sampled from the model" : "text"},
            {"val_chunks", va.size()},
            {"val_positions", qat_cmp.positions},
            {"fp32_ppl", qat_cmp.base.ppl},
            {"ptq_scheme", ptq_spec.name()},
            {"ptq", comparison_json(ptq_cmp)},
            {"qat", comparison_json(qat_cmp)},
            {"engine_max_abs_diff", max_diff},
            {"size_bytes", saved.size_bytes},
            {"layers", layers}});
  if (f.common.json) {
    print_json(j);
  } else if (!f.common.quiet) {
    std::printf("%s: %s QAT on %lld held-out positions: KLD %.5f, top-1 %.2f%%, ppl %.3f (fp32 %.3f)\n",
                saved.dir.string().c_str(), spec.name().c_str(), static_cast<long long>(qat_cmp.positions), qat_cmp.kld,
                100 * qat_cmp.top1_agreement, qat_cmp.candidate.ppl, qat_cmp.base.ppl);
    std::printf("  post-training %s RTN: KLD %.5f, top-1 %.2f%%, ppl %.3f\n", ptq_spec.name().c_str(), ptq_cmp.kld,
                100 * ptq_cmp.top1_agreement, ptq_cmp.candidate.ppl);
    std::printf("  %lld updates in %.1f s, packed engine vs fake-quant max |logit diff| %.2g, %.2f MB on disk\n",
                static_cast<long long>(rep.steps), rep.seconds, max_diff, saved.size_bytes / 1e6);
  }
}

void run() {
  Flags& f = F();
  namespace fs = std::filesystem;
  const fs::path dir = f.model;
  if (!fs::is_directory(dir) || !f.text.empty()) {
    auto m = open_model(f.model, f.tokenizer);
    return run_lm(*m);
  }
  QuantSpec spec = parse_quant_spec(f.scheme);
  const ModelConfig cfg = read_config(dir / "config.json");
  if (cfg.num_labels <= 0 && cfg.image_size <= 0) {
    auto m = open_model(f.model, f.tokenizer);
    if (m->kind() == ModelKind::Decoder) return run_lm(*m);
  }
  check(f.text.empty() && f.tokenizer.empty(),
        "{}: --text and --tokenizer are for language models; a classifier trains on --data FILE.tsv or --images",
        f.model);
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
  const double fp32_acc = train::accuracy(model, va);

  const train::QatOptions qo = qat_options(spec);
  train::Qat qat(model, qo);
  // Post-training baseline on the untouched weights: round-to-nearest of the same slots.
  const QuantSpec ptq_spec = ptq_spec_of(spec);
  auto ptq = build_model(cfg, model.state(), "ptq");
  train::pack_linears(*ptq, qat.slots(), [&](const std::string&) { return ptq_spec; });
  const double ptq_acc = train::engine_accuracy(dynamic_cast<EncoderModel&>(*ptq), va);
  ptq.reset();

  train::TrainOptions o(f.train.schedule());
  o.after_update = [&qat](int64_t step) { qat.after_update(step); };
  if (!quiet())
    std::fprintf(stderr, "qat %s: %zu layers fake-quantized, %zu training / %zu validation examples\n",
                 spec.name().c_str(), qat.slots().size(), tr.size(), va.size());
  const auto rep = train::train_classifier(model, tr, va, o, progress_line(quiet()));

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
      "quantization-aware fine-tuning of a text or ViT classifier or a LLaMA LM (fake-quant W8A8 or W4), saved as the "
      "packed model");
  Flags& f = F();
  f.sub = sub;
  sub->add_option("model", f.model,
                  "trained classifier directory (shrink train output), or a LLaMA LM (HF directory or llama2.c .bin)")
      ->required();
  sub->add_option("--scheme", f.scheme,
                  "w8a8 (int8 weights, static int8 activations with trained ranges) | w4a16-g32|g64|g128[-asym]");
  sub->add_option("--out", f.out, "output directory (packed model)")->required();
  sub->add_option("--skip", f.skip, "regex of more slots kept in fp32 (classifier heads and lm_head always are)");
  f.data.add_to(sub, false, "classifier: TSV sentence<TAB>label with a header (the training data)");
  sub->add_option("--text", f.text,
                  "LM: plain text to train on; its last --val-fraction is held out (--limit: bytes; LM defaults "
                  "--batch 16 --lr 5e-4)");
  sub->add_option("--tokenizer", f.tokenizer, "LM: tokenizer file (llama2.c .bin models); copied into the output");
  sub->add_option("--ctx", f.ctx, "LM: tokens per training sequence and evaluation window")
      ->check(CLI::Range(2, 8192))
      ->capture_default_str();
  sub->add_option("--sample", f.sample,
                  "LM: train on N sequences sampled from the fp32 model itself (LLM-QAT, data-free) instead of the "
                  "head of --text, which then only gives the held-out tail")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--sample-length", f.sample_length, "LM: tokens per sampled sequence (default --ctx + 1)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--loss", f.loss, "LM: kl (to the fp32 model's next-token distribution, LLM-QAT) | ce (on the text)")
      ->capture_default_str();
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
