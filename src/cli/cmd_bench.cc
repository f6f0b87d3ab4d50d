// shrink bench MODEL: latency percentiles, throughput (also closed-loop at several concurrencies), TTFT/TPOT,
// memory, size, energy and cost per inference; --peak adds the machine's measured fp32 peak / streaming bandwidth and
// this model's share of them.
#include <fmt/format.h>
#include <shrink/bench/concurrency.h>
#include <shrink/bench/cost.h>
#include <shrink/bench/energy.h>
#include <shrink/bench/latency.h>
#include <shrink/bench/peak.h>
#include <shrink/core/build_info.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/core/timer.h>
#include <shrink/models/generate.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

#include "cli/commands.h"
#include "cli/common.h"

namespace shrink::cli {

namespace {

// 2 * MACs of every linear for `tokens` rows + attention (QK^T and PV) for encoders.
double encoder_flops(const EncoderModel& m, int64_t batch, int64_t seq) {
  double f = 0;
  const int64_t tokens = batch * seq;
  for (const auto& s : m.linears()) {
    const bool per_sequence =
        s.name.find("pooler") != std::string::npos || s.name.find("classifier") != std::string::npos;
    f += 2.0 * s.impl->in_features() * s.impl->out_features() * (per_sequence ? batch : tokens);
  }
  const ModelConfig& c = m.config();
  f += 4.0 * batch * seq * seq * c.num_heads * c.head_dim * c.num_layers;
  return f;
}

size_t decoder_bytes_per_token(const DecoderModel& m) {
  size_t b = 0;
  for (const auto& s : m.linears()) b += s.impl->weight_bytes();
  return b;
}

// The concurrency levels in rounds (each level runs seconds / rounds per round), so machine noise spreads over all
// levels alike; iters > 0 (the --iters mode) bounds every level to that many full batches per round instead.
// forward(n) runs one batch of n requests.
nlohmann::json closed_loop_levels(const std::vector<int>& levels, double seconds, int rounds, double batch_wait_ms,
                                  int64_t iters, const std::function<void(int64_t)>& forward) {
  std::vector<ClosedLoopResult> acc(levels.size());
  for (int c : levels) forward(c);  // untimed: first run of each batch shape
  for (int r = 0; r < rounds; ++r)
    for (size_t i = 0; i < levels.size(); ++i) {
      ClosedLoopOptions o;
      o.concurrency = levels[i];
      o.seconds = seconds / rounds;
      o.batch_wait_ms = batch_wait_ms;
      o.max_requests = iters * levels[i];
      run_closed_loop(o, forward, acc[i]);
    }
  nlohmann::json out = nlohmann::json::array();
  for (const auto& a : acc) out.push_back(a.to_json());
  return out;
}

// A number check whose message says what the flag wants (CLI11's own prints its range as "0 to 1.79e308").
CLI::Validator number_at_least(double lo, bool strict, const std::string& what) {
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (!s.empty() && end && *end == '\0' && (strict ? v > lo : v >= lo)) return "";
        return fmt::format("expected {}, found '{}'", what, s);
      },
      what);
}

}  // namespace

void register_bench(CLI::App& app) {
  auto* sub = app.add_subcommand("bench", "latency, throughput, memory and size of a model");
  static std::string path, tokenizer;
  static int64_t batch = 1, seq = 128, prompt_len = 128, gen = 64, warmup = 2, iters = 0;
  static double seconds = 10;
  static bool peak = false;
  static std::vector<int> concurrency = {1, 2, 4, 8};
  static double concurrency_seconds = 2, batch_wait_ms = 2, watts_per_core = kDefaultWattsPerCore,
                price_per_hour = kDefaultPricePerHour;
  static int rounds = 2;
  static std::string instance = kDefaultInstance;
  static CommonFlags f;
  sub->add_option("model", path, "model directory or llama2.c .bin")->required();
  sub->add_option("--batch", batch, "encoder batch size")->check(CLI::PositiveNumber);
  sub->add_option("--seq", seq, "encoder sequence length")->check(CLI::PositiveNumber);
  sub->add_option("--prompt-len", prompt_len, "decoder prompt tokens")->check(CLI::PositiveNumber);
  sub->add_option("--gen", gen, "decoder generated tokens")->check(CLI::PositiveNumber);
  sub->add_option("--warmup", warmup, "untimed runs first")->check(CLI::NonNegativeNumber);
  sub->add_option("--iters", iters, "timed runs (0: as many as fit in --seconds, at least 5)");
  sub->add_option("--seconds", seconds, "time budget when --iters is 0");
  sub->add_flag("--peak", peak, "also measure the machine's fp32 GEMM peak and read bandwidth, report shares");
  static std::string kv_cache = "f32";
  sub->add_option("--kv-cache", kv_cache, "decoder KV cache type: f32 or int8 (INT8 KV8, ~3.8x smaller)")
      ->check(CLI::IsMember({"f32", "int8"}));
  sub->add_option("--tokenizer", tokenizer, "tokenizer file (llama2.c models)");
  sub->add_option(
         "--concurrency", concurrency,
         "closed-loop client counts, e.g. 1,2,4,8 (0: skip); decoders: that many generations at once, one batched "
         "forward per token")
      ->delimiter(',')
      ->check(number_at_least(0, false, "client counts >= 0 separated by commas, e.g. 1,2,4,8"));
  sub->add_option("--concurrency-seconds", concurrency_seconds, "time per concurrency level (split over --rounds)")
      ->check(number_at_least(0, true, "a positive number of seconds"));
  sub->add_option("--rounds", rounds, "interleaved rounds over the concurrency levels")
      ->check(number_at_least(1, false, "a whole number of rounds >= 1"));
  sub->add_option("--batch-wait-ms", batch_wait_ms, "batcher: wait this long for a full batch before a partial one")
      ->check(number_at_least(0, false, "milliseconds >= 0"));
  sub->add_option("--watts-per-core", watts_per_core, "energy estimate when RAPL is not readable: W per busy core")
      ->check(number_at_least(0, true, "a positive power in watts, e.g. 10"));
  auto* price = sub->add_option("--price-per-hour", price_per_hour,
                                fmt::format("instance price in USD/hour for the cost per 1,000 inferences "
                                            "(default: {})",
                                            kDefaultInstance))
                    ->check(number_at_least(0, false, "a price in USD per hour >= 0, e.g. 0.0832"));
  sub->add_option("--instance", instance, "instance name printed with the cost");
  add_common_flags(sub, f);
  sub->callback([price] {
    if (price->count() && instance == kDefaultInstance) instance = "--price-per-hour";
    apply(f);
    Timer load;
    auto model = open_model(path, tokenizer);
    const double load_ms = load.elapsed_ms();
    const ModelConfig& c = model->config();
    nlohmann::json j = {{"model", path},      {"architecture", c.architecture},      {"threads", num_threads()},
                        {"load_ms", load_ms}, {"size_bytes", path_size_bytes(path)}, {"machine", machine_json()},
                        {"commit", commit()}};
    std::mt19937 rng(42);
    LatencyHistogram lat;
    EnergyMeter energy(watts_per_core);
    int64_t timed_runs = 0;
    auto run_timed = [&](auto&& once) {
      for (int64_t i = 0; i < warmup; ++i) once();
      Timer budget;
      energy.start();
      for (int64_t i = 0; iters > 0 ? i < iters : (i < 5 || budget.elapsed_ms() < seconds * 1000); ++i) {
        Timer t;
        once();
        lat.add(t.elapsed_ms());
        ++timed_runs;
      }
    };
    std::vector<int> levels;
    for (int c : concurrency)
      if (c > 0) levels.push_back(c);
    if (auto* enc = dynamic_cast<EncoderModel*>(model.get()); enc && enc->takes_images()) {
      // ViT: random pixels in [0, 1]; sequence = patches + [CLS].
      const int64_t px = int64_t{c.num_channels} * c.image_size * c.image_size;
      std::vector<float> pixels(static_cast<size_t>(batch * px));
      std::uniform_real_distribution<float> u(0.f, 1.f);
      for (float& v : pixels) v = u(rng);
      run_timed([&] { enc->forward_images(pixels.data(), batch); });
      j["energy"] = energy.json(timed_runs * batch);
      if (!levels.empty()) {
        const int64_t most = *std::max_element(levels.begin(), levels.end());
        std::vector<float> req(static_cast<size_t>(most * px));
        for (float& v : req) v = u(rng);
        j["concurrency"] = closed_loop_levels(levels, concurrency_seconds, rounds, batch_wait_ms, iters,
                                              [&](int64_t n) { enc->forward_images(req.data(), n); });
      }
      const double flops = encoder_flops(*enc, batch, c.max_position_embeddings);
      j["batch"] = batch;
      j["seq"] = c.max_position_embeddings;
      j["gflop"] = flops / 1e9;
      j["gflops_per_s"] = flops / 1e6 / lat.percentile(0.5);
      j["throughput_per_s"] = batch * 1000.0 / lat.mean();
    } else if (enc) {
      if (seq > c.max_position_embeddings)
        fail("--seq {} exceeds the model's {} positions", seq, c.max_position_embeddings);
      BatchEncoding b;
      b.batch = batch;
      b.seq = seq;
      std::uniform_int_distribution<int32_t> tokd(1000 % c.vocab_size, c.vocab_size - 1);
      for (int64_t i = 0; i < batch * seq; ++i) b.ids.push_back(tokd(rng));
      b.attention_mask.assign(batch * seq, 1);
      b.type_ids.assign(batch * seq, 0);
      b.lengths.assign(batch, static_cast<int32_t>(seq));
      run_timed([&] { enc->forward(b); });
      j["energy"] = energy.json(timed_runs * batch);
      if (!levels.empty()) {
        // One request = one sequence of --seq tokens; a batch of n requests is one padding-free forward of n rows.
        const int most = *std::max_element(levels.begin(), levels.end());
        std::vector<BatchEncoding> by_size(most + 1);
        for (int n = 1; n <= most; ++n) {
          BatchEncoding& e = by_size[n];
          e.batch = n;
          e.seq = seq;
          for (int64_t i = 0; i < n * seq; ++i) e.ids.push_back(tokd(rng));
          e.attention_mask.assign(n * seq, 1);
          e.type_ids.assign(n * seq, 0);
          e.lengths.assign(n, static_cast<int32_t>(seq));
        }
        j["concurrency"] = closed_loop_levels(levels, concurrency_seconds, rounds, batch_wait_ms, iters,
                                              [&](int64_t n) { enc->forward(by_size[n]); });
      }
      const double flops = encoder_flops(*enc, batch, seq);
      j["batch"] = batch;
      j["seq"] = seq;
      j["gflop"] = flops / 1e9;
      j["gflops_per_s"] = flops / 1e6 / lat.percentile(0.5);
      j["throughput_per_s"] = batch * 1000.0 / lat.mean();
      if (peak) {
        const double p = measure_fp32_peak_gflops(num_threads());
        j["peak_gflops_per_s"] = p;
        j["floor_ms"] = flops / 1e6 / p;
        j["ratio_to_floor"] = lat.percentile(0.5) / (flops / 1e6 / p);
      }
    } else {
      auto& dec = dynamic_cast<DecoderModel&>(*model);
      dec.set_kv_cache_type(parse_kv_cache_type(kv_cache));
      if (prompt_len + gen > dec.max_context())
        fail("--prompt-len {} + --gen {} exceed the model's context of {} tokens", prompt_len, gen, dec.max_context());
      std::uniform_int_distribution<int32_t> tokd(3, c.vocab_size - 1);
      std::vector<int32_t> prompt(prompt_len);
      for (auto& t : prompt) t = tokd(rng);
      GenerateOptions g;
      g.max_new_tokens = static_cast<int>(gen);
      g.stop_at_eos = false;
      LatencyHistogram ttft, tpot, prefill;
      run_timed([&] {
        GenerateResult r = generate(dec, prompt, g);
        ttft.add(r.ttft_ms);
        tpot.add(r.tpot_ms);
        prefill.add(r.prefill_ms);
      });
      j["energy"] = energy.json(timed_runs);
      j["energy"]["joules_per_token"] = j["energy"]["joules_per_inference"].get<double>() / gen;
      j["prompt_len"] = prompt_len;
      j["gen"] = gen;
      j["kv_cache"] = kv_cache_type_name(dec.kv_cache_type());
      j["kv_cache_bytes"] = dec.kv_cache_bytes(prompt_len + gen, dec.kv_cache_type());
      j["ttft_ms"] = ttft.percentile(0.5);
      j["tpot_ms"] = tpot.percentile(0.5);
      j["tokens_per_s"] = 1000.0 / tpot.percentile(0.5);
      j["prefill_tokens_per_s"] = prompt_len * 1000.0 / prefill.percentile(0.5);
      j["ttft"] = ttft.summary_json();
      j["tpot"] = tpot.summary_json();
      j["throughput_per_s"] = 1000.0 / lat.mean();
      if (!levels.empty()) {
        // C generations at once, one batched forward per step (as `shrink serve` runs them), levels in rounds.
        std::vector<DecodeLevel> acc(levels.size());
        for (int r = 0; r < rounds; ++r)
          for (size_t i = 0; i < levels.size(); ++i)
            run_decode_level(dec, prompt, static_cast<int>(gen), levels[i], concurrency_seconds / rounds,
                             iters > 0 ? iters : 0, acc[i]);
        j["concurrency"] = nlohmann::json::array();
        for (const auto& a : acc) j["concurrency"].push_back(a.to_json());
      }
      const size_t bytes = decoder_bytes_per_token(dec);
      j["weight_bytes_per_token"] = bytes;
      j["decode_gb_per_s"] = bytes / 1e6 / tpot.percentile(0.5);
      if (peak) {
        const StreamRead bw = measure_stream_read(num_threads());
        const double decode_gbps = bytes / 1e6 / tpot.percentile(0.5);
        j["stream_read_gb_per_s"] = bw.burst_gbps;
        j["stream_read_sustained_gb_per_s"] = bw.sustained_gbps;
        j["bandwidth_share"] = decode_gbps / bw.burst_gbps;
        j["bandwidth_share_sustained"] = decode_gbps / bw.sustained_gbps;
      }
    }
    j["latency_ms"] = lat.summary_json();
    j["latency_histogram"] = lat.buckets_json();
    double best = j["throughput_per_s"].get<double>();
    for (const auto& lv : j.value("concurrency", nlohmann::json::array()))
      best = std::max(best, lv["throughput_per_s"].get<double>());
    j["cost"] = cost_json(price_per_hour, best, instance);
    j["peak_rss_bytes"] = peak_rss_bytes();
    if (f.json) return print_json(j);
    std::printf("%s  %s  threads %d  commit %s\n  machine %s (%s)\n", path.c_str(), c.architecture.c_str(),
                num_threads(), commit(), machine_json()["cpu"].get<std::string>().c_str(),
                machine_json()["isa"].get<std::string>().c_str());
    const auto& l = j["latency_ms"];
    std::printf("  latency ms  p50 %.3f  p90 %.3f  p95 %.3f  p99 %.3f  max %.3f  mean %.3f  (n=%lld)\n",
                l["p50"].get<double>(), l["p90"].get<double>(), l["p95"].get<double>(), l["p99"].get<double>(),
                l["max"].get<double>(), l["mean"].get<double>(), static_cast<long long>(l["count"].get<int64_t>()));
    if (j.contains("ttft_ms"))
      std::printf(
          "  TTFT %.2f ms  TPOT %.3f ms  %.1f tokens/s  prefill %.1f tokens/s  decode %.2f GB/s  KV cache %s %.1f MB\n",
          j["ttft_ms"].get<double>(), j["tpot_ms"].get<double>(), j["tokens_per_s"].get<double>(),
          j["prefill_tokens_per_s"].get<double>(), j["decode_gb_per_s"].get<double>(),
          j["kv_cache"].get<std::string>().c_str(), j["kv_cache_bytes"].get<size_t>() / 1e6);
    if (j.contains("gflop"))
      std::printf("  %.2f GFLOP per forward, %.1f GFLOP/s, throughput %.1f sequences/s\n", j["gflop"].get<double>(),
                  j["gflops_per_s"].get<double>(), j["throughput_per_s"].get<double>());
    if (j.contains("ratio_to_floor"))
      std::printf("  measured fp32 peak %.1f GFLOP/s -> floor %.2f ms; p50 is %.2fx the floor\n",
                  j["peak_gflops_per_s"].get<double>(), j["floor_ms"].get<double>(), j["ratio_to_floor"].get<double>());
    if (j.contains("bandwidth_share"))
      std::printf(
          "  measured read bandwidth: burst %.2f GB/s, sustained (STREAM rule) %.2f GB/s; decode reaches %.0f%% / "
          "%.0f%% of them\n",
          j["stream_read_gb_per_s"].get<double>(), j["stream_read_sustained_gb_per_s"].get<double>(),
          100 * j["bandwidth_share"].get<double>(), 100 * j["bandwidth_share_sustained"].get<double>());
    for (const auto& lv : j.value("concurrency", nlohmann::json::array())) {
      std::printf("  concurrency %d: %.2f requests/s  p50 %.2f ms  p99 %.2f ms  mean batch %.2f",
                  lv["concurrency"].get<int>(), lv["throughput_per_s"].get<double>(), lv["p50_ms"].get<double>(),
                  lv["p99_ms"].get<double>(), lv["mean_batch"].get<double>());
      if (lv.contains("tokens_per_s"))
        std::printf("  |  %.1f tokens/s  TPOT %.2f ms  TTFT %.1f ms", lv["tokens_per_s"].get<double>(),
                    lv["tpot_ms"].get<double>(), lv["ttft_ms"].get<double>());
      std::printf("\n");
    }
    const auto& e = j["energy"];
    if (e["estimated"].get<bool>())
      std::printf("  energy %.4f J per inference (ESTIMATE: %.2f CPU s x %.0f W per core; RAPL not readable)\n",
                  e["joules_per_inference"].get<double>(), e["cpu_seconds"].get<double>(),
                  e["watts_per_core"].get<double>());
    else
      std::printf("  energy %.4f J per inference (RAPL, whole package)\n", e["joules_per_inference"].get<double>());
    std::printf("  cost %.6f USD per 1,000 inferences at %.1f/s (%.4f USD/h, %s)\n",
                j["cost"]["usd_per_1k"].get<double>(), best, price_per_hour, instance.c_str());
    std::printf("  peak RSS %.1f MB, size on disk %.1f MB, load %.0f ms\n", peak_rss_bytes() / 1e6,
                j["size_bytes"].get<size_t>() / 1e6, load_ms);
  });
}

}  // namespace shrink::cli
