// shrink quantize MODEL --scheme S --out DIR: the quantize pass, then the compressed model directory.
#include <shrink/compress/quantize.h>
#include <shrink/core/build_info.h>
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/formats/model_dir.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"

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
  static CommonFlags f;
  sub->add_option("model", path, "model directory or llama2.c .bin")->required();
  sub->add_option("--scheme", scheme, "w8a8 | w8a8-static | w8a16 | w4a16[-g32|-g64|-g128][-asym] | bf16")->required();
  sub->add_option("--method", method,
                  "rtn (default) | static (w8a8 with calibrated activation scales) | gptq (w4a16*/w8a16/w8a8 weights "
                  "by GPTQ, sequential over the blocks)");
  sub->add_option("--calib", calib, "calibration text (plain text or TSV) for --method static|gptq");
  sub->add_option("--calib-samples", calib_samples, "calibration windows")->check(CLI::PositiveNumber);
  sub->add_option("--calib-seq-len,--calib-len", calib_seq_len, "tokens per calibration window")
      ->check(CLI::PositiveNumber);
  sub->add_option("--observer", observer, "static: minmax | percentile | mse | kl | auto (per layer by output error)");
  sub->add_option("--percentile", percentile, "static with --observer percentile: share of values kept, in %");
  sub->add_option("--damp", gptq.damp, "gptq: dampening, share of mean(diag H) added to the diagonal (0.01)");
  sub->add_flag("--act-order", gptq.act_order, "gptq: columns in descending Hessian-diagonal order (static groups)");
  sub->add_flag("--static-groups", gptq.static_groups, "gptq: W4 group scales from the original weights");
  sub->add_option("--block", gptq.block, "gptq: columns per lazy-update block (128)")->check(CLI::PositiveNumber);
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
    opt.scheme = parse_quant_spec(scheme);
    opt.method = parse_quant_method(method);
    if (opt.scheme.static_act) opt.method = QuantMethod::Static;
    opt.calib = calib;
    opt.calib_samples = calib_samples;
    opt.calib_seq_len = calib_seq_len;
    opt.gptq = gptq;
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
    Timer load_timer;
    auto model = open_model(path, tokenizer);
    const double load_ms = load_timer.elapsed_ms();
    QuantizeReport rep = quantize_model(*model, opt);
    SaveOptions so;
    so.max_shard_bytes = max_shard_bytes;
    so.tokenizer = tokenizer;
    so.recipe = {{"command", "quantize"}, {"scheme", opt.scheme.name()}, {"method", method}, {"skip", skip},
                 {"layer", layer},        {"lm_head", lm_head}};
    if (opt.method == QuantMethod::Gptq)
      so.recipe["gptq"] = {{"damp", gptq.damp},
                           {"act_order", gptq.act_order},
                           {"static_groups", gptq.static_groups},
                           {"block", gptq.block},
                           {"calib", calib},
                           {"calib_samples", calib_samples},
                           {"calib_seq_len", calib_seq_len}};
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
    if (f.json)
      return print_json({{"out", saved.dir.string()},
                         {"gptq_blocks", blocks},
                         {"calib_tokens", rep.gptq.calib_rows},
                         {"calib_activation_bytes", rep.gptq.activation_bytes},
                         {"scheme", opt.scheme.name()},
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
                saved.dir.c_str(), quantized, rep.layers.size(), opt.scheme.name().c_str(), rep.bytes_before / 1e6,
                rep.bytes_after / 1e6, source_bytes / 1e6, saved.size_bytes / 1e6);
    if (!rep.gptq.blocks.empty() && !f.quiet) {
      for (const auto& b : rep.gptq.blocks)
        std::fprintf(stderr, "  gptq block %3d: %8.0f ms (forward %.0f, gptq %.0f), peak RSS %.1f MB\n", b.block,
                     b.time_ms, b.forward_ms, b.gptq_ms, b.peak_rss_bytes / 1e6);
      std::printf("gptq: %lld calibration tokens (%.1f MB of held activations), %zu blocks, %.0f ms\n",
                  static_cast<long long>(rep.gptq.calib_rows), rep.gptq.activation_bytes / 1e6, rep.gptq.blocks.size(),
                  rep.gptq.time_ms);
    }
    std::printf("cost: load %.0f ms, quantize %.0f ms, save %.0f ms, peak RSS %.1f MB\n", load_ms, rep.time_ms, save_ms,
                peak_rss_bytes() / 1e6);
  });
}

}  // namespace shrink::cli
