// shrink bench MODEL: latency percentiles, throughput, TTFT/TPOT, memory, size; --peak adds the
// machine's measured fp32 peak / streaming bandwidth and this model's share of them.
#include <shrink/bench/latency.h>
#include <shrink/bench/peak.h>
#include <shrink/core/build_info.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/core/timer.h>
#include <shrink/models/generate.h>

#include <cstdio>
#include <random>

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

}  // namespace

void register_bench(CLI::App& app) {
  auto* sub = app.add_subcommand("bench", "latency, throughput, memory and size of a model");
  static std::string path, tokenizer;
  static int64_t batch = 1, seq = 128, prompt_len = 128, gen = 64, warmup = 2, iters = 0;
  static double seconds = 10;
  static bool peak = false;
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
  add_common_flags(sub, f);
  sub->callback([] {
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
    auto run_timed = [&](auto&& once) {
      for (int64_t i = 0; i < warmup; ++i) once();
      Timer budget;
      for (int64_t i = 0; iters > 0 ? i < iters : (i < 5 || budget.elapsed_ms() < seconds * 1000); ++i) {
        Timer t;
        once();
        lat.add(t.elapsed_ms());
      }
    };
    if (auto* enc = dynamic_cast<EncoderModel*>(model.get()); enc && enc->takes_images()) {
      // ViT: random pixels in [0, 1]; sequence = patches + [CLS].
      const int64_t px = int64_t{c.num_channels} * c.image_size * c.image_size;
      std::vector<float> pixels(static_cast<size_t>(batch * px));
      std::uniform_real_distribution<float> u(0.f, 1.f);
      for (float& v : pixels) v = u(rng);
      run_timed([&] { enc->forward_images(pixels.data(), batch); });
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
      const size_t bytes = decoder_bytes_per_token(dec);
      j["weight_bytes_per_token"] = bytes;
      j["decode_gb_per_s"] = bytes / 1e6 / tpot.percentile(0.5);
      if (peak) {
        const double bw = measure_stream_read_gbps(num_threads());
        j["stream_read_gb_per_s"] = bw;
        j["bandwidth_share"] = bytes / 1e6 / tpot.percentile(0.5) / bw;
      }
    }
    j["latency_ms"] = lat.summary_json();
    j["latency_histogram"] = lat.buckets_json();
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
      std::printf("  measured read bandwidth %.2f GB/s; decode reaches %.0f%% of it\n",
                  j["stream_read_gb_per_s"].get<double>(), 100 * j["bandwidth_share"].get<double>());
    std::printf("  peak RSS %.1f MB, size on disk %.1f MB, load %.0f ms\n", peak_rss_bytes() / 1e6,
                j["size_bytes"].get<size_t>() / 1e6, load_ms);
  });
}

}  // namespace shrink::cli
