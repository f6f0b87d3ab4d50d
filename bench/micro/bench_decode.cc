// Decoder runtime benchmarks, TinyLlama-1.1B widths: decode attention at 2,048 tokens of context over the fp32 and
// INT8 KV caches, a whole decode step at 2,048 tokens with each cache, and a short-context decode step with and
// without the fused linear regions. Pairs run alternately in one loop (the machine is noisy); the step rates are
// stated as a share of the streaming-read bandwidth measured in the same run.
//
// SHRINK_BENCH_MODEL=DIR decodes that model (e.g. out/models/tinyllama-1.1b from `shrink synth`); otherwise a
// random model of TinyLlama's widths with SHRINK_BENCH_LAYERS layers (default 4) is built in memory.
#include <shrink/core/error.h>
#include <shrink/models/model.h>
#include <shrink/ops/ops.h>

#include <map>

#include "micro/bench_common.h"

namespace shrink::bench {
namespace {

double g_stream_gbps = 0;

// TinyLlama-1.1B attention: 32 query heads, 4 KV heads of 64, 22 layers.
constexpr int kHeads = 32, kKvHeads = 4, kHeadDim = 64, kLayers = 22;
constexpr int64_t kKvDim = int64_t{kKvHeads} * kHeadDim;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// ---- attention alone: one query row against `ctx` keys of each of kLayers layers, cycling through 4 sequences
// so the caches (92 MiB fp32 / 24 MiB int8 per sequence) come from DRAM as they do between a step's weights ----
struct AttnCaches {
  int64_t ctx = 0;
  std::vector<std::vector<float>> k, v;        // [seq*layer] -> [ctx][kKvDim]
  std::vector<std::vector<int8_t>> k8, v8;     // same, KV8 codes
  std::vector<std::vector<float>> k_sc, v_sc;  // [seq*layer] -> [kKvHeads][ctx]
  std::vector<float> q, out;
};

AttnCaches& attn_caches(int64_t ctx) {
  static std::map<int64_t, AttnCaches> all;
  AttnCaches& c = all[ctx];
  if (c.ctx == 0) {
    c.ctx = ctx;
    const int sets = 4 * kLayers;
    const auto k = random_floats(ctx * kKvDim, 1), v = random_floats(ctx * kKvDim, 2);
    for (int i = 0; i < sets; ++i) {
      c.k.push_back(k);
      c.v.push_back(v);
      c.k8.emplace_back(ctx * kKvDim);
      c.v8.emplace_back(ctx * kKvDim);
      c.k_sc.emplace_back(kKvHeads * ctx);
      c.v_sc.emplace_back(kKvHeads * ctx);
      ops::quantize_kv8(k.data(), kKvDim, ctx, kKvHeads, kHeadDim, 0, c.k8.back().data(), kKvDim, c.k_sc.back().data(),
                        ctx);
      ops::quantize_kv8(v.data(), kKvDim, ctx, kKvHeads, kHeadDim, 0, c.v8.back().data(), kKvDim, c.v_sc.back().data(),
                        ctx);
    }
    c.q = random_floats(int64_t{kHeads} * kHeadDim, 3);
    c.out.assign(int64_t{kHeads} * kHeadDim, 0.0f);
  }
  return c;
}

// Per iteration: the attention of all kLayers layers of one sequence with the fp32 cache, then with the int8 one.
void bench_attention_pair(benchmark::State& state) {
  const int64_t ctx = state.range(0);
  AttnCaches& c = attn_caches(ctx);
  const float scale = 0.125f;
  std::vector<double> f_ms, q_ms;
  int seq = 0;
  for (auto _ : state) {
    Timer tf;
    for (int l = 0; l < kLayers; ++l) {
      const int i = seq * kLayers + l;
      ops::attention_causal(c.q.data(), 1, ctx - 1, c.k[i].data(), c.v[i].data(), kKvDim, kHeads, kKvHeads, kHeadDim,
                            scale, c.out.data());
    }
    f_ms.push_back(tf.elapsed_ms());
    seq = (seq + 1) % 4;
    Timer tq;
    for (int l = 0; l < kLayers; ++l) {
      const int i = seq * kLayers + l;
      ops::attention_causal_kv8(c.q.data(), 1, ctx - 1, c.k8[i].data(), c.v8[i].data(), kKvDim, c.k_sc[i].data(),
                                c.v_sc[i].data(), ctx, kHeads, kKvHeads, kHeadDim, scale, c.out.data());
    }
    q_ms.push_back(tq.elapsed_ms());
    seq = (seq + 1) % 4;
  }
  const double f = median(f_ms), q = median(q_ms);
  const double f_bytes = 2.0 * kLayers * ctx * kKvDim * sizeof(float);
  const double q_bytes = 2.0 * kLayers * ctx * (kKvDim + kKvHeads * sizeof(float));
  state.counters["f32_ms"] = f;
  state.counters["int8_ms"] = q;
  state.counters["int8_over_f32"] = q / f;
  record(fmt::format("attention x{} layers ctx {} f32 cache", kLayers, ctx), f_bytes / 1e6 / f, f);
  record(fmt::format("attention x{} layers ctx {} int8 cache", kLayers, ctx), q_bytes / 1e6 / q, q);
}

// ---- whole decode steps ----
struct Decoder {
  std::unique_ptr<Model> model;
  DecoderModel* dec = nullptr;
  size_t weight_bytes = 0;
  std::string what;
};

Decoder& decoder() {
  static Decoder d;
  if (d.model) return d;
  if (const char* dir = std::getenv("SHRINK_BENCH_MODEL")) {
    d.model = load_model(dir);
    d.what = dir;
  } else {
    const char* env = std::getenv("SHRINK_BENCH_LAYERS");
    const int layers = env ? std::max(1, std::atoi(env)) : 4;
    ModelConfig c;
    c.architecture = "LlamaForCausalLM";
    c.hidden_size = 2048;
    c.intermediate_size = 5632;
    c.num_layers = layers;
    c.num_heads = kHeads;
    c.num_kv_heads = kKvHeads;
    c.head_dim = kHeadDim;
    c.vocab_size = 32000;
    c.max_position_embeddings = 2048;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    TensorMap t;
    uint32_t seed = 1;
    auto add = [&](const std::string& name, Shape shape, float lo) {
      auto v = random_floats(shape_numel(shape), seed++);
      for (float& x : v) x *= lo;
      t[name] = Tensor::from_f32(v, shape);
    };
    const int64_t hid = c.hidden_size, ff = c.intermediate_size;
    add("model.embed_tokens.weight", {c.vocab_size, hid}, 0.02f);
    add("lm_head.weight", {c.vocab_size, hid}, 0.02f);
    t["model.norm.weight"] = Tensor::from_f32(std::vector<float>(hid, 1.0f), {hid});
    for (int i = 0; i < layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      t[p + "input_layernorm.weight"] = Tensor::from_f32(std::vector<float>(hid, 1.0f), {hid});
      t[p + "post_attention_layernorm.weight"] = Tensor::from_f32(std::vector<float>(hid, 1.0f), {hid});
      add(p + "self_attn.q_proj.weight", {hid, hid}, 0.02f);
      add(p + "self_attn.k_proj.weight", {kKvDim, hid}, 0.02f);
      add(p + "self_attn.v_proj.weight", {kKvDim, hid}, 0.02f);
      add(p + "self_attn.o_proj.weight", {hid, hid}, 0.02f);
      add(p + "mlp.gate_proj.weight", {ff, hid}, 0.02f);
      add(p + "mlp.up_proj.weight", {ff, hid}, 0.02f);
      add(p + "mlp.down_proj.weight", {hid, ff}, 0.02f);
    }
    d.model = build_model(c, std::move(t));
    d.what = fmt::format("random TinyLlama widths, {} layers", layers);
  }
  d.dec = dynamic_cast<DecoderModel*>(d.model.get());
  if (!d.dec) fail("SHRINK_BENCH_MODEL: {} is not a decoder", d.what);
  for (const auto& s : d.model->linears()) d.weight_bytes += s.impl->weight_bytes();
  fmt::print("decoder: {} ({:.2f} GB of linear weights per token)\n", d.what, d.weight_bytes / 1e9);
  return d;
}

// A cache holding `ctx` - 1 positions of plausible keys/values (a prefill of repeated tokens would take minutes).
KvCache filled_cache(DecoderModel& dec, int64_t ctx, KvCacheType type) {
  KvCache c = dec.new_cache(ctx, type);
  const int64_t n = ctx - 1;
  const auto k = random_floats(n * c.kv_dim, 5), v = random_floats(n * c.kv_dim, 6);
  for (int l = 0; l < dec.config().num_layers; ++l) c.store(l, 0, n, k.data(), v.data(), c.kv_dim);
  c.pos = n;
  return c;
}

// Per iteration: one decode step with cache A, then one with cache B (same model, same token).
template <class SetupA, class SetupB>
void decode_pair(benchmark::State& state, int64_t ctx, KvCacheType ta, KvCacheType tb, SetupA setup_a, SetupB setup_b,
                 const std::string& name_a, const std::string& name_b) {
  Decoder& d = decoder();
  KvCache a = filled_cache(*d.dec, ctx, ta), b = filled_cache(*d.dec, ctx, tb);
  const int64_t start = a.pos;
  std::vector<float> logits(d.dec->config().vocab_size);
  const int32_t token = 42;
  std::vector<double> a_ms, b_ms;
  for (auto _ : state) {
    setup_a();
    a.pos = start;
    Timer ta_t;
    d.dec->forward(a, &token, 1, logits.data(), false);
    a_ms.push_back(ta_t.elapsed_ms());
    setup_b();
    b.pos = start;
    Timer tb_t;
    d.dec->forward(b, &token, 1, logits.data(), false);
    b_ms.push_back(tb_t.elapsed_ms());
  }
  ops::set_linear_fusion(true);
  const double ma = median(a_ms), mb = median(b_ms);
  state.counters["a_ms"] = ma;
  state.counters["b_ms"] = mb;
  state.counters["b_over_a"] = mb / ma;
  record(name_a, d.weight_bytes / 1e6 / ma, ma);
  record(name_b, d.weight_bytes / 1e6 / mb, mb);
  fmt::print("{}: median {:.3f} ms | {}: median {:.3f} ms | ratio {:.3f} ({} pairs)\n", name_a, ma, name_b, mb, mb / ma,
             a_ms.size());
}

void bench_decode_kv_pair(benchmark::State& state) {
  const int64_t ctx = state.range(0);
  auto none = [] {};
  decode_pair(state, ctx, KvCacheType::F32, KvCacheType::Int8, none, none,
              fmt::format("decode step ctx {} f32 cache", ctx), fmt::format("decode step ctx {} int8 cache", ctx));
}

void bench_decode_fusion_pair(benchmark::State& state) {
  decode_pair(
      state, 32, KvCacheType::F32, KvCacheType::F32, [] { ops::set_linear_fusion(false); },
      [] { ops::set_linear_fusion(true); }, "decode step ctx 32 unfused linears", "decode step ctx 32 fused linears");
}

BENCHMARK(bench_attention_pair)->Arg(512)->Arg(2048)->Iterations(40)->Unit(benchmark::kMillisecond);
BENCHMARK(bench_decode_fusion_pair)->Iterations(30)->Unit(benchmark::kMillisecond);
BENCHMARK(bench_decode_kv_pair)->Arg(2048)->Iterations(30)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace shrink::bench

int main(int argc, char** argv) {
  using namespace shrink::bench;
  const int threads = bench_threads();
  print_machine(threads);
  g_stream_gbps = shrink::measure_stream_read_gbps(threads);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // Rates: attention rows in GB/s of KV cache read; decode rows in GB/s of linear weights per step.
  print_rows("GB/s", g_stream_gbps, "streaming read (measured at start)");
  return 0;
}
