// Reverse-mode automatic differentiation over fp32 tensors: a value node per op result that remembers its inputs
// and how to push its gradient back to them. The ops are the ones the models use (linear, attention with masks,
// norms, activations, embedding, dropout, losses, fake quantization with a straight-through estimator); every
// backward is checked against finite differences in tests/unit/test_autograd.cc.
#pragma once

#include <shrink/core/tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace shrink::train {

struct Node {
  Tensor value;  // F32, contiguous
  Tensor grad;   // F32, same shape; allocated (zeroed) when first needed
  bool requires_grad = false;
  const char* op = "leaf";
  std::vector<std::shared_ptr<Node>> inputs;
  std::function<void(Node&)> backward;  // reads this->grad, accumulates into inputs' grads

  float* g();  // the gradient buffer, allocated and zeroed on first use
};

// A handle to a node. Copies share the node.
class Var {
 public:
  Var() = default;
  explicit Var(std::shared_ptr<Node> n) : n_(std::move(n)) {}
  bool defined() const { return n_ != nullptr; }
  Node& node() const { return *n_; }
  const std::shared_ptr<Node>& ptr() const { return n_; }
  const Tensor& value() const { return n_->value; }
  const Shape& shape() const { return n_->value.shape(); }
  int64_t dim(int i) const { return n_->value.dim(i); }
  int64_t numel() const { return n_->value.numel(); }
  const float* data() const { return n_->value.data<float>(); }
  float* mutable_data() { return n_->value.data<float>(); }
  bool requires_grad() const { return n_->requires_grad; }
  // Gradient after backward(); undefined tensor when nothing flowed here.
  const Tensor& grad() const { return n_->grad; }
  float item() const;  // the value of a one-element tensor

 private:
  std::shared_ptr<Node> n_;
};

Var parameter(Tensor value);  // trainable leaf (takes the tensor; F32 required)
Var constant(Tensor value);   // leaf without gradient
// Runs backward from a one-element loss (seed 1). Gradients accumulate into leaves across calls (gradient
// accumulation); zero them with zero_grad.
void backward(const Var& loss);
void zero_grad(const std::vector<Var>& params);
// While alive, ops record no graph (evaluation, teacher forward passes).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};
bool grad_enabled();

// ---- ops. Shapes: x is [rows, cols] (any leading shape is flattened into rows unless said otherwise). ----
Var linear(const Var& x, const Var& w, const Var& b);  // y[m,out] = x[m,in] w[out,in]^T + b[out] (b may be empty)
Var add(const Var& a, const Var& b);                   // same shape
Var mul(const Var& a, const Var& b);                   // same shape, elementwise
Var scale(const Var& a, float s);
Var gelu(const Var& x);       // erf form (BERT)
Var gelu_tanh(const Var& x);  // tanh form (GPT-2 gelu_new)
Var silu(const Var& x);
Var tanh(const Var& x);
Var relu(const Var& x);
Var layer_norm(const Var& x, const Var& w, const Var& b, float eps);  // over the last dim
Var rms_norm(const Var& x, const Var& w, float eps);
Var embedding(const std::vector<int32_t>& ids, const Var& table);  // [n, dim] rows of table [vocab, dim]
Var rows(const Var& x, const std::vector<int64_t>& index);          // gather rows: [index.size(), cols]
Var reshape(const Var& x, Shape shape);
// ViT embeddings: x is [batch * n, d] patch embeddings; returns [batch * (n + 1), d] with the learned cls row
// ([d] values) first in every sequence and pos ([(n + 1), d]) added to every position.
Var prepend_cls_add_pos(const Var& x, const Var& cls, const Var& pos, int64_t batch, int64_t n);
// Inverted dropout: keeps each value with probability 1 - p, scaled by 1 / (1 - p). Identity when p == 0.
Var dropout(const Var& x, float p, std::mt19937& rng);
// Multi-head attention over `batch` sequences of T tokens: q, k, v are [batch * T, heads * head_dim].
// mask: batch * T ints (0 = padding key, ignored) or empty; causal: key j <= query i only. RoPE is applied by the
// caller. Fully masked rows give zeros.
Var attention(const Var& q, const Var& k, const Var& v, int64_t batch, int64_t T, int heads, int head_dim,
              const std::vector<int32_t>& mask, bool causal);
// Grouped-query attention: x is [rows, kv_heads * head_dim]; returns [rows, kv_heads * groups * head_dim] where
// query head h reads KV head h / groups (Hugging Face repeat_kv). groups == 1 returns x itself.
Var repeat_kv(const Var& x, int kv_heads, int head_dim, int groups);
// Rotary embedding of heads of head_dim at positions pos[row] (rows = tokens), HF or interleaved layout.
Var rope(const Var& x, const std::vector<int32_t>& pos, int heads, int head_dim, float theta, bool interleaved);

// ---- losses (one-element results) ----
// Mean cross-entropy of logits [n, C] against labels (label < 0: ignored, not counted).
Var cross_entropy(const Var& logits, const std::vector<int32_t>& labels);
// Mean over rows of KL(softmax(teacher / T) || softmax(student / T)); teacher is a constant. Multiply by T^2
// yourself (Hinton) when mixing with a hard loss.
Var kl_div(const Var& student_logits, const Tensor& teacher_logits, float temperature);
Var mse(const Var& a, const Tensor& target);  // mean squared error against a constant
Var sum(const Var& x);
Var mean(const Var& x);

// ---- fake quantization (straight-through estimator: gradient passes where the value was not clipped) ----
// W8 symmetric per output row (rows of w), range from the current weights (observed).
Var fake_quant_w8(const Var& w);
// W4 group-wise along rows (groups of `group` values), symmetric or asymmetric, like kernels/quant.h's W4.
Var fake_quant_w4(const Var& w, int group, bool asym);
// A8 per tensor with a learnable range (LSQ-style): x quantized to uint8 over [lo, hi] (two one-element params);
// gradients reach lo/hi through the clipped values and the rounding step.
Var fake_quant_a8(const Var& x, const Var& lo, const Var& hi);

// C = alpha * op(A) op(B) + beta * C, row-major; op = transpose when ta/tb (oneDNN sgemm, threaded).
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc);
// Wall seconds spent in gemm() by this process so far (training reports the GEMM share of its time).
double gemm_seconds();

}  // namespace shrink::train
