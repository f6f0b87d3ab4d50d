// Machine peaks: streaming-read bandwidth (own vector loops) and fp32 GEMM rate (oneDNN matmul).
#include <shrink/bench/peak.h>
#include <shrink/core/cpu.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/core/timer.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <dnnl.hpp>
#include <memory>
#include <vector>

namespace shrink {
namespace detail {
float stream_read_sum_avx512(const float* p, size_t n);
float stream_read_sum_avx2(const float* p, size_t n);
}  // namespace detail

namespace {

float stream_read_sum_scalar(const float* p, size_t n) {
  float a[16] = {};
  for (size_t i = 0; i < n; i += 16)
    for (int j = 0; j < 16; ++j) a[j] += p[i + j];
  float s = 0;
  for (float f : a) s += f;
  return s;
}

// Restores the pool size when a measurement on a different thread count ends.
class ThreadScope {
 public:
  explicit ThreadScope(int threads) : saved_(num_threads()) { set_num_threads(threads); }
  ~ThreadScope() { set_num_threads(saved_); }

 private:
  int saved_;
};

}  // namespace

double measure_stream_read_gbps(int threads) {
  ThreadScope scope(threads);
  constexpr size_t kBytes = size_t{1} << 30;
  constexpr size_t kFloats = kBytes / sizeof(float);
  std::unique_ptr<float, decltype(&std::free)> buf(static_cast<float*>(std::aligned_alloc(64, kBytes)), &std::free);
  check(buf != nullptr, "measure_stream_read_gbps: could not allocate the 1 GiB test buffer; free memory and retry");
  float* p = buf.get();
  // First touch from the threads that will read, so pages are mapped (and on NUMA machines, local) before timing.
  parallel_for(static_cast<int64_t>(kFloats / 16), 1 << 14,
               [&](int64_t b, int64_t e) { std::fill(p + b * 16, p + e * 16, 1.0f); });
  using SumFn = float (*)(const float*, size_t);
  const Isa isa = active_isa();
  const SumFn sum = isa == Isa::Avx512 ? detail::stream_read_sum_avx512
                    : isa == Isa::Avx2 ? detail::stream_read_sum_avx2
                                       : stream_read_sum_scalar;
  const int64_t blocks = kFloats / 64;
  double best_s = 1e30;
  volatile float sink = 0;
  for (int pass = 0; pass < 8; ++pass) {
    Timer t;
    float total = 0;
    parallel_for(blocks, 1 << 12, [&](int64_t b, int64_t e) {
      const float s = sum(p + b * 64, static_cast<size_t>(e - b) * 64);
#pragma omp atomic
      total += s;
    });
    best_s = std::min(best_s, t.elapsed_ms() * 1e-3);
    sink = total;
  }
  (void)sink;
  return static_cast<double>(kBytes) / best_s * 1e-9;
}

double measure_fp32_peak_gflops(int threads) {
  ThreadScope scope(threads);
  using dnnl::memory;
  struct Mnk {
    int64_t m, n, k;
  };
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(eng);
  double best = 0;
  try {
    for (Mnk s : {Mnk{1024, 1024, 1024}, Mnk{2048, 2048, 2048}, Mnk{1024, 4096, 1024}, Mnk{2048, 1024, 4096}}) {
      const memory::desc a_md({s.m, s.k}, memory::data_type::f32, memory::format_tag::ab);
      const memory::desc b_md({s.k, s.n}, memory::data_type::f32, memory::format_tag::any);
      const memory::desc c_md({s.m, s.n}, memory::data_type::f32, memory::format_tag::ab);
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), eng);
      memory a(a_md, eng), b(pd.weights_desc(), eng), c(c_md, eng);
      std::fill_n(static_cast<float*>(a.get_data_handle()), s.m * s.k, 0.5f);
      std::memset(b.get_data_handle(), 0, pd.weights_desc().get_size());
      const dnnl::matmul mm(pd);
      const std::unordered_map<int, memory> args{{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}};
      const double flops = 2.0 * s.m * s.n * s.k;
      for (int run = 0; run < 4; ++run) {  // the first run also warms caches and page mappings
        Timer t;
        mm.execute(stream, args);
        stream.wait();
        best = std::max(best, flops / (t.elapsed_ms() * 1e-3) * 1e-9);
      }
    }
  } catch (const dnnl::error& e) {
    fail("measure_fp32_peak_gflops: oneDNN matmul failed ({})", e.what());
  }
  return best;
}

}  // namespace shrink
