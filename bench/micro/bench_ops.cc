// Elementwise/row kernels in GB/s next to a memcpy of the same bytes (same run, interleaved), decode attention in
// GB/s of KV read as a share of the streaming-read peak, encoder attention in GFLOP/s as a share of the fp32 peak.
#include <shrink/kernels/attention.h>
#include <shrink/kernels/elementwise.h>

#include <cmath>
#include <cstring>
#include <map>

#include "micro/bench_common.h"

namespace shrink::bench {
namespace {

double g_stream_gbps = 0, g_peak_gflops = 0;

bool isa_runs_here(Isa isa) {
  return static_cast<int>(isa) <= static_cast<int>(active_isa());
}

// ---------------- elementwise: one thread, kernel table of one ISA ----------------

enum class Op { Rmsnorm, Layernorm, GeluErf, GeluTanh, Silu, Swiglu, Softmax, Add };

struct RowCase {
  const char* what;
  Op op;
  int64_t rows, dim;
  int streams;  // float arrays of rows * dim read or written per call (x and y; 3 for swiglu and add)
};

const RowCase kRowCases[] = {
    {"rmsnorm llama-7b decode 1x4096", Op::Rmsnorm, 1, 4096, 2},
    {"rmsnorm llama-7b prefill 128x4096", Op::Rmsnorm, 128, 4096, 2},
    {"layernorm bert 128x768", Op::Layernorm, 128, 768, 2},
    {"gelu_erf bert 128x3072", Op::GeluErf, 128, 3072, 2},
    {"gelu_tanh gpt2 128x3072", Op::GeluTanh, 128, 3072, 2},
    {"swiglu llama-7b 16x11008", Op::Swiglu, 16, 11008, 3},
    {"softmax llama vocab 1x32000", Op::Softmax, 1, 32000, 2},
    {"softmax bert scores 1536x128", Op::Softmax, 12 * 128, 128, 2},
    {"add bert 128x768", Op::Add, 128, 768, 3},
};

struct RowData {
  std::vector<float> x, y, w, b;
};

RowData& row_data(const RowCase& c) {
  static std::map<std::string, RowData> cache;
  RowData& d = cache[c.what];
  if (d.x.empty()) {
    d.x = random_floats(c.rows * c.dim, 1);
    for (float& v : d.x) v *= 4.0f;
    d.y = random_floats(c.rows * c.dim, 2);
    d.w = random_floats(c.dim, 3);
    d.b = random_floats(c.dim, 4);
  }
  return d;
}

void run_row_case(const kernels::ElementwiseKernels& k, const RowCase& c, RowData& d) {
  const int64_t n = c.rows * c.dim;
  switch (c.op) {
    case Op::Rmsnorm:
      for (int64_t r = 0; r < c.rows; ++r)
        k.rmsnorm(d.x.data() + r * c.dim, d.w.data(), 1e-5f, c.dim, d.y.data() + r * c.dim);
      break;
    case Op::Layernorm:
      for (int64_t r = 0; r < c.rows; ++r)
        k.layernorm(d.x.data() + r * c.dim, d.w.data(), d.b.data(), 1e-5f, c.dim, d.y.data() + r * c.dim);
      break;
    case Op::GeluErf: k.gelu_erf(d.y.data(), n); break;
    case Op::GeluTanh: k.gelu_tanh(d.y.data(), n); break;
    case Op::Silu: k.silu(d.y.data(), n); break;
    case Op::Swiglu: k.swiglu(d.y.data(), d.x.data(), n); break;
    case Op::Softmax:
      for (int64_t r = 0; r < c.rows; ++r) k.softmax(d.y.data() + r * c.dim, c.dim);
      break;
    case Op::Add: k.add(d.y.data(), d.x.data(), n); break;
  }
}

void bench_row(benchmark::State& state, RowCase c, Isa isa) {
  if (!isa_runs_here(isa)) {
    state.SkipWithError("CPU lacks this ISA");
    return;
  }
  const kernels::ElementwiseKernels& k = kernels::elementwise_kernels(isa);
  RowData& d = row_data(c);
  // In-place ops get fresh input before every call, untimed: repeated GELU/SwiGLU would decay into denormals.
  const bool in_place = c.op != Op::Rmsnorm && c.op != Op::Layernorm;
  const std::vector<float> fresh = random_floats(c.rows * c.dim, 8);
  double ms = 1e30;
  for (auto _ : state) {
    if (in_place) std::memcpy(d.y.data(), fresh.data(), fresh.size() * sizeof(float));
    Timer t;
    run_row_case(k, c, d);
    ms = std::min(ms, t.elapsed_ms());
  }
  const double bytes = static_cast<double>(c.streams) * c.rows * c.dim * sizeof(float);
  const double gbps = bytes / (ms * 1e6);
  state.counters["GB/s"] = gbps;
  record(fmt::format("{} {}", c.what, isa_name(isa)), gbps, g_stream_gbps, ms);
}

// memcpy of the same number of bytes the kernel reads plus writes (half read, half written).
void bench_copy(benchmark::State& state, RowCase c) {
  const size_t bytes = static_cast<size_t>(c.streams) * c.rows * c.dim * sizeof(float) / 2;
  static std::map<size_t, std::pair<std::vector<char>, std::vector<char>>> bufs;
  auto& [src, dst] = bufs[bytes];
  if (src.empty()) {
    src.assign(bytes, 1);
    dst.assign(bytes, 0);
  }
  const double ms = timed_loop(state, [&] {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
  });
  const double gbps = 2.0 * bytes / (ms * 1e6);
  state.counters["GB/s"] = gbps;
  record(fmt::format("{} memcpy", c.what), gbps, g_stream_gbps, ms);
}

// ---------------- attention: the threaded drivers ----------------

struct DecodeShape {
  const char* what;
  int n_heads, n_kv_heads, head_dim;
};

const DecodeShape kDecodeShapes[] = {
    {"llama-7b 32x128", 32, 32, 128},
    {"tinyllama gqa 32/4x64", 32, 4, 64},
};

void bench_decode(benchmark::State& state, DecodeShape s, int64_t ctx, Isa isa) {
  if (!isa_runs_here(isa)) {
    state.SkipWithError("CPU lacks this ISA");
    return;
  }
  const int64_t kv_row = int64_t{s.n_kv_heads} * s.head_dim;
  // Two caches used alternately, so no call finds the previous call's KV in cache.
  static std::map<std::string, std::vector<float>> cache;
  std::vector<float>& kv = cache[fmt::format("{}-{}", s.what, ctx)];
  if (kv.empty()) kv = random_floats(4 * ctx * kv_row, 5);
  const auto q = random_floats(int64_t{s.n_heads} * s.head_dim, 6);
  std::vector<float> out(q.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  int flip = 0;
  const double ms = timed_loop(state, [&] {
    const float* base = kv.data() + (flip ^= 1) * 2 * ctx * kv_row;
    kernels::attention_causal(isa, q.data(), 1, ctx - 1, base, base + ctx * kv_row, kv_row, s.n_heads, s.n_kv_heads,
                              s.head_dim, scale, out.data());
  });
  const double gbps = 2.0 * ctx * kv_row * sizeof(float) / (ms * 1e6);
  state.counters["KV GB/s"] = gbps;
  record(fmt::format("attn decode {} ctx {} {}", s.what, ctx, isa_name(isa)), gbps, g_stream_gbps, ms);
}

void bench_encoder(benchmark::State& state, Isa isa) {
  if (!isa_runs_here(isa)) {
    state.SkipWithError("CPU lacks this ISA");
    return;
  }
  const int heads = 12, hd = 64;
  const int64_t T = 128, row = heads * hd;
  const auto qkv = random_floats(T * 3 * row, 7);
  const std::vector<int32_t> mask(T, 1);
  std::vector<float> out(T * row);
  const float scale = 0.125f;
  const double ms = timed_loop(state, [&] {
    kernels::attention_masked(isa, qkv.data(), qkv.data() + row, qkv.data() + 2 * row, 3 * row, T, mask.data(), heads,
                              hd, scale, out.data());
  });
  const double gflops = 4.0 * heads * T * T * hd / (ms * 1e6);  // QK^T and PV, 2 flops per multiply-add
  state.counters["GFLOP/s"] = gflops;
  record(fmt::format("attn encoder bert 12x128x64 {}", isa_name(isa)), gflops, g_peak_gflops, ms);
}

const Isa kIsas[] = {Isa::Scalar, Isa::Avx2, Isa::Avx512};

}  // namespace
}  // namespace shrink::bench

int main(int argc, char** argv) {
  using namespace shrink::bench;
  using shrink::Isa;
  benchmark::Initialize(&argc, argv);
  const int threads = bench_threads();
  print_machine(threads);
  g_stream_gbps = shrink::measure_stream_read_gbps(threads);
  g_peak_gflops = shrink::measure_fp32_peak_gflops(threads);
  fmt::print("streaming read peak: {:.1f} GB/s | fp32 peak (oneDNN best large sgemm): {:.1f} GFLOP/s\n", g_stream_gbps,
             g_peak_gflops);
  // Each elementwise case runs right after a memcpy of its bytes: the machine is noisy, so compare neighbours.
  for (const RowCase& c : kRowCases) {
    benchmark::RegisterBenchmark(fmt::format("copy/{}", c.what).c_str(), bench_copy, c)->MinTime(0.2)->UseRealTime();
    for (Isa isa : kIsas)
      benchmark::RegisterBenchmark(fmt::format("{}/{}", isa_name(isa), c.what).c_str(), bench_row, c, isa)
          ->MinTime(0.2)
          ->UseRealTime();
  }
  for (const DecodeShape& s : kDecodeShapes)
    for (int64_t ctx : {128, 512, 2048})
      for (Isa isa : kIsas)
        benchmark::RegisterBenchmark(fmt::format("decode/{}/{}/ctx{}", isa_name(isa), s.what, ctx).c_str(),
                                     bench_decode, s, ctx, isa)
            ->MinTime(0.3)
            ->UseRealTime();
  for (Isa isa : kIsas)
    benchmark::RegisterBenchmark(fmt::format("encoder/{}/bert-12x128x64", isa_name(isa)).c_str(), bench_encoder, isa)
        ->MinTime(0.3)
        ->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  fmt::print(
      "\nGB/s rows: share of the streaming-read peak ({:.1f} GB/s); elementwise rows run on one thread and\n"
      "mostly from cache, so compare them with their memcpy row. Encoder row: share of the fp32 peak.\n",
      g_stream_gbps);
  print_rows("rate", g_stream_gbps, "streaming read GB/s");
  benchmark::Shutdown();
  return 0;
}
