// Elementwise, row-wise and attention ops the models use. Each dispatches at run time to the scalar, AVX2 or
// AVX-512 kernels of active_isa() (src/kernels/elementwise, src/kernels/attention; see their README.md); all accept
// any length (tails are masked). Bad sizes throw shrink::Error. The SIMD kernels match the double-precision
// references of include/shrink/kernels/elementwise.h to a few float ulp (bounds in tests/unit/test_ops.cc).
#pragma once

#include <cstdint>
#include <initializer_list>

namespace shrink {
class Linear;
}

namespace shrink::ops {

// y = x / sqrt(mean(x^2) + eps) * w, per row of `dim` (llama2.c: eps added to the mean of squares; the mean of
// squares is accumulated in double). y may alias x.
void rmsnorm(const float* x, const float* w, float eps, int64_t rows, int64_t dim, float* y);
// y = (x - mean) / sqrt(var + eps) * w + b, per row, biased variance (divide by dim). y may alias x.
void layernorm(const float* x, const float* w, const float* b, float eps, int64_t rows, int64_t dim, float* y);
// In place, numerically stable (max subtracted); -inf entries give 0, a row of only -inf gives zeros.
void softmax(float* x, int64_t n);
void gelu_erf(float* x, int64_t n);   // 0.5 x (1 + erf(x / sqrt 2))        BERT "gelu"
void gelu_tanh(float* x, int64_t n);  // 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))  GPT-2 "gelu_new"
void silu(float* x, int64_t n);       // x * sigmoid(x)
// gate[i] = silu(gate[i]) * up[i]  (SwiGLU)
void swiglu(float* gate, const float* up, int64_t n);
void add(float* y, const float* x, int64_t n);  // y += x

// Rotary embedding in place for `n_heads` heads of `head_dim` (even) at position `pos`.
// interleaved: rotate pairs (x[2i], x[2i+1]) (llama2.c); otherwise (x[i], x[i + d/2]) (Hugging Face).
// Frequency of pair i: theta^(-2i/head_dim); the angle pos * freq is formed in float exactly as run.c and
// Hugging Face form it (kernels::rope_cos_sin).
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, float theta, bool interleaved);

// Causal attention of n_tokens new queries at positions start_pos.. against a KV cache that already
// holds keys/values for positions 0 .. start_pos + n_tokens - 1.
// q: [n_tokens][n_heads * head_dim]; k_cache, v_cache: [pos][n_kv_heads * head_dim] with row stride
// kv_stride floats; query head h reads kv head h / (n_heads / n_kv_heads). out like q.
// Threaded on the process pool; decode (<= 4 tokens) splits long contexts over threads by key chunks.
void attention_causal(const float* q, int64_t n_tokens, int64_t start_pos, const float* k_cache, const float* v_cache,
                      int64_t kv_stride, int n_heads, int n_kv_heads, int head_dim, float scale, float* out);

// The same over an INT8 KV cache (format KV8 of kernels/quant.h): codes [pos][kv_stride] int8, the fp32 scale of
// position p and KV head g at k_scales[g * scale_stride + p] (v likewise). Keys and values are dequantized exactly as
// dequantize_row_s8_ref does, tile by tile in cache, and attended as by attention_causal.
void attention_causal_kv8(const float* q, int64_t n_tokens, int64_t start_pos, const int8_t* k_cache,
                          const int8_t* v_cache, int64_t kv_stride, const float* k_scales, const float* v_scales,
                          int64_t scale_stride, int n_heads, int n_kv_heads, int head_dim, float scale, float* out);
// Quantizes n rows of n_heads * head_dim values (row i at x + i * ld) into the KV8 layout above at positions
// pos .. pos+n-1 (quantize_row_s8_ref per (position, head)).
void quantize_kv8(const float* x, int64_t ld, int64_t n, int n_heads, int head_dim, int64_t pos, int8_t* codes,
                  int64_t kv_stride, float* scales, int64_t scale_stride);

// Several linears over the same input x ([m][in], one in_features for all): y_i = x W_i^T + b_i, y_i [m][out_i].
struct LinearJob {
  const Linear* linear;
  float* y;
};
// Decode-sized calls (m <= 4) run every job in ONE parallel region when all support Linear::forward_rows: output
// features in units of 64 are handed out to the threads dynamically, so q/k/v (or gate/up) cost one fork/join and a
// thread slowed by another process does not hold the others at a barrier. Otherwise (or for layers that cannot)
// each job runs its own forward(). Results do not depend on the thread count or schedule.
void linear_fused(const float* x, int64_t m, std::initializer_list<LinearJob> jobs);
// Off: linear_fused runs every job through its own forward() (tests and benchmarks compare the two paths). On by
// default; process-wide.
void set_linear_fusion(bool on);
bool linear_fusion();

// Bidirectional attention over one sequence of T tokens with key padding mask (mask[j] == 0: ignore
// key j; mask may be null: no padding). q, k, v rows have stride ld floats (e.g. a fused QKV buffer); out is
// [T][n_heads*head_dim]. If every key is masked the output is all zeros (not NaN, and not Hugging Face's uniform
// average over padding).
void attention_masked(const float* q, const float* k, const float* v, int64_t ld, int64_t T, const int32_t* mask,
                      int n_heads, int head_dim, float scale, float* out);

}  // namespace shrink::ops
