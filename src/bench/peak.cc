// Machine peaks: streaming-read bandwidth (own vector loops) and fp32 GEMM rate (oneDNN matmul).
#include <shrink/bench/peak.h>
#include <shrink/core/cpu.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/core/timer.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <dnnl.hpp>
#include <functional>
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

float stream_read_sum(const float* p, size_t n) {
  using SumFn = float (*)(const float*, size_t);
  const Isa isa = active_isa();
  const SumFn sum = isa == Isa::Avx512 ? detail::stream_read_sum_avx512
                    : isa == Isa::Avx2 ? detail::stream_read_sum_avx2
                                       : stream_read_sum_scalar;
  const int64_t blocks = static_cast<int64_t>(n / 64);
  float total = 0;
  parallel_for(blocks, 1 << 12, [&](int64_t b, int64_t e) {
    const float s = sum(p + b * 64, static_cast<size_t>(e - b) * 64);
#pragma omp atomic
    total += s;
  });
  for (size_t i = static_cast<size_t>(blocks) * 64; i < n; ++i) total += p[i];
  return total;
}

StreamRead measure_stream_read(int threads) {
  ThreadScope scope(threads);
  // 512 MiB: 16x the largest L3 of a CPU this runs on (STREAM asks for 4x), and each first touch of a page is slow
  // in a VM.
  constexpr size_t kBytes = size_t{512} << 20;
  constexpr size_t kFloats = kBytes / sizeof(float);
  // MAP_POPULATE maps every page up front, several times faster than faulting them in one by one.
  void* mapped = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  check(mapped != MAP_FAILED, "measure_stream_read: could not map the 512 MiB test buffer; free memory and retry");
  const std::unique_ptr<void, std::function<void(void*)>> unmap(mapped, [](void* m) { munmap(m, kBytes); });
  float* p = static_cast<float*>(mapped);
  parallel_for(static_cast<int64_t>(kFloats / 16), 1 << 14,
               [&](int64_t b, int64_t e) { std::fill(p + b * 16, p + e * 16, 1.0f); });
  volatile float sink = 0;
  StreamRead r;
  // Sustained (STREAM's rule): best of a few passes over the whole buffer, before and after the bursts below.
  auto full_passes = [&] {
    for (int pass = 0; pass < 5; ++pass) {
      Timer t;
      sink = stream_read_sum(p, kFloats);
      r.sustained_gbps = std::max(r.sustained_gbps, static_cast<double>(kBytes) / (t.elapsed_ms() * 1e6));
    }
  };
  full_passes();
  // Burst: many short passes over 16 MiB parts in turn, best one counted: a part was last read 512 MiB ago so it
  // comes from DRAM, and on a shared machine a short pass is more likely to run undisturbed than a long one. (The
  // GEMV benchmark times single calls over rotating weight copies the same way.)
  constexpr int kParts = 32;
  constexpr size_t kPartFloats = kFloats / kParts;
  double best_s = 1e30;
  Timer budget;
  for (int pass = 0; pass < 8 || (pass < 20000 && budget.elapsed_ms() < 800); ++pass) {
    const float* part = p + (pass % kParts) * kPartFloats;
    Timer t;
    sink = stream_read_sum(part, kPartFloats);
    best_s = std::min(best_s, t.elapsed_ms() * 1e-3);
  }
  full_passes();
  (void)sink;
  r.burst_gbps = static_cast<double>(kPartFloats * sizeof(float)) / best_s * 1e-9;
  return r;
}

double measure_stream_read_gbps(int threads) {
  return measure_stream_read(threads).burst_gbps;
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
    // m = 256..1024 with n, k = 1024..2048: large enough for oneDNN's best blocking; the shorter ones (1-3 ms) make
    // it likely that the best of many runs was undisturbed on a shared machine.
    for (Mnk s : {Mnk{1024, 1024, 1024}, Mnk{512, 1024, 2048}, Mnk{256, 2048, 1024}, Mnk{256, 1024, 2048}}) {
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
      Timer budget;
      for (int run = 0; run < 3 || (run < 100 && budget.elapsed_ms() < 350); ++run) {
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
