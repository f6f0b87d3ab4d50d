// shrink quantize MODEL --scheme S --out DIR: the quantize pass, then the compressed model directory.
#include <shrink/compress/quantize.h>
#include <shrink/core/build_info.h>
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/formats/model_dir.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/train_flags.h"

namespace shrink::cli {

void register_quantize(CLI::App& app) {
  auto* sub = app.add_subcommand("quantize", "quantize a model's linears and save it as a compressed model directory");
  static std::string path, tokenizer, out, scheme, method = "rtn", calib, observer = "minmax";
  static double percentile = 99.99;
  static std::vector<std::string> skip, layer;
  static bool lm_head = false, no_default_skips = false;
  static int calib_samples = 64, calib_seq_len = 128;
  static uint64_t max_shard_bytes = uint64_t{2} << 30;
  static GptqOptions gptq;
  static AwqOptions awq;
  static bool awq_gptq = false;
  static std::string alpha = "0.5", budget = "kld=0.01", objective = "size";
  static CommonFlags f;
  static DataFlags calib_images;
  sub->add_option("model", path, "model directory or llama2.c .bin")->required();
  sub->add_option("--scheme", scheme,
                  "w8a8 | w8a8-static | w8a16 | w4a16[-g32|-g64|-g128][-asym] | bf16 | auto (per layer, --budget)")
      ->required();
  sub->add_option("--method", method,
                  "rtn (default) | static (w8a8 with calibrated activation scales) | gptq (w4a16*/w8a16/w8a8 weights "
                  "by GPTQ, sequential over the blocks) | awq (activation-aware channel scales, then rounding) | "
                  "smoothquant (w8a8[-static] with outliers migrated into the weights)");
  sub->add_option("--calib", calib, "calibration text (plain text or TSV) for --method static|gptq|awq|smoothquant");
  calib_images.add_images_to(sub, "--calib-images,--images")
      ->description(
          "image models (ViT), --method static: calibrate on the first --calib-samples training images of this "
          "Fashion-MNIST-style IDX directory (without DIR: the dataset-fashion-mnist package)")
      ->excludes("--calib");
  sub->add_option("--calib-samples", calib_samples, "calibration windows (images: images)")->check(CLI::PositiveNumber);
  sub->add_option("--calib-seq-len,--calib-len", calib_seq_len, "tokens per calibration window")
      ->check(CLI::PositiveNumber);
  sub->add_option("--observer", observer, "static: minmax | percentile | mse | kl | auto (per layer by output error)");
  sub->add_option("--percentile", percentile, "static with --observer percentile: share of values kept, in %");
  sub->add_option("--damp", gptq.damp, "gptq: dampening, share of mean(diag H) added to the diagonal (0.01)");
  sub->add_flag("--act-order", gptq.act_order, "gptq: columns in descending Hessian-diagonal order (static groups)");
  sub->add_flag("--static-groups", gptq.static_groups, "gptq: W4 group scales from the original weights");
  sub->add_option("--scale-search", gptq.scale_search.grid,
                  "gptq: W4 group / W8 row scales by a search over 1 - i/N shrinks of the range (lowest "
                  "|Q(w) - w|^2.4; default N = 100 as IST-DASLab/gptq's mse; 0: the max scale of round-to-nearest)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--scale-weighted", gptq.scale_search.weighted,
                "gptq --scale-search: weight each column's error by its Hessian diagonal");
  sub->add_option("--block", gptq.block, "gptq: columns per lazy-update block (128)")->check(CLI::PositiveNumber);
  sub->add_flag("--awq-clip", awq.clip, "awq: also search a max-value shrink per weight group");
  sub->add_option("--awq-clip-grid", awq.clip_grid, "awq --awq-clip: shrink steps of 1/N (100)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--awq-max-shrink", awq.max_shrink, "awq --awq-clip: largest shrink of the range (0.8)")
      ->check(CLI::Range(0.01, 0.99));
  sub->add_option("--awq-grid", awq.grid, "awq: alpha grid points in [0, 1) (20)")->check(CLI::PositiveNumber);
  sub->add_flag("--awq-block-loss", awq.block_loss,
                "awq: rank alpha by the decoder block's output error (llm-awq) instead of the group's linear outputs");
  sub->add_option("--awq-block-rows", awq.block_rows, "awq --awq-block-loss: calibration tokens scored (4096)")
      ->check(CLI::PositiveNumber);
  sub->add_flag("--awq-gptq", awq_gptq, "awq: quantize the rescaled weights with GPTQ instead of rounding");
  sub->add_option("--alpha", alpha, "smoothquant: migration strength in [0, 1], or auto (per group by output error)");
  sub->add_option("--budget", budget,
                  "--scheme auto: kld=MAX (mean KLD to the fp32 outputs, nats; default 0.01) | drop=MAX (perplexity "
                  "increase in % for language models; accuracy points for classifiers, with --calib FILE.tsv of "
                  "sentence<TAB>label)");
  sub->add_option("--objective", objective, "--scheme auto: size (default) | latency (measured per layer)");
  sub->add_option("--skip", skip, "regex of slots to leave unquantized (repeatable)");
  sub->add_option("--layer", layer, "REGEX=SCHEME: another scheme for matching slots (repeatable; first wins)");
  sub->add_flag("--lm-head", lm_head, "quantize lm_head too (skipped by default)");
  sub->add_flag("--no-default-skips", no_default_skips, "do not skip classifier heads / lm_head by default");
  sub->add_option("--tokenizer", tokenizer, "tokenizer file (llama2.c models); copied into the output");
  sub->add_option("--out", out, "output directory")->required();
  sub->add_option("--max-shard-bytes", max_shard_bytes, "shard the safetensors above this size");
  add_common_flags(sub, f);
  sub->callback([] {
    apply(f);
    QuantizeOptions opt;
    opt.auto_scheme = scheme == "auto";
    opt.scheme = parse_quant_spec(opt.auto_scheme ? "f32" : scheme);
    if (opt.auto_scheme) {
      const auto eq = budget.find('=');
      const std::string kind = budget.substr(0, eq);
      double value = 0;
      try {
        size_t used = 0;
        if ((kind != "kld" && kind != "drop") || eq == std::string::npos) throw std::invalid_argument(budget);
        value = std::stod(budget.substr(eq + 1), &used);
        if (used != budget.size() - eq - 1 || !(value > 0)) throw std::invalid_argument(budget);
      } catch (const std::exception&) {
        fail(
            "--budget '{}': expected kld=MAX (mean KLD to the fp32 outputs, nats, e.g. kld=0.01) or drop=MAX (held-out "
            "perplexity increase in % for a language model, accuracy points for a classifier, e.g. drop=2), MAX a "
            "positive number",
            budget);
      }
      (kind == "kld" ? opt.mixed.budget_kld : opt.mixed.budget_drop_pct) = value;
      if (objective != "size" && objective != "latency") fail("--objective '{}': expected size or latency", objective);
      opt.mixed.objective = objective == "latency" ? MixedObjective::Latency : MixedObjective::Size;
    }
    opt.method = parse_quant_method(method);
    if (opt.scheme.static_act && opt.method != QuantMethod::SmoothQuant) opt.method = QuantMethod::Static;
    opt.calib = calib;
    opt.calib_samples = calib_samples;
    opt.calib_seq_len = calib_seq_len;
    opt.gptq = gptq;
    opt.awq = awq;
    opt.awq_then_gptq = awq_gptq;
    if (alpha == "auto") {
      opt.smooth.auto_alpha = true;
    } else {
      try {
        size_t used = 0;
        opt.smooth.alpha = std::stod(alpha, &used);
        if (used != alpha.size()) throw std::invalid_argument(alpha);
      } catch (const std::exception&) {
        fail("--alpha '{}': expected a number in [0, 1] (e.g. 0.5) or 'auto'", alpha);
      }
    }
    opt.observer.observer = observer;
    opt.observer.percentile = percentile;
    opt.skip = skip;
    opt.quantize_lm_head = lm_head;
    opt.default_skips = !no_default_skips;
    for (const auto& l : layer) {
      const auto eq = l.rfind('=');
      if (eq == std::string::npos || eq == 0)
        fail("--layer '{}': expected REGEX=SCHEME, e.g. --layer 'mlp\\.down_proj=w8a16'", l);
      opt.overrides.emplace_back(l.substr(0, eq), parse_quant_spec(l.substr(eq + 1)));
    }
    const std::string scheme_name = opt.auto_scheme ? std::string("auto") : opt.scheme.name();
    Timer load_timer;
    auto model = open_model(path, tokenizer);
    const double load_ms = load_timer.elapsed_ms();
    if (calib_images.images_given)
      opt.calib_images = image_pixels(load_images_for(calib_images, "train", model->config(), path), calib_samples);
    QuantizeReport rep = quantize_model(model, opt);
    SaveOptions so;
    so.max_shard_bytes = max_shard_bytes;
    so.tokenizer = tokenizer;
    so.recipe = {{"command", "quantize"}, {"scheme", scheme_name}, {"method", method},
                 {"skip", skip},          {"layer", layer},        {"lm_head", lm_head}};
    if (opt.method == QuantMethod::Gptq)
      so.recipe["gptq"] = {{"damp", gptq.damp},
                           {"act_order", gptq.act_order},
                           {"static_groups", gptq.static_groups},
                           {"block", gptq.block},
                           {"scale_search", gptq.scale_search.grid},
                           {"scale_weighted", gptq.scale_search.weighted},
                           {"calib", calib},
                           {"calib_samples", calib_samples},
                           {"calib_seq_len", calib_seq_len}};
    if (calib_images.images_given)
      so.recipe["calib_images"] = {{"dir", images_dir(calib_images).string()}, {"samples", calib_samples}};
    if (opt.method == QuantMethod::Awq)
      so.recipe["awq"] = {
          {"grid", awq.grid}, {"clip", awq.clip}, {"block_loss", awq.block_loss},   {"block_rows", awq.block_rows},
          {"gptq", awq_gptq}, {"calib", calib},   {"calib_samples", calib_samples}, {"calib_seq_len", calib_seq_len}};
    if (opt.method == QuantMethod::SmoothQuant)
      so.recipe["smoothquant"] = {
          {"alpha", alpha}, {"calib", calib}, {"calib_samples", calib_samples}, {"calib_seq_len", calib_seq_len}};
    Timer save_timer;
    SaveResult saved = save_model(*model, out, so);
    const double save_ms = save_timer.elapsed_ms();
    const size_t source_bytes = path_size_bytes(path);
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : rep.layers)
      layers.push_back({{"name", l.name},
                        {"scheme", l.scheme},
                        {"bytes", l.bytes_after},
                        {"bytes_before", l.bytes_before},
                        {"note", l.note}});
    nlohmann::json blocks = nlohmann::json::array();
    for (const auto& b : rep.gptq.blocks)
      blocks.push_back({{"block", b.block},
                        {"time_ms", b.time_ms},
                        {"forward_ms", b.forward_ms},
                        {"gptq_ms", b.gptq_ms},
                        {"peak_rss_bytes", b.peak_rss_bytes}});
    nlohmann::json mixed = nullptr;
    if (opt.auto_scheme) {
      const MixedReport& m = rep.mixed;
      nlohmann::json table = nlohmann::json::array();
      for (const auto& l : m.layers)
        table.push_back({{"name", l.name},
                         {"kld", l.kld},
                         {"bytes", l.bytes},
                         {"latency_us", l.latency_us},
                         {"chosen", m.candidates[static_cast<size_t>(l.chosen)]}});
      mixed = {{"candidates", m.candidates},
               {"budget_kld", m.budget_kld},
               {"budget_drop_pct", m.budget_drop_pct},
               {"base_ppl", m.base_ppl},
               {"measured_ppl", m.measured_ppl},
               {"measured_drop_pct", m.measured_drop_pct},
               {"base_accuracy", m.base_accuracy},
               {"measured_accuracy", m.measured_accuracy},
               {"estimated_kld", m.estimated_kld},
               {"measured_kld", m.measured_kld},
               {"met", m.met},
               {"backoffs", m.backoffs},
               {"objective", objective},
               {"sensitivity", table}};
    }
    nlohmann::json groups = nlohmann::json::array();
    for (const auto& g : rep.awq.groups)
      groups.push_back({{"first", g.first},
                        {"producer", g.producer},
                        {"alpha", g.alpha},
                        {"error_rtn", g.error_rtn},
                        {"error_scaled", g.error_scaled},
                        {"error_clipped", g.error_clipped},
                        {"block_error_rtn", g.block_error_rtn},
                        {"block_error_scaled", g.block_error_scaled}});
    for (const auto& g : rep.smooth.groups)
      groups.push_back({{"first", g.first},
                        {"producer", g.producer},
                        {"alpha", g.alpha},
                        {"error_plain", g.error_plain},
                        {"error_smoothed", g.error_smoothed}});
    if (f.json)
      return print_json({{"out", saved.dir.string()},
                         {"scale_groups", groups},
                         {"mixed", mixed},
                         {"gptq_blocks", blocks},
                         {"calib_tokens", rep.gptq.calib_rows},
                         {"calib_activation_bytes", rep.gptq.activation_bytes},
                         {"scheme", scheme_name},
                         {"method", method},
                         {"size_bytes", saved.size_bytes},
                         {"source_size_bytes", source_bytes},
                         {"linear_bytes_before", rep.bytes_before},
                         {"linear_bytes_after", rep.bytes_after},
                         {"shards", saved.shards},
                         {"load_ms", load_ms},
                         {"quantize_ms", rep.time_ms},
                         {"calib_ms", rep.calib_ms},
                         {"save_ms", save_ms},
                         {"peak_rss_bytes", peak_rss_bytes()},
                         {"source_model_sha256", saved.source_sha256},
                         {"layers", layers}});
    int quantized = 0;
    for (const auto& l : rep.layers) quantized += l.scheme != "f32";
    if (!f.quiet)
      for (const auto& l : rep.layers)
        if (!l.note.empty())
          std::fprintf(stderr, "  %-40s %-16s %s\n", l.name.c_str(), l.scheme.c_str(), l.note.c_str());
    std::printf("%s: %d of %zu linears -> %s; linears %.2f MB -> %.2f MB; model %.2f MB -> %.2f MB on disk\n",
                saved.dir.c_str(), quantized, rep.layers.size(), scheme_name.c_str(), rep.bytes_before / 1e6,
                rep.bytes_after / 1e6, source_bytes / 1e6, saved.size_bytes / 1e6);
    if (!rep.gptq.blocks.empty() && !f.quiet) {
      for (const auto& b : rep.gptq.blocks)
        std::fprintf(stderr, "  gptq block %3d: %8.0f ms (forward %.0f, gptq %.0f), peak RSS %.1f MB\n", b.block,
                     b.time_ms, b.forward_ms, b.gptq_ms, b.peak_rss_bytes / 1e6);
      std::printf("gptq: %lld calibration tokens (%.1f MB of held activations), %zu blocks, %.0f ms\n",
                  static_cast<long long>(rep.gptq.calib_rows), rep.gptq.activation_bytes / 1e6, rep.gptq.blocks.size(),
                  rep.gptq.time_ms);
    }
    if (!f.quiet) {
      if (opt.auto_scheme) {
        const MixedReport& m = rep.mixed;
        std::fprintf(stderr, "  sensitivity: KLD to fp32 with only this layer quantized (bytes)\n  %-36s", "layer");
        for (const auto& c : m.candidates) std::fprintf(stderr, " %20s", c.c_str());
        std::fprintf(stderr, "  chosen\n");
        for (const auto& l : m.layers) {
          std::fprintf(stderr, "  %-36s", l.name.c_str());
          for (size_t c = 0; c < m.candidates.size(); ++c) std::fprintf(stderr, " %9.2e (%8zu)", l.kld[c], l.bytes[c]);
          std::fprintf(stderr, "  %s\n", m.candidates[static_cast<size_t>(l.chosen)].c_str());
        }
        if (m.budget_drop_pct > 0 && m.base_accuracy > 0)
          std::printf(
              "mixed precision: budget accuracy -%.3g points, measured on held-out rows %.2f%% -> %.2f%% (%+.3g "
              "points, KLD %.4g)\n",
              m.budget_drop_pct, m.base_accuracy, m.measured_accuracy, -m.measured_drop_pct, m.measured_kld);
        else if (m.budget_drop_pct > 0)
          std::printf(
              "mixed precision: budget perplexity +%.3g%%, measured on held-out windows %.4g -> %.4g (%+.3g%%, "
              "KLD %.4g)\n",
              m.budget_drop_pct, m.base_ppl, m.measured_ppl, m.measured_drop_pct, m.measured_kld);
        std::printf(
            "mixed precision: budget KLD %.4g, estimated %.4g, measured on held-out windows %.4g (%s), %d "
            "back-offs; linears %.2f MB -> %.2f MB\n",
            m.budget_kld, m.estimated_kld, m.measured_kld, m.met ? "met" : "NOT met", m.backoffs, m.bytes_before / 1e6,
            m.bytes_after / 1e6);
      }
      for (const auto& g : rep.awq.groups)
        std::fprintf(stderr, "  awq %-36s alpha %.2f  output error rtn %.3g -> scaled %.3g -> clipped %.3g  (%s)\n",
                     g.first.c_str(), g.alpha, g.error_rtn, g.error_scaled, g.error_clipped, g.producer.c_str());
      for (const auto& g : rep.smooth.groups)
        std::fprintf(stderr, "  smoothquant %-28s alpha %5.2f  w8a8 output error %.3g -> %.3g  (%s)\n", g.first.c_str(),
                     g.alpha, g.error_plain, g.error_smoothed, g.producer.c_str());
    }
    std::printf("cost: load %.0f ms, quantize %.0f ms, save %.0f ms, peak RSS %.1f MB\n", load_ms, rep.time_ms, save_ms,
                peak_rss_bytes() / 1e6);
  });
}

}  // namespace shrink::cli
