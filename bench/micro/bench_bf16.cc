// BF16 weights on TinyLlama-1.1B shapes: decode GEMV (m = 1) in GB/s and share of the streaming-read bandwidth
// measured in the same run (with a paired streaming read of another copy) next to the fp32 GEMV of the same shape
// in the same loop, and prefill GEMMs (m = 128) against the fp32 packed GEMM.
#include <shrink/core/dtype.h>
#include <shrink/kernels/bf16.h>
#include <shrink/kernels/gemm.h>

#include <map>

#include "micro/bench_common.h"

namespace shrink::bench {
namespace {

double g_best_paired_read_gbps = 0;

struct Shape {
  const char* what;
  int64_t n, k;  // out, in
};

const Shape kShapes[] = {
    {"q_o", 2048, 2048}, {"k_v", 256, 2048}, {"gate_up", 5632, 2048}, {"down", 2048, 5632}, {"lm_head", 32000, 2048},
};
constexpr size_t kMinBytes = size_t{256} << 20;

Tensor to_bf16(const std::vector<float>& wf) {
  Tensor t = Tensor::empty(DType::BF16, {static_cast<int64_t>(wf.size())});
  uint16_t* d = t.data<uint16_t>();
  for (size_t i = 0; i < wf.size(); ++i) d[i] = f32_to_bf16(wf[i]);
  return t;
}

std::map<std::string, double> g_ms;

void bench_gemv(benchmark::State& state, Shape s) {
  const auto wf = random_floats(s.n * s.k, 1);
  const Tensor one = to_bf16(wf);
  std::vector<Tensor> copies;
  for (size_t i = 0; i < std::max<size_t>(4, kMinBytes / one.nbytes() + 1); ++i) copies.push_back(one.clone());
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
    const kernels::Bf16Matrix w{copies[i].data<uint16_t>(), s.n, s.k, s.k};
    Timer t;
    kernels::bf16_gemv(w, x.data(), 1, s.k, nullptr, y.data(), s.n, isa);
    best = std::min(best, t.elapsed_ms());
    const Tensor& other = copies[(i + copies.size() / 2) % copies.size()];
    Timer r;
    sink = stream_read_sum(other.data<float>(), other.nbytes() / sizeof(float));
    best_read = std::min(best_read, r.elapsed_ms());
    Timer f;
    kernels::sgemv_packed(f32[j], x.data(), 1, s.k, nullptr, y.data(), s.n);
    best_f32 = std::min(best_f32, f.elapsed_ms());
    i = (i + 1) % copies.size();
    j = (j + 1) % f32.size();
  }
  (void)sink;
  const double bytes = static_cast<double>(one.nbytes());
  g_best_paired_read_gbps = std::max(g_best_paired_read_gbps, bytes / (best_read * 1e6));
  record(fmt::format("bf16 gemv {} {}x{}", s.what, s.n, s.k), bytes / (best * 1e6), best, best_read / best);
  record(fmt::format("f32 gemv {} {}x{}", s.what, s.n, s.k), static_cast<double>(fbytes) / (best_f32 * 1e6), best_f32);
  g_ms[s.what] = best;
  g_ms[std::string("f32 ") + s.what] = best_f32;
  state.counters["GB/s"] = bytes / (best * 1e6);
  state.counters["x_vs_f32"] = best_f32 / best;
}

struct GemmRow {
  std::string name;
  double ms, f32_ms, gflop;
};
std::vector<GemmRow> g_gemm;

void bench_gemm(benchmark::State& state, Shape s, int64_t m) {
  const auto wf = random_floats(s.n * s.k, 1);
  const Tensor w16 = to_bf16(wf);
  const kernels::Bf16Matrix w{w16.data<uint16_t>(), s.n, s.k, s.k};
  const auto f32 = kernels::PackedWeightsF32::pack(wf.data(), DType::F32, s.n, s.k, s.k, active_isa());
  const auto x = random_floats(m * s.k, 2);
  std::vector<float> y(m * s.n);
  const Isa isa = active_isa();
  double best = 1e30, best_f32 = 1e30;
  for (auto _ : state) {
    Timer t;
    kernels::bf16_gemm(w, x.data(), m, s.k, nullptr, y.data(), s.n, isa);
    best = std::min(best, t.elapsed_ms());
    Timer f;
    kernels::sgemm_packed_gemm(f32, x.data(), m, s.k, nullptr, y.data(), s.n);
    best_f32 = std::min(best_f32, f.elapsed_ms());
  }
  const double gflop = 2.0 * m * s.n * s.k * 1e-9;
  g_gemm.push_back({fmt::format("bf16 gemm m{} {} {}x{}", m, s.what, s.n, s.k), best, best_f32, gflop});
  state.counters["GFLOP/s"] = gflop / (best * 1e-3);
}

}  // namespace
}  // namespace shrink::bench

int main(int argc, char** argv) {
  using namespace shrink::bench;
  benchmark::Initialize(&argc, argv);
  const int threads = bench_threads();
  print_machine(threads);
  const shrink::Isa isa = shrink::active_isa();
  fmt::print("kernels: {} | {}\n", shrink::kernels::bf16_gemv_name(isa), shrink::kernels::bf16_gemm_name(isa));
  double stream = shrink::measure_stream_read_gbps(threads);
  fmt::print("streaming read (512 MiB in 16 MiB parts, vector loads): {:.1f} GB/s\n", stream);
  const double peak = shrink::measure_fp32_peak_gflops(threads);
  fmt::print("fp32 GEMM peak (oneDNN best): {:.1f} GFLOP/s\n", peak);
  for (const Shape& s : kShapes)
    benchmark::RegisterBenchmark(fmt::format("gemv/bf16/{}", s.what).c_str(), bench_gemv, s)
        ->Iterations(s.n * s.k > (1 << 24) ? 40 : 200)
        ->UseRealTime();
  for (const Shape& s : kShapes)
    if (std::string(s.what) != "lm_head")
      benchmark::RegisterBenchmark(fmt::format("gemm/bf16/m128/{}", s.what).c_str(), bench_gemm, s, int64_t{128})
          ->Iterations(12)
          ->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  const double again = shrink::measure_stream_read_gbps(threads);
  fmt::print("streaming read measured again after the cases: {:.1f}; fastest paired read: {:.1f}\n", again,
             g_best_paired_read_gbps);
  stream = std::max({stream, again, g_best_paired_read_gbps});
  print_rows("GB/s", stream, "streaming read");
  fmt::print("\nGEMV time, fp32 / BF16 (same shape, same loop):\n");
  for (const Shape& s : kShapes)
    if (g_ms.count(s.what))
      fmt::print("  {:<10} {:.3f} ms / {:.3f} ms = {:.2f}x\n", s.what, g_ms[std::string("f32 ") + s.what], g_ms[s.what],
                 g_ms[std::string("f32 ") + s.what] / g_ms[s.what]);
  fmt::print("\n{:<44} {:>9} {:>9} {:>9} {:>8} {:>8}\n", "GEMM case", "BF16 ms", "GFLOP/s", "of peak", "fp32 ms",
             "f32/BF16");
  for (const GemmRow& r : g_gemm)
    fmt::print("{:<44} {:>9.3f} {:>9.1f} {:>8.1f}% {:>8.3f} {:>7.2f}x\n", r.name, r.ms, r.gflop / (r.ms * 1e-3),
               100.0 * r.gflop / (r.ms * 1e-3) / peak, r.f32_ms, r.f32_ms / r.ms);
  benchmark::Shutdown();
  return 0;
}
