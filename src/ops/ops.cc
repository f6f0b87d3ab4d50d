// shrink::ops: the elementwise, row and attention ops the models call, dispatched to the kernels of
// active_isa() (SHRINK_ISA caps it). Contracts are in include/shrink/ops/ops.h.
#include <shrink/core/cpu.h>
#include <shrink/kernels/attention.h>
#include <shrink/kernels/elementwise.h>
#include <shrink/ops/ops.h>

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

void attention_masked(const float* q, const float* k, const float* v, int64_t ld, int64_t T, const int32_t* mask,
                      int n_heads, int head_dim, float scale, float* out) {
  kernels::attention_masked(active_isa(), q, k, v, ld, T, mask, n_heads, head_dim, scale, out);
}

}  // namespace shrink::ops
