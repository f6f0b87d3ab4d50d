// Elementwise and row-wise ops the models use. Each dispatches at run time to a scalar, AVX2 or
// AVX-512 kernel in src/kernels/ (see src/kernels/README.md); all accept any length (tails).
#pragma once

#include <cstdint>

namespace shrink::ops {

// y = x / sqrt(mean(x^2) + eps) * w, per row of `dim`. y may alias x.
void rmsnorm(const float* x, const float* w, float eps, int64_t rows, int64_t dim, float* y);
// y = (x - mean) / sqrt(var + eps) * w + b, per row. y may alias x.
void layernorm(const float* x, const float* w, const float* b, float eps, int64_t rows, int64_t dim, float* y);
// In place, numerically stable (max subtracted).
void softmax(float* x, int64_t n);
void gelu_erf(float* x, int64_t n);   // 0.5 x (1 + erf(x / sqrt 2))        BERT "gelu"
void gelu_tanh(float* x, int64_t n);  // 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))  GPT-2 "gelu_new"
void silu(float* x, int64_t n);
// gate[i] = silu(gate[i]) * up[i]  (SwiGLU)
void swiglu(float* gate, const float* up, int64_t n);
void add(float* y, const float* x, int64_t n);  // y += x

// Rotary embedding in place for `n_heads` heads of `head_dim` at position `pos`.
// interleaved: rotate pairs (x[2i], x[2i+1]) (llama2.c); otherwise (x[i], x[i + d/2]) (Hugging Face).
// Frequency of pair i: theta^(-2i/head_dim).
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, float theta, bool interleaved);

// Causal attention of n_tokens new queries at positions start_pos.. against a KV cache that already
// holds keys/values for positions 0 .. start_pos + n_tokens - 1.
// q: [n_tokens][n_heads * head_dim]; k_cache, v_cache: [pos][n_kv_heads * head_dim] with row stride
// kv_stride floats; query head h reads kv head h / (n_heads / n_kv_heads). out like q.
void attention_causal(const float* q, int64_t n_tokens, int64_t start_pos, const float* k_cache, const float* v_cache,
                      int64_t kv_stride, int n_heads, int n_kv_heads, int head_dim, float scale, float* out);

// Bidirectional attention over one sequence of T tokens with key padding mask (mask[j] == 0: ignore
// key j). q, k, v rows have stride ld floats (e.g. a fused QKV buffer); out is [T][n_heads*head_dim].
void attention_masked(const float* q, const float* k, const float* v, int64_t ld, int64_t T, const int32_t* mask,
                      int n_heads, int head_dim, float scale, float* out);

}  // namespace shrink::ops
