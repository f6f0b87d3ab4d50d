// shrink::ops: the elementwise, row and attention ops the models call, dispatched to the kernels of
// active_isa() (SHRINK_ISA caps it). Contracts are in include/shrink/ops/ops.h.
#include <shrink/core/cpu.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/kernels/attention.h>
#include <shrink/kernels/elementwise.h>
#include <shrink/kernels/quant.h>
#include <shrink/ops/linear.h>
#include <shrink/ops/ops.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <exception>

namespace shrink::ops {

void rmsnorm(const float* x, const float* w, float eps, int64_t rows, int64_t dim, float* y) {
  kernels::rmsnorm(active_isa(), x, w, eps, rows, dim, y);
}

void layernorm(const float* x, const float* w, const float* b, float eps, int64_t rows, int64_t dim, float* y) {
  kernels::layernorm(active_isa(), x, w, b, eps, rows, dim, y);
}

void softmax(float* x, int64_t n) {
  kernels::softmax(active_isa(), x, n);
}
void gelu_erf(float* x, int64_t n) {
  kernels::gelu_erf(active_isa(), x, n);
}
void gelu_tanh(float* x, int64_t n) {
  kernels::gelu_tanh(active_isa(), x, n);
}
void silu(float* x, int64_t n) {
  kernels::silu(active_isa(), x, n);
}
void swiglu(float* gate, const float* up, int64_t n) {
  kernels::swiglu(active_isa(), gate, up, n);
}
void add(float* y, const float* x, int64_t n) {
  kernels::add(active_isa(), y, x, n);
}

void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, float theta, bool interleaved) {
  kernels::rope(active_isa(), x, n_heads, head_dim, pos, theta, interleaved);
}

void attention_causal(const float* q, int64_t n_tokens, int64_t start_pos, const float* k_cache, const float* v_cache,
                      int64_t kv_stride, int n_heads, int n_kv_heads, int head_dim, float scale, float* out) {
  kernels::attention_causal(active_isa(), q, n_tokens, start_pos, k_cache, v_cache, kv_stride, n_heads, n_kv_heads,
                            head_dim, scale, out);
}

void attention_causal_kv8(const float* q, int64_t n_tokens, int64_t start_pos, const int8_t* k_cache,
                          const int8_t* v_cache, int64_t kv_stride, const float* k_scales, const float* v_scales,
                          int64_t scale_stride, int n_heads, int n_kv_heads, int head_dim, float scale, float* out) {
  kernels::attention_causal_kv8(active_isa(), q, n_tokens, start_pos, k_cache, v_cache, kv_stride, k_scales, v_scales,
                                scale_stride, n_heads, n_kv_heads, head_dim, scale, out);
}

void quantize_kv8(const float* x, int64_t ld, int64_t n, int n_heads, int head_dim, int64_t pos, int8_t* codes,
                  int64_t kv_stride, float* scales, int64_t scale_stride) {
  check(n >= 0 && pos >= 0 && n_heads > 0 && head_dim > 0 && kv_stride >= int64_t{n_heads} * head_dim &&
            scale_stride >= pos + n,
        "ops::quantize_kv8: {} rows at position {} of {} heads x {} do not fit a cache with row stride {} and scale "
        "stride {}",
        n, pos, n_heads, head_dim, kv_stride, scale_stride);
  for (int64_t t = 0; t < n; ++t)
    for (int g = 0; g < n_heads; ++g)
      kernels::quantize_row_s8_ref(x + t * ld + int64_t{g} * head_dim, head_dim,
                                   codes + (pos + t) * kv_stride + int64_t{g} * head_dim,
                                   scales + g * scale_stride + pos + t);
}

namespace {

// Output features per work unit of linear_fused: a multiple of every packed panel width (16, 64), so a dense
// layer's units are whole panels.
constexpr int64_t kFusedUnit = 64;
constexpr size_t kMaxFusedJobs = 8;
// Below this many multiply-adds in all jobs together the region costs more than it saves.
constexpr int64_t kFusedSerialMacs = 1 << 16;
std::atomic<bool> g_linear_fusion{true};

}  // namespace

void set_linear_fusion(bool on) {
  g_linear_fusion = on;
}
bool linear_fusion() {
  return g_linear_fusion;
}

void linear_fused(const float* x, int64_t m, std::initializer_list<LinearJob> jobs) {
  check(jobs.size() <= kMaxFusedJobs, "ops::linear_fused: {} linears in one call; at most {}", jobs.size(),
        kMaxFusedJobs);
  const LinearJob* js = jobs.begin();
  const size_t n = jobs.size();
  if (n == 0) return;
  bool rows = m >= 1 && m <= 4 && g_linear_fusion;
  int64_t macs = 0;
  std::array<int64_t, kMaxFusedJobs + 1> first{};  // first unit of job i
  for (size_t i = 0; i < n; ++i) {
    check(js[i].linear && js[i].y, "ops::linear_fused: job {} has no linear or no output", i);
    check(js[i].linear->in_features() == js[0].linear->in_features(),
          "ops::linear_fused: job {} reads {} features but job 0 reads {}; fused linears share one input", i,
          js[i].linear->in_features(), js[0].linear->in_features());
    // An empty range asks only whether the layer can run row slices.
    if (rows && !js[i].linear->forward_rows(x, m, js[i].y, 0, 0)) rows = false;
    const int64_t out = js[i].linear->out_features();
    macs += m * out * js[i].linear->in_features();
    first[i + 1] = first[i] + (out + kFusedUnit - 1) / kFusedUnit;
  }
  if (!rows) {
    for (size_t i = 0; i < n; ++i) js[i].linear->forward(x, m, js[i].y);
    return;
  }
  const int64_t units = first[n];
  std::array<std::atomic<bool>, kMaxFusedJobs> failed{};
  auto run_unit = [&](int64_t u) {
    size_t i = 0;
    while (u >= first[i + 1]) ++i;
    const Linear& l = *js[i].linear;
    const int64_t o0 = (u - first[i]) * kFusedUnit, o1 = std::min(o0 + kFusedUnit, l.out_features());
    if (!l.forward_rows(x, m, js[i].y, o0, o1)) failed[i] = true;
  };
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), units));
  if (threads <= 1 || macs < kFusedSerialMacs || omp_in_parallel()) {
    for (int64_t u = 0; u < units; ++u) run_unit(u);
  } else {
    std::atomic<int64_t> next{0};
    std::exception_ptr error;
    std::atomic<bool> has_error{false};
#pragma omp parallel num_threads(threads)
    {
      try {
        for (int64_t u = next.fetch_add(1, std::memory_order_relaxed); u < units && !has_error;
             u = next.fetch_add(1, std::memory_order_relaxed))
          run_unit(u);
      } catch (...) {
#pragma omp critical(shrink_linear_fused_error)
        if (!has_error.exchange(true)) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
  }
  // A layer that declined a slice after accepting the probe computes its whole output the ordinary way.
  for (size_t i = 0; i < n; ++i)
    if (failed[i]) js[i].linear->forward(x, m, js[i].y);
}

void attention_masked(const float* q, const float* k, const float* v, int64_t ld, int64_t T, const int32_t* mask,
                      int n_heads, int head_dim, float scale, float* out) {
  kernels::attention_masked(active_isa(), q, k, v, ld, T, mask, n_heads, head_dim, scale, out);
}

}  // namespace shrink::ops
