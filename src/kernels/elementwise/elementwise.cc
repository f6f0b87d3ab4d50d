// Kernel-table lookup and the threaded drivers of the elementwise family (ops/ops.cc calls these with active_isa()).
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>

#include <vector>

#include "kernels/elementwise/kernel_tables.h"

namespace shrink::kernels {

namespace {

// Below this many floats a call stays on the calling thread: waking the pool costs more than the work.
constexpr int64_t kParallelMinFloats = 1 << 15;

void check_count(int64_t n, const char* op) {
  check(n >= 0, "ops::{}: element count must be >= 0, got {}", op, n);
}

// Splits [0, n) into pieces of at least kParallelMinFloats, multiples of 64 floats (whole cache lines).
template <typename Fn>
void parallel_span(int64_t n, Fn&& fn) {
  if (n < 2 * kParallelMinFloats) {
    if (n > 0) fn(int64_t{0}, n);
    return;
  }
  const int64_t blocks = (n + 63) / 64;
  parallel_for(blocks, kParallelMinFloats / 64, [&](int64_t b, int64_t e) {
    const int64_t end = e * 64 < n ? e * 64 : n;
    fn(b * 64, end);
  });
}

// Rows go to threads whole; grain keeps each chunk above kParallelMinFloats.
template <typename Fn>
void parallel_rows(int64_t rows, int64_t dim, Fn&& fn) {
  const int64_t grain = dim >= kParallelMinFloats ? 1 : kParallelMinFloats / (dim > 0 ? dim : 1);
  parallel_for(rows, grain, fn);
}

}  // namespace

namespace detail {

void check_isa_usable(Isa isa, const char* family) {
  const CpuFeatures& f = cpu_features();
  const bool ok = isa == Isa::Scalar || (isa == Isa::Avx2 && f.avx2 && f.fma) ||
                  (isa == Isa::Avx512 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq);
  check(ok, "{} kernels: this CPU ({}) cannot run ISA '{}'; use SHRINK_ISA=scalar or a level it supports", family,
        f.model, isa_name(isa));
}

}  // namespace detail

const ElementwiseKernels& elementwise_kernels(Isa isa) {
  detail::check_isa_usable(isa, "elementwise");
  switch (isa) {
    case Isa::Avx512: return detail::kElementwiseAvx512;
    case Isa::Avx2: return detail::kElementwiseAvx2;
    case Isa::Scalar: break;
  }
  return detail::kElementwiseScalar;
}

void rmsnorm(Isa isa, const float* x, const float* w, float eps, int64_t rows, int64_t dim, float* y) {
  check(rows >= 0 && dim > 0, "ops::rmsnorm: expected rows >= 0 and dim > 0, got rows {} dim {}", rows, dim);
  const auto fn = elementwise_kernels(isa).rmsnorm;
  parallel_rows(rows, dim, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) fn(x + r * dim, w, eps, dim, y + r * dim);
  });
}

void layernorm(Isa isa, const float* x, const float* w, const float* b, float eps, int64_t rows, int64_t dim,
               float* y) {
  check(rows >= 0 && dim > 0, "ops::layernorm: expected rows >= 0 and dim > 0, got rows {} dim {}", rows, dim);
  const auto fn = elementwise_kernels(isa).layernorm;
  parallel_rows(rows, dim, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) fn(x + r * dim, w, b, eps, dim, y + r * dim);
  });
}

void softmax(Isa isa, float* x, int64_t n) {
  check_count(n, "softmax");
  elementwise_kernels(isa).softmax(x, n);
}

void gelu_erf(Isa isa, float* x, int64_t n) {
  check_count(n, "gelu_erf");
  const auto fn = elementwise_kernels(isa).gelu_erf;
  parallel_span(n, [&](int64_t b, int64_t e) { fn(x + b, e - b); });
}

void gelu_tanh(Isa isa, float* x, int64_t n) {
  check_count(n, "gelu_tanh");
  const auto fn = elementwise_kernels(isa).gelu_tanh;
  parallel_span(n, [&](int64_t b, int64_t e) { fn(x + b, e - b); });
}

void silu(Isa isa, float* x, int64_t n) {
  check_count(n, "silu");
  const auto fn = elementwise_kernels(isa).silu;
  parallel_span(n, [&](int64_t b, int64_t e) { fn(x + b, e - b); });
}

void swiglu(Isa isa, float* gate, const float* up, int64_t n) {
  check_count(n, "swiglu");
  const auto fn = elementwise_kernels(isa).swiglu;
  parallel_span(n, [&](int64_t b, int64_t e) { fn(gate + b, up + b, e - b); });
}

void add(Isa isa, float* y, const float* x, int64_t n) {
  check_count(n, "add");
  const auto fn = elementwise_kernels(isa).add;
  parallel_span(n, [&](int64_t b, int64_t e) { fn(y + b, x + b, e - b); });
}

void rope(Isa isa, float* x, int64_t n_heads, int64_t head_dim, int64_t pos, float theta, bool interleaved) {
  check(head_dim > 0 && head_dim % 2 == 0, "ops::rope: head_dim must be a positive even number, got {}", head_dim);
  check(n_heads >= 0 && pos >= 0, "ops::rope: expected n_heads >= 0 and pos >= 0, got {} and {}", n_heads, pos);
  check(theta > 0, "ops::rope: rope theta must be > 0, got {} (check rope_theta in config.json)", theta);
  const auto fn = elementwise_kernels(isa).rope;
  struct Angles {
    int64_t pos = -1, head_dim = 0;
    float theta = 0;
    std::vector<float> cos, sin;
  };
  thread_local Angles a;
  if (a.pos != pos || a.head_dim != head_dim || a.theta != theta) {
    a.cos.resize(head_dim / 2);
    a.sin.resize(head_dim / 2);
    rope_cos_sin(pos, head_dim, theta, a.cos.data(), a.sin.data());
    a.pos = pos;
    a.head_dim = head_dim;
    a.theta = theta;
  }
  fn(x, n_heads, head_dim, a.cos.data(), a.sin.data(), interleaved);
}

}  // namespace shrink::kernels
