// W4A16 on TinyLlama-1.1B shapes: decode GEMV (m = 1) in GB/s of weight+scale bytes and share of the streaming-read
// bandwidth measured in the same run (with a paired streaming read of another copy), the fp32 GEMV on the same
// shape in the same loop, and prefill GEMMs (m = 128) against the fp32 packed GEMM, with the 22-layer total.
#include <shrink/kernels/gemm.h>
#include <shrink/kernels/int4.h>
#include <shrink/ops/qlinear.h>

#include <cstring>
#include <map>

#include "micro/bench_common.h"

namespace shrink::bench {
namespace {

double g_best_paired_read_gbps = 0;

struct Shape {
  const char* what;
  int64_t n, k;     // out, in
  int layer_count;  // times per decoder layer (q and o, k and v, gate and up share shapes)
};

const Shape kShapes[] = {
    {"q_o", 2048, 2048, 2},  {"k_v", 256, 2048, 2},       {"gate_up", 5632, 2048, 2},
    {"down", 2048, 5632, 1}, {"lm_head", 32000, 2048, 0},
};
constexpr int kLayers = 22;

// Each case cycles through enough copies (>= 256 MiB per kind) that weights come from DRAM, as in decode.
constexpr size_t kMinBytes = size_t{256} << 20;

// One W4 matrix in one 64-byte aligned block (codes, then scales, then zero points) so a paired streaming read
// covers exactly the bytes the GEMV reads.
struct W4Copy {
  Tensor block;
  kernels::W4Matrix w;
};

W4Copy copy_w4(const PackedLinear& p) {
  const Tensor& c = *p.find("weight_packed");
  const Tensor& s = *p.find("weight_scale");
  const Tensor* z = p.find("weight_zero_point");
  const size_t cb = c.nbytes(), sb = s.nbytes(), zb = z ? z->nbytes() : 0;
  const size_t total = (cb + sb + zb + 63) / 64 * 64;
  W4Copy out;
  out.block = Tensor::zeros(DType::U8, {static_cast<int64_t>(total)});
  uint8_t* b = out.block.data<uint8_t>();
  std::memcpy(b, c.raw(), cb);
  std::memcpy(b + cb, s.raw(), sb);
  if (z) std::memcpy(b + cb + sb, z->raw(), zb);
  out.w = {b, reinterpret_cast<const uint16_t*>(b + cb), z ? b + cb + sb : nullptr, p.out, p.in, p.spec.group};
  return out;
}

size_t w4_bytes(const kernels::W4Matrix& w) {
  const size_t groups = static_cast<size_t>(w.n * w.groups());
  return static_cast<size_t>(w.n * w.row_bytes()) + groups * 2 + (w.zero_points ? groups : 0);
}

PackedLinear quantized(const std::vector<float>& wf, const Shape& s, const char* scheme) {
  return quantize_linear_weights(Tensor::from_f32(wf, {s.n, s.k}), nullptr, parse_quant_spec(scheme));
}

std::map<std::string, double> g_ms;  // best ms per case, for the summary lines

// W4 GEMV, a streaming read of another W4 copy, and the fp32 GEMV of the same shape, in turn each iteration.
void bench_gemv(benchmark::State& state, Shape s, const char* scheme) {
  const auto wf = random_floats(s.n * s.k, 1);
  const PackedLinear p = quantized(wf, s, scheme);
  std::vector<W4Copy> w4;
  const size_t bytes = w4_bytes(copy_w4(p).w);
  for (size_t i = 0; i < std::max<size_t>(4, kMinBytes / bytes + 1); ++i) w4.push_back(copy_w4(p));
  std::vector<kernels::PackedWeightsF32> f32;
  const size_t fbytes = s.n * s.k * sizeof(float);
  for (size_t i = 0; i < std::max<size_t>(2, kMinBytes / fbytes + 1); ++i)
    f32.push_back(kernels::PackedWeightsF32::pack(wf.data(), DType::F32, s.n, s.k, s.k, active_isa()));
  const auto x = random_floats(s.k, 2);
  std::vector<float> y(s.n);
  const Isa isa = active_isa();
  double best = 1e30, best_read = 1e30, best_f32 = 1e30;
  volatile float sink = 0;
  size_t i = 0, j = 0;
  for (auto _ : state) {
    Timer t;
    kernels::w4_gemv(w4[i].w, x.data(), 1, s.k, nullptr, y.data(), s.n, isa);
    best = std::min(best, t.elapsed_ms());
    const W4Copy& other = w4[(i + w4.size() / 2) % w4.size()];
    Timer r;
    sink = stream_read_sum(other.block.data<float>(), other.block.nbytes() / sizeof(float));
    best_read = std::min(best_read, r.elapsed_ms());
    Timer f;
    kernels::sgemv_packed(f32[j], x.data(), 1, s.k, nullptr, y.data(), s.n);
    best_f32 = std::min(best_f32, f.elapsed_ms());
    i = (i + 1) % w4.size();
    j = (j + 1) % f32.size();
  }
  (void)sink;
  const double read_bytes = static_cast<double>(w4[0].block.nbytes());
  g_best_paired_read_gbps = std::max(g_best_paired_read_gbps, read_bytes / (best_read * 1e6));
  const std::string name = fmt::format("{} gemv {} {}x{}", scheme, s.what, s.n, s.k);
  record(name, static_cast<double>(bytes) / (best * 1e6), best, (bytes / best) / (read_bytes / best_read));
  record(fmt::format("f32 gemv {} {}x{}", s.what, s.n, s.k), static_cast<double>(fbytes) / (best_f32 * 1e6), best_f32);
  g_ms[name] = best;
  if (std::string(scheme) == "w4a16-g32") g_ms[fmt::format("f32 gemv {}", s.what)] = best_f32;
  state.counters["GB/s"] = static_cast<double>(bytes) / (best * 1e6);
  state.counters["x_vs_f32"] = best_f32 / best;
}

struct GemmRow {
  std::string name;
  double w4_ms, f32_ms, gflop;
};
std::vector<GemmRow> g_gemm;

// W4 matmul as the Linear runs it (GEMV passes up to 16 rows, GEMM on panels dequantized per call beyond) and the
// fp32 packed GEMM on the same shape, alternating call by call.
void bench_gemm(benchmark::State& state, Shape s, const char* scheme, int64_t m) {
  const auto wf = random_floats(s.n * s.k, 1);
  const PackedLinear p = quantized(wf, s, scheme);
  const W4Copy w4 = copy_w4(p);
  const auto f32 = kernels::PackedWeightsF32::pack(wf.data(), DType::F32, s.n, s.k, s.k, active_isa());
  const auto x = random_floats(m * s.k, 2);
  std::vector<float> y(m * s.n);
  const Isa isa = active_isa();
  double best = 1e30, best_f32 = 1e30;
  for (auto _ : state) {
    Timer t;
    kernels::w4_matmul(w4.w, x.data(), m, s.k, nullptr, y.data(), s.n, isa);  // what the W4 Linear runs
    best = std::min(best, t.elapsed_ms());
    Timer f;
    kernels::sgemm_packed_gemm(f32, x.data(), m, s.k, nullptr, y.data(), s.n);
    best_f32 = std::min(best_f32, f.elapsed_ms());
  }
  const double gflop = 2.0 * m * s.n * s.k * 1e-9;
  g_gemm.push_back({fmt::format("{} gemm m{} {} {}x{}", scheme, m, s.what, s.n, s.k), best, best_f32, gflop});
  state.counters["GFLOP/s"] = gflop / (best * 1e-3);
  state.counters["x_vs_f32"] = best_f32 / best;
}

}  // namespace
}  // namespace shrink::bench

int main(int argc, char** argv) {
  using namespace shrink::bench;
  benchmark::Initialize(&argc, argv);
  const int threads = bench_threads();
  print_machine(threads);
  const shrink::Isa isa = shrink::active_isa();
  fmt::print("kernels: {} | {}\n", shrink::kernels::w4_gemv_name(isa), shrink::kernels::w4_gemm_name(isa));
  double stream = shrink::measure_stream_read_gbps(threads);
  fmt::print("streaming read (512 MiB in 16 MiB parts, vector loads): {:.1f} GB/s\n", stream);
  const double peak = shrink::measure_fp32_peak_gflops(threads);
  fmt::print("fp32 GEMM peak (oneDNN best): {:.1f} GFLOP/s\n", peak);
  for (const Shape& s : kShapes) {
    benchmark::RegisterBenchmark(fmt::format("gemv/w4a16-g32/{}", s.what).c_str(), bench_gemv, s, "w4a16-g32")
        ->Iterations(s.n * s.k > (1 << 24) ? 40 : 200)
        ->UseRealTime();
  }
  for (const char* scheme : {"w4a16-g128-asym"})
    for (const Shape& s : {kShapes[0], kShapes[2]})
      benchmark::RegisterBenchmark(fmt::format("gemv/{}/{}", scheme, s.what).c_str(), bench_gemv, s, scheme)
          ->Iterations(200)
          ->UseRealTime();
  for (const Shape& s : kShapes)
    if (s.layer_count > 0)
      benchmark::RegisterBenchmark(fmt::format("gemm/w4a16-g32/m128/{}", s.what).c_str(), bench_gemm, s, "w4a16-g32",
                                   int64_t{128})
          ->Iterations(12)
          ->UseRealTime();
  benchmark::RegisterBenchmark("gemm/w4a16-g32/m8/q_o", bench_gemm, kShapes[0], "w4a16-g32", int64_t{8})
      ->Iterations(40)
      ->UseRealTime();
  // The batched decode step of 4 sequences (one GEMV pass of 4 rows).
  benchmark::RegisterBenchmark("gemm/w4a16-g32/m4/gate_up", bench_gemm, kShapes[2], "w4a16-g32", int64_t{4})
      ->Iterations(40)
      ->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  const double again = shrink::measure_stream_read_gbps(threads);
  fmt::print("streaming read measured again after the cases: {:.1f}; fastest paired read: {:.1f}\n", again,
             g_best_paired_read_gbps);
  stream = std::max({stream, again, g_best_paired_read_gbps});
  print_rows("GB/s", stream, "streaming read");
  fmt::print("\nGEMV time, fp32 / W4 (same shape, same loop):\n");
  for (const Shape& s : kShapes) {
    const std::string w4 = fmt::format("w4a16-g32 gemv {} {}x{}", s.what, s.n, s.k);
    if (g_ms.count(w4))
      fmt::print("  {:<10} {:.3f} ms / {:.3f} ms = {:.2f}x\n", s.what, g_ms[fmt::format("f32 gemv {}", s.what)],
                 g_ms[w4], g_ms[fmt::format("f32 gemv {}", s.what)] / g_ms[w4]);
  }
  fmt::print("\n{:<44} {:>9} {:>9} {:>9} {:>8} {:>8}\n", "GEMM case", "W4 ms", "GFLOP/s", "of peak", "fp32 ms",
             "f32/W4");
  double layer_w4 = 0, layer_f32 = 0;
  for (const GemmRow& r : g_gemm) {
    fmt::print("{:<44} {:>9.3f} {:>9.1f} {:>8.1f}% {:>8.3f} {:>7.2f}x\n", r.name, r.w4_ms, r.gflop / (r.w4_ms * 1e-3),
               100.0 * r.gflop / (r.w4_ms * 1e-3) / peak, r.f32_ms, r.f32_ms / r.w4_ms);
    for (const Shape& s : kShapes)
      if (r.name == fmt::format("w4a16-g32 gemm m128 {} {}x{}", s.what, s.n, s.k)) {
        layer_w4 += s.layer_count * r.w4_ms;
        layer_f32 += s.layer_count * r.f32_ms;
      }
  }
  fmt::print(
      "TinyLlama 22 layers' GEMMs at m = 128 (q,k,v,o,gate,up,down): W4 {:.3f} s (target < 0.85 s), fp32 {:.3f} s\n",
      kLayers * layer_w4 * 1e-3, kLayers * layer_f32 * 1e-3);
  benchmark::Shutdown();
  return 0;
}
