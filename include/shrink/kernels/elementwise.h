// Elementwise and row kernels (RMSNorm, LayerNorm, softmax, GELU, SiLU, SwiGLU, add, exp, RoPE): the scalar
// references, one kernel table per ISA, and the threaded drivers that ops/ops.cc calls with active_isa().
#pragma once

#include <shrink/core/cpu.h>

#include <cstdint>

namespace shrink::kernels {

// ---- Scalar references: the published equations evaluated in double, rounded once to float. ----
// They are also the Scalar-ISA kernels. Sums (mean of squares, mean, variance, softmax denominator) are
// accumulated in double.

// y = x / sqrt(mean(x^2) + eps) * w (llama2.c: eps added to the mean of squares). y may alias x.
void rmsnorm_ref(const float* x, const float* w, float eps, int64_t dim, float* y);
// y = (x - mean) / sqrt(var + eps) * w + b with the biased variance (divide by dim). y may alias x.
void layernorm_ref(const float* x, const float* w, const float* b, float eps, int64_t dim, float* y);
// In place: exp(x - max) / sum. A row whose entries are all -inf becomes zeros (no 0/0).
void softmax_ref(float* x, int64_t n);
// 0.5 x (1 + erf(x / sqrt 2)), evaluated as 0.5 x erfc(-x / sqrt 2) so negative tails keep their digits.
void gelu_erf_ref(float* x, int64_t n);
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), evaluated as x / (1 + exp(-2u)) (the same function:
// 0.5 (1 + tanh u) = 1 / (1 + exp(-2u))) so negative tails do not cancel.
void gelu_tanh_ref(float* x, int64_t n);
void silu_ref(float* x, int64_t n);                        // x / (1 + exp(-x))
void swiglu_ref(float* gate, const float* up, int64_t n);  // gate = silu(gate) * up
void add_ref(float* y, const float* x, int64_t n);         // y += x
void exp_ref(const float* x, float* y, int64_t n);         // y = exp(x)

// RoPE angles exactly as llama2.c run.c and Hugging Face compute them, in float:
// freq_i = 1 / powf(theta, 2i / head_dim), angle_i = float(pos) * freq_i, cos/sin = cosf/sinf(angle_i),
// for the head_dim / 2 pairs i. (Computing the angle in double would differ from both by up to pos * 2^-24 rad.)
void rope_cos_sin(int64_t pos, int64_t head_dim, float theta, float* cos, float* sin);
// Rotates pair i of each head by angle_i: interleaved pairs (x[2i], x[2i+1]) (llama2.c) or (x[i], x[i + d/2])
// (Hugging Face), with the rotation itself in double. head_dim must be even.
void rope_ref(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, float theta, bool interleaved);

// ---- One table per ISA; every kernel accepts any length (tails are masked, never read past the end). ----
struct ElementwiseKernels {
  Isa isa;
  const char* name;                                                                   // e.g. "f32-elementwise-avx512"
  void (*rmsnorm)(const float* x, const float* w, float eps, int64_t dim, float* y);  // one row
  void (*layernorm)(const float* x, const float* w, const float* b, float eps, int64_t dim, float* y);
  void (*softmax)(float* x, int64_t n);
  void (*gelu_erf)(float* x, int64_t n);
  void (*gelu_tanh)(float* x, int64_t n);
  void (*silu)(float* x, int64_t n);
  void (*swiglu)(float* gate, const float* up, int64_t n);
  void (*add)(float* y, const float* x, int64_t n);
  void (*exp)(const float* x, float* y, int64_t n);
  // Rotates n_heads heads in place by the head_dim / 2 angles whose cos/sin rope_cos_sin produced.
  void (*rope)(float* x, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin, bool interleaved);
};

// Throws shrink::Error when this CPU cannot run `isa`.
const ElementwiseKernels& elementwise_kernels(Isa isa);

// ---- Threaded drivers (the process pool); argument checks throw shrink::Error. ----
void rmsnorm(Isa isa, const float* x, const float* w, float eps, int64_t rows, int64_t dim, float* y);
void layernorm(Isa isa, const float* x, const float* w, const float* b, float eps, int64_t rows, int64_t dim, float* y);
void softmax(Isa isa, float* x, int64_t n);
void gelu_erf(Isa isa, float* x, int64_t n);
void gelu_tanh(Isa isa, float* x, int64_t n);
void silu(Isa isa, float* x, int64_t n);
void swiglu(Isa isa, float* gate, const float* up, int64_t n);
void add(Isa isa, float* y, const float* x, int64_t n);
// The cos/sin of the last (pos, head_dim, theta) are kept per thread, so rotating q and then k of one
// position computes them once.
void rope(Isa isa, float* x, int64_t n_heads, int64_t head_dim, int64_t pos, float theta, bool interleaved);

}  // namespace shrink::kernels
