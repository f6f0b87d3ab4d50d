// The autograd tape (include/shrink/train/autograd.h): graph recording, backward in reverse topological order, and
// the forward + backward of every op. Forward values reuse the inference kernels (ops/ops.h) where one exists so a
// trained model computes what the engine will.
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/kernels/quant.h>
#include <shrink/ops/ops.h>
#include <shrink/train/autograd.h>

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <unordered_set>

namespace shrink::train {

namespace {

thread_local bool g_grad_enabled = true;
std::atomic<int64_t> g_gemm_ns{0};

int64_t last_dim(const Tensor& t) { return t.rank() == 0 ? 1 : t.dim(-1); }
int64_t row_count(const Tensor& t) { return t.rank() == 0 ? 1 : t.numel() / std::max<int64_t>(1, t.dim(-1)); }

bool needs_grad(std::initializer_list<const Var*> in) {
  if (!g_grad_enabled) return false;
  for (const Var* v : in)
    if (v->defined() && v->requires_grad()) return true;
  return false;
}

// A result node; records inputs and the backward only when a gradient can flow.
Var make(Tensor value, const char* op, std::initializer_list<const Var*> in, std::function<void(Node&)> bw) {
  auto n = std::make_shared<Node>();
  n->value = std::move(value);
  n->op = op;
  if (needs_grad(in)) {
    n->requires_grad = true;
    for (const Var* v : in)
      if (v->defined()) n->inputs.push_back(v->ptr());
    n->backward = std::move(bw);
  }
  return Var(n);
}

Tensor like(const Var& v) { return Tensor::empty(DType::F32, v.shape()); }

void same_shape(const Var& a, const Var& b, const char* op) {
  check(a.shape() == b.shape(), "autograd {}: shapes {} and {} differ; expected equal shapes", op,
        shape_str(a.shape()), shape_str(b.shape()));
}

bool wants(const Var& v) { return v.defined() && v.requires_grad(); }

constexpr int64_t kRowGrain = 8;

}  // namespace

float* Node::g() {
  if (!grad.defined() || grad.numel() != value.numel() || grad.raw() == nullptr)
    grad = Tensor::zeros(DType::F32, value.shape());
  return grad.data<float>();
}

float Var::item() const {
  check(numel() == 1, "autograd: item() of a tensor with shape {}; expected one element", shape_str(shape()));
  return data()[0];
}

Var parameter(Tensor value) {
  check(value.dtype() == DType::F32, "autograd parameter: dtype {}; expected F32", dtype_name(value.dtype()));
  auto n = std::make_shared<Node>();
  n->value = std::move(value);
  n->requires_grad = true;
  return Var(n);
}

Var constant(Tensor value) {
  check(value.dtype() == DType::F32, "autograd constant: dtype {}; expected F32", dtype_name(value.dtype()));
  auto n = std::make_shared<Node>();
  n->value = std::move(value);
  return Var(n);
}

NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }
bool grad_enabled() { return g_grad_enabled; }

void backward(const Var& loss) {
  check(loss.numel() == 1, "autograd backward: the loss has shape {}; expected one element", shape_str(loss.shape()));
  if (!loss.requires_grad()) return;
  // Reverse topological order by an iterative DFS (graphs of deep models overflow a recursive one).
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, size_t>> stack{{&loss.node(), 0}};
  seen.insert(&loss.node());
  while (!stack.empty()) {
    auto& [n, i] = stack.back();
    if (i < n->inputs.size()) {
      Node* c = n->inputs[i++].get();
      if (c->requires_grad && seen.insert(c).second) stack.emplace_back(c, 0);
    } else {
      order.push_back(n);
      stack.pop_back();
    }
  }
  loss.node().g()[0] += 1.f;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* n = *it;
    if (n->backward && n->grad.defined() && n->grad.raw()) n->backward(*n);
  }
  // Free intermediate gradients and graph edges: the graph is single use.
  for (Node* n : order)
    if (n->backward) {
      n->grad = Tensor();
      n->inputs.clear();
      n->backward = nullptr;
    }
}

void zero_grad(const std::vector<Var>& params) {
  for (const Var& p : params)
    if (p.defined() && p.node().grad.defined() && p.node().grad.raw())
      std::memset(p.node().grad.data<float>(), 0, p.node().grad.nbytes());
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  dnnl_status_t st = dnnl_success;
  if (omp_in_parallel()) {
    // Already on one thread of a team (attention's per-head products): oneDNN runs sequentially here.
    st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else if (M * N * K < (int64_t{1} << 18)) {
    // Small products: inside a one-thread region oneDNN runs sequentially; waking the pool costs more than the
    // work (training a tiny model is made of these).
#pragma omp parallel num_threads(1)
    st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  check(st == dnnl_success, "oneDNN sgemm failed with status {} for M={} N={} K={}", static_cast<int>(st), M, N, K);
  // Inside a parallel region each thread's GEMM time is its share of the team's wall time.
  const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
  g_gemm_ns.fetch_add(ns / std::max(1, omp_get_num_threads()), std::memory_order_relaxed);
}

double gemm_seconds() { return static_cast<double>(g_gemm_ns.load(std::memory_order_relaxed)) * 1e-9; }

// ---------------------------------------------------------------- linear algebra and elementwise

Var linear(const Var& x, const Var& w, const Var& b) {
  check(w.value().rank() == 2, "autograd linear: weight shape {}; expected [out, in]", shape_str(w.shape()));
  const int64_t out = w.dim(0), in = w.dim(1);
  check(last_dim(x.value()) == in, "autograd linear: input shape {} does not end in {} (weight {})",
        shape_str(x.shape()), in, shape_str(w.shape()));
  if (b.defined())
    check(b.numel() == out, "autograd linear: bias has {} values; expected {}", b.numel(), out);
  const int64_t m = row_count(x.value());
  Shape ys = x.shape();
  ys.back() = out;
  Tensor y = Tensor::empty(DType::F32, ys);
  float* yp = y.data<float>();
  if (b.defined()) {
    for (int64_t i = 0; i < m; ++i) std::memcpy(yp + i * out, b.data(), out * sizeof(float));
  }
  gemm(false, true, m, out, in, 1.f, x.data(), in, w.data(), in, b.defined() ? 1.f : 0.f, yp, out);
  return make(std::move(y), "linear", {&x, &w, &b}, [x, w, b, m, in, out](Node& n) {
    const float* dy = n.grad.data<float>();
    if (wants(x)) gemm(false, false, m, in, out, 1.f, dy, out, w.data(), in, 1.f, x.node().g(), in);
    if (wants(w)) gemm(true, false, out, in, m, 1.f, dy, out, x.data(), in, 1.f, w.node().g(), in);
    if (wants(b)) {
      float* db = b.node().g();
      for (int64_t i = 0; i < m; ++i)
        for (int64_t o = 0; o < out; ++o) db[o] += dy[i * out + o];
    }
  });
}

Var add(const Var& a, const Var& b) {
  same_shape(a, b, "add");
  Tensor y = like(a);
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) y.data<float>()[i] = a.data()[i] + b.data()[i];
  return make(std::move(y), "add", {&a, &b}, [a, b, n](Node& nd) {
    const float* dy = nd.grad.data<float>();
    for (const Var* v : {&a, &b})
      if (wants(*v)) {
        float* g = v->node().g();
        for (int64_t i = 0; i < n; ++i) g[i] += dy[i];
      }
  });
}

Var mul(const Var& a, const Var& b) {
  same_shape(a, b, "mul");
  Tensor y = like(a);
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) y.data<float>()[i] = a.data()[i] * b.data()[i];
  return make(std::move(y), "mul", {&a, &b}, [a, b, n](Node& nd) {
    const float* dy = nd.grad.data<float>();
    if (wants(a)) {
      float* g = a.node().g();
      for (int64_t i = 0; i < n; ++i) g[i] += dy[i] * b.data()[i];
    }
    if (wants(b)) {
      float* g = b.node().g();
      for (int64_t i = 0; i < n; ++i) g[i] += dy[i] * a.data()[i];
    }
  });
}

Var scale(const Var& a, float s) {
  Tensor y = like(a);
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) y.data<float>()[i] = a.data()[i] * s;
  return make(std::move(y), "scale", {&a}, [a, s, n](Node& nd) {
    const float* dy = nd.grad.data<float>();
    float* g = a.node().g();
    for (int64_t i = 0; i < n; ++i) g[i] += dy[i] * s;
  });
}

namespace {

// Elementwise op y = f(x) with dy/dx = df(x, y), threaded over chunks.
template <typename Fwd, typename Deriv>
Var unary(const Var& x, const char* name, Fwd fwd, Deriv deriv) {
  Tensor y = like(x);
  const int64_t n = x.numel();
  std::memcpy(y.data<float>(), x.data(), n * sizeof(float));
  fwd(y.data<float>(), n);
  Var out = make(std::move(y), name, {&x}, nullptr);
  if (out.requires_grad()) {
    Node* self = &out.node();
    out.node().backward = [x, deriv, n, self](Node& nd) {
      const float* dy = nd.grad.data<float>();
      const float* yv = self->value.data<float>();
      float* g = x.node().g();
      parallel_for(n, 4096, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) g[i] += dy[i] * deriv(x.data()[i], yv[i]);
      });
    };
  }
  return out;
}

}  // namespace

Var gelu(const Var& x) {
  return unary(x, "gelu", [](float* p, int64_t n) { ops::gelu_erf(p, n); },
               [](float v, float) {
                 const double c = 1.0 / std::sqrt(2.0);
                 const double cdf = 0.5 * (1.0 + std::erf(v * c));
                 const double pdf = std::exp(-0.5 * double(v) * v) / std::sqrt(2.0 * M_PI);
                 return static_cast<float>(cdf + v * pdf);
               });
}

Var gelu_tanh(const Var& x) {
  return unary(x, "gelu_tanh", [](float* p, int64_t n) { ops::gelu_tanh(p, n); },
               [](float v, float) {
                 const double k = std::sqrt(2.0 / M_PI), u = k * (v + 0.044715 * double(v) * v * v);
                 const double t = std::tanh(u);
                 const double du = k * (1.0 + 3 * 0.044715 * double(v) * v);
                 return static_cast<float>(0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du);
               });
}

Var silu(const Var& x) {
  return unary(x, "silu", [](float* p, int64_t n) { ops::silu(p, n); },
               [](float v, float) {
                 const double s = 1.0 / (1.0 + std::exp(-double(v)));
                 return static_cast<float>(s * (1.0 + v * (1.0 - s)));
               });
}

Var tanh(const Var& x) {
  return unary(x, "tanh", [](float* p, int64_t n) {
                 for (int64_t i = 0; i < n; ++i) p[i] = std::tanh(p[i]);
               },
               [](float, float y) { return 1.f - y * y; });
}

Var relu(const Var& x) {
  return unary(x, "relu", [](float* p, int64_t n) {
                 for (int64_t i = 0; i < n; ++i) p[i] = std::max(p[i], 0.f);
               },
               [](float v, float) { return v > 0.f ? 1.f : 0.f; });
}

// ---------------------------------------------------------------- norms

Var layer_norm(const Var& x, const Var& w, const Var& b, float eps) {
  const int64_t d = last_dim(x.value()), rows = row_count(x.value());
  check(w.numel() == d && (!b.defined() || b.numel() == d), "autograd layer_norm: weight/bias size {}; expected {}",
        w.numel(), d);
  Tensor y = like(x);
  ops::layernorm(x.data(), w.data(), b.defined() ? b.data() : std::vector<float>(d, 0.f).data(), eps, rows, d,
                 y.data<float>());
  return make(std::move(y), "layer_norm", {&x, &w, &b}, [x, w, b, eps, d, rows](Node& n) {
    const float* dy = n.grad.data<float>();
    float* gx = wants(x) ? x.node().g() : nullptr;
    float* gw = wants(w) ? w.node().g() : nullptr;
    float* gb = wants(b) ? b.node().g() : nullptr;
    std::vector<double> dw(gw ? d : 0), dbias(gb ? d : 0);
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x.data() + r * d;
      const float* dyr = dy + r * d;
      double mean = 0, var = 0;
      for (int64_t i = 0; i < d; ++i) mean += xr[i];
      mean /= d;
      for (int64_t i = 0; i < d; ++i) var += (xr[i] - mean) * (xr[i] - mean);
      var /= d;
      const double rstd = 1.0 / std::sqrt(var + eps);
      double s1 = 0, s2 = 0;  // sum(dxhat), sum(dxhat * xhat)
      for (int64_t i = 0; i < d; ++i) {
        const double xh = (xr[i] - mean) * rstd, dxh = double(dyr[i]) * w.data()[i];
        s1 += dxh;
        s2 += dxh * xh;
        if (gw) dw[i] += dyr[i] * xh;
        if (gb) dbias[i] += dyr[i];
      }
      if (gx)
        for (int64_t i = 0; i < d; ++i) {
          const double xh = (xr[i] - mean) * rstd, dxh = double(dyr[i]) * w.data()[i];
          gx[r * d + i] += static_cast<float>(rstd * (dxh - s1 / d - xh * s2 / d));
        }
    }
    for (int64_t i = 0; i < d && gw; ++i) gw[i] += static_cast<float>(dw[i]);
    for (int64_t i = 0; i < d && gb; ++i) gb[i] += static_cast<float>(dbias[i]);
  });
}

Var rms_norm(const Var& x, const Var& w, float eps) {
  const int64_t d = last_dim(x.value()), rows = row_count(x.value());
  check(w.numel() == d, "autograd rms_norm: weight size {}; expected {}", w.numel(), d);
  Tensor y = like(x);
  ops::rmsnorm(x.data(), w.data(), eps, rows, d, y.data<float>());
  return make(std::move(y), "rms_norm", {&x, &w}, [x, w, eps, d, rows](Node& n) {
    const float* dy = n.grad.data<float>();
    float* gx = wants(x) ? x.node().g() : nullptr;
    std::vector<double> dw(d, 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x.data() + r * d;
      const float* dyr = dy + r * d;
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += double(xr[i]) * xr[i];
      const double rstd = 1.0 / std::sqrt(ss / d + eps);
      double dot = 0;  // sum(dy * w * x)
      for (int64_t i = 0; i < d; ++i) {
        dot += double(dyr[i]) * w.data()[i] * xr[i];
        dw[i] += double(dyr[i]) * xr[i] * rstd;
      }
      if (gx)
        for (int64_t i = 0; i < d; ++i)
          gx[r * d + i] +=
              static_cast<float>(rstd * dyr[i] * w.data()[i] - xr[i] * rstd * rstd * rstd * dot / d);
    }
    if (wants(w)) {
      float* gw = w.node().g();
      for (int64_t i = 0; i < d; ++i) gw[i] += static_cast<float>(dw[i]);
    }
  });
}

// ---------------------------------------------------------------- gather / shape

Var embedding(const std::vector<int32_t>& ids, const Var& table) {
  check(table.value().rank() == 2, "autograd embedding: table shape {}; expected [vocab, dim]",
        shape_str(table.shape()));
  const int64_t vocab = table.dim(0), d = table.dim(1), n = static_cast<int64_t>(ids.size());
  Tensor y = Tensor::empty(DType::F32, {n, d});
  for (int64_t i = 0; i < n; ++i) {
    check(ids[i] >= 0 && ids[i] < vocab, "autograd embedding: id {} at position {} is outside the vocabulary [0, {})",
          ids[i], i, vocab);
    std::memcpy(y.data<float>() + i * d, table.data() + int64_t{ids[i]} * d, d * sizeof(float));
  }
  return make(std::move(y), "embedding", {&table}, [ids, table, d, n](Node& nd) {
    const float* dy = nd.grad.data<float>();
    float* g = table.node().g();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j) g[int64_t{ids[i]} * d + j] += dy[i * d + j];
  });
}

Var rows(const Var& x, const std::vector<int64_t>& index) {
  const int64_t d = last_dim(x.value()), r = row_count(x.value()), n = static_cast<int64_t>(index.size());
  Tensor y = Tensor::empty(DType::F32, {n, d});
  for (int64_t i = 0; i < n; ++i) {
    check(index[i] >= 0 && index[i] < r, "autograd rows: index {} outside [0, {})", index[i], r);
    std::memcpy(y.data<float>() + i * d, x.data() + index[i] * d, d * sizeof(float));
  }
  return make(std::move(y), "rows", {&x}, [x, index, d, n](Node& nd) {
    const float* dy = nd.grad.data<float>();
    float* g = x.node().g();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j) g[index[i] * d + j] += dy[i * d + j];
  });
}

Var reshape(const Var& x, Shape shape) {
  check(shape_numel(shape) == x.numel(), "autograd reshape: {} to {} changes the element count",
        shape_str(x.shape()), shape_str(shape));
  Tensor y = x.value().clone().reshape(std::move(shape));
  const int64_t n = x.numel();
  return make(std::move(y), "reshape", {&x}, [x, n](Node& nd) {
    const float* dy = nd.grad.data<float>();
    float* g = x.node().g();
    for (int64_t i = 0; i < n; ++i) g[i] += dy[i];
  });
}

Var prepend_cls_add_pos(const Var& x, const Var& cls, const Var& pos, int64_t batch, int64_t n) {
  const int64_t d = last_dim(x.value());
  check(x.numel() == batch * n * d, "prepend_cls_add_pos: input shape {}; expected [{}, {}]", shape_str(x.shape()),
        batch * n, d);
  check(cls.numel() == d && pos.numel() == (n + 1) * d,
        "prepend_cls_add_pos: cls has {} values (expected {}), pos {} (expected {})", cls.numel(), d, pos.numel(),
        (n + 1) * d);
  Tensor y = Tensor::empty(DType::F32, {batch * (n + 1), d});
  float* yp = y.data<float>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t <= n; ++t) {
      const float* src = t == 0 ? cls.data() : x.data() + (b * n + t - 1) * d;
      for (int64_t j = 0; j < d; ++j) yp[(b * (n + 1) + t) * d + j] = src[j] + pos.data()[t * d + j];
    }
  return make(std::move(y), "prepend_cls_add_pos", {&x, &cls, &pos}, [x, cls, pos, batch, n, d](Node& nd) {
    const float* dy = nd.grad.data<float>();
    float* gx = wants(x) ? x.node().g() : nullptr;
    float* gc = wants(cls) ? cls.node().g() : nullptr;
    float* gp = wants(pos) ? pos.node().g() : nullptr;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t t = 0; t <= n; ++t)
        for (int64_t j = 0; j < d; ++j) {
          const float g = dy[(b * (n + 1) + t) * d + j];
          if (gp) gp[t * d + j] += g;
          if (t == 0) {
            if (gc) gc[j] += g;
          } else if (gx) {
            gx[(b * n + t - 1) * d + j] += g;
          }
        }
  });
}

Var dropout(const Var& x, float p, std::mt19937& rng) {
  check(p >= 0.f && p < 1.f, "dropout probability {}; expected 0 <= p < 1", p);
  if (p == 0.f || !g_grad_enabled) return x;
  const int64_t n = x.numel();
  auto keep = std::make_shared<std::vector<float>>(n);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  const float s = 1.f / (1.f - p);
  Tensor y = like(x);
  for (int64_t i = 0; i < n; ++i) {
    (*keep)[i] = u(rng) >= p ? s : 0.f;
    y.data<float>()[i] = x.data()[i] * (*keep)[i];
  }
  return make(std::move(y), "dropout", {&x}, [x, keep, n](Node& nd) {
    const float* dy = nd.grad.data<float>();
    float* g = x.node().g();
    for (int64_t i = 0; i < n; ++i) g[i] += dy[i] * (*keep)[i];
  });
}

// ---------------------------------------------------------------- attention

Var attention(const Var& q, const Var& k, const Var& v, int64_t batch, int64_t T, int heads, int head_dim,
              const std::vector<int32_t>& mask, bool causal) {
  const int64_t D = int64_t{heads} * head_dim;
  for (const Var* t : {&q, &k, &v})
    check(t->numel() == batch * T * D, "autograd attention: input shape {}; expected [{}, {}]", shape_str(t->shape()),
          batch * T, D);
  check(mask.empty() || static_cast<int64_t>(mask.size()) == batch * T,
        "autograd attention: mask has {} entries; expected batch * T = {}", mask.size(), batch * T);
  const float sc = 1.f / std::sqrt(static_cast<float>(head_dim));
  // Per (batch, head): S = sc Q K^T, masked softmax P (kept for the backward), Y = P V, as small GEMMs over the
  // head's strided columns (scalar dot loops here ran 4x slower than the GEMMs at head_dim 16-64).
  auto P = std::make_shared<std::vector<float>>(static_cast<size_t>(batch * heads * T * T));
  Tensor y = Tensor::empty(DType::F32, {batch * T, D});
  float* yp = y.data<float>();
  // Small problems stay on one thread: a parallel region costs more than they do.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, T * T * head_dim));
  parallel_for(batch * heads, grain, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t b = w / heads, h = w % heads, off = b * T * D + h * head_dim;
      float* pw = P->data() + w * T * T;
      gemm(false, true, T, T, head_dim, sc, q.data() + off, D, k.data() + off, D, 0.f, pw, T);
      for (int64_t i = 0; i < T; ++i) {
        float* p = pw + i * T;
        float mx = -INFINITY;
        for (int64_t j = 0; j < T; ++j) {
          if ((causal && j > i) || (!mask.empty() && mask[b * T + j] == 0)) p[j] = -INFINITY;
          mx = std::max(mx, p[j]);
        }
        float z = 0;
        for (int64_t j = 0; j < T; ++j) {
          p[j] = std::isinf(mx) || std::isinf(p[j]) ? 0.f : std::exp(p[j] - mx);
          z += p[j];
        }
        const float inv = z > 0 ? 1.f / z : 0.f;
        for (int64_t j = 0; j < T; ++j) p[j] *= inv;
      }
      gemm(false, false, T, head_dim, T, 1.f, pw, T, v.data() + off, D, 0.f, yp + off, D);
    }
  });
  return make(std::move(y), "attention", {&q, &k, &v}, [q, k, v, P, batch, T, heads, head_dim, D, sc, grain](Node& n) {
    const float* dy = n.grad.data<float>();
    float* gq = wants(q) ? q.node().g() : nullptr;
    float* gk = wants(k) ? k.node().g() : nullptr;
    float* gv = wants(v) ? v.node().g() : nullptr;
    // Work items (b, h) touch disjoint slices of every gradient: parallel without races.
    parallel_for(batch * heads, grain, [&](int64_t w0, int64_t w1) {
      std::vector<float> ds(static_cast<size_t>(T * T));
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t b = w / heads, h = w % heads, off = b * T * D + h * head_dim;
        const float* pw = P->data() + w * T * T;
        if (gv) gemm(true, false, T, head_dim, T, 1.f, pw, T, dy + off, D, 1.f, gv + off, D);  // dV += P^T dY
        if (!gq && !gk) continue;
        gemm(false, true, T, T, head_dim, 1.f, dy + off, D, v.data() + off, D, 0.f, ds.data(), T);  // dP = dY V^T
        for (int64_t i = 0; i < T; ++i) {  // dS = P * (dP - rowsum(P * dP)) * sc
          const float* p = pw + i * T;
          float* d = ds.data() + i * T;
          float dot = 0;
          for (int64_t j = 0; j < T; ++j) dot += p[j] * d[j];
          for (int64_t j = 0; j < T; ++j) d[j] = p[j] * (d[j] - dot) * sc;
        }
        if (gq) gemm(false, false, T, head_dim, T, 1.f, ds.data(), T, k.data() + off, D, 1.f, gq + off, D);
        if (gk) gemm(true, false, T, head_dim, T, 1.f, ds.data(), T, q.data() + off, D, 1.f, gk + off, D);
      }
    });
  });
}

Var repeat_kv(const Var& x, int kv_heads, int head_dim, int groups) {
  const int64_t in = int64_t{kv_heads} * head_dim, out = in * groups;
  check(groups >= 1 && x.numel() % std::max<int64_t>(1, in) == 0 && last_dim(x.value()) == in,
        "autograd repeat_kv: input shape {}; expected [rows, {}] and groups >= 1 (got {})", shape_str(x.shape()), in,
        groups);
  if (groups == 1) return x;
  const int64_t n = x.numel() / in;
  Tensor y = Tensor::empty(DType::F32, {n, out});
  for (int64_t r = 0; r < n; ++r)
    for (int64_t h = 0; h < int64_t{kv_heads} * groups; ++h)
      std::memcpy(y.data<float>() + r * out + h * head_dim, x.data() + r * in + (h / groups) * head_dim,
                  head_dim * sizeof(float));
  return make(std::move(y), "repeat_kv", {&x}, [x, kv_heads, head_dim, groups, n, in, out](Node& nd) {
    const float* dy = nd.grad.data<float>();
    float* g = x.node().g();
    for (int64_t r = 0; r < n; ++r)
      for (int64_t h = 0; h < int64_t{kv_heads} * groups; ++h)
        for (int d = 0; d < head_dim; ++d) g[r * in + (h / groups) * head_dim + d] += dy[r * out + h * head_dim + d];
  });
}

Var rope(const Var& x, const std::vector<int32_t>& pos, int heads, int head_dim, float theta, bool interleaved) {
  const int64_t D = int64_t{heads} * head_dim, n = static_cast<int64_t>(pos.size());
  check(x.numel() == n * D, "autograd rope: input shape {}; expected [{}, {}]", shape_str(x.shape()), n, D);
  Tensor y = x.value().clone();
  for (int64_t r = 0; r < n; ++r) ops::rope(y.data<float>() + r * D, heads, head_dim, pos[r], theta, interleaved);
  return make(std::move(y), "rope", {&x}, [x, pos, heads, head_dim, theta, interleaved, D, n](Node& nd) {
    // The rotation is orthogonal: the backward rotates the gradient by the negative angle, i.e. applies the
    // transpose. Rotating by -angle equals rotating the sign-flipped partner, done here explicitly.
    std::vector<float> g(nd.grad.data<float>(), nd.grad.data<float>() + n * D);
    const int half = head_dim / 2;
    for (int64_t r = 0; r < n; ++r)
      for (int h = 0; h < heads; ++h) {
        float* row = g.data() + r * D + int64_t{h} * head_dim;
        // Apply R(angle)^T = R(-angle): negate the second coordinate of each pair, rotate, negate back.
        for (int i = 0; i < half; ++i) {
          float& b = interleaved ? row[2 * i + 1] : row[i + half];
          b = -b;
        }
        ops::rope(row, 1, head_dim, pos[r], theta, interleaved);
        for (int i = 0; i < half; ++i) {
          float& b = interleaved ? row[2 * i + 1] : row[i + half];
          b = -b;
        }
      }
    float* gx = x.node().g();
    for (int64_t i = 0; i < n * D; ++i) gx[i] += g[i];
  });
}

// ---------------------------------------------------------------- losses

Var cross_entropy(const Var& logits, const std::vector<int32_t>& labels) {
  const int64_t C = last_dim(logits.value()), n = row_count(logits.value());
  check(static_cast<int64_t>(labels.size()) == n, "cross_entropy: {} labels for {} rows of logits", labels.size(), n);
  auto probs = std::make_shared<std::vector<float>>(n * C);
  double total = 0;
  int64_t counted = 0;
  for (int64_t r = 0; r < n; ++r) {
    const float* l = logits.data() + r * C;
    float* p = probs->data() + r * C;
    std::memcpy(p, l, C * sizeof(float));
    ops::softmax(p, C);
    if (labels[r] < 0) continue;
    check(labels[r] < C, "cross_entropy: label {} at row {}; expected 0..{}", labels[r], r, C - 1);
    float mx = l[0];
    for (int64_t c = 1; c < C; ++c) mx = std::max(mx, l[c]);
    double z = 0;
    for (int64_t c = 0; c < C; ++c) z += std::exp(double(l[c]) - mx);
    total += std::log(z) + mx - l[labels[r]];
    ++counted;
  }
  Tensor y = Tensor::empty(DType::F32, {1});
  y.data<float>()[0] = counted ? static_cast<float>(total / counted) : 0.f;
  return make(std::move(y), "cross_entropy", {&logits}, [logits, labels, probs, n, C, counted](Node& nd) {
    if (!counted) return;
    const float s = nd.grad.data<float>()[0] / static_cast<float>(counted);
    float* g = logits.node().g();
    for (int64_t r = 0; r < n; ++r) {
      if (labels[r] < 0) continue;
      for (int64_t c = 0; c < C; ++c) g[r * C + c] += s * ((*probs)[r * C + c] - (c == labels[r] ? 1.f : 0.f));
    }
  });
}

Var kl_div(const Var& student_logits, const Tensor& teacher_logits, float temperature) {
  check(teacher_logits.shape() == student_logits.shape(), "kl_div: teacher logits {} and student logits {} differ",
        shape_str(teacher_logits.shape()), shape_str(student_logits.shape()));
  check(temperature > 0.f, "kl_div: temperature {}; expected > 0", temperature);
  const int64_t C = last_dim(student_logits.value()), n = row_count(student_logits.value());
  auto ps = std::make_shared<std::vector<float>>(n * C), pt = std::make_shared<std::vector<float>>(n * C);
  double total = 0;
  const Tensor tl = teacher_logits.to_f32();
  for (int64_t r = 0; r < n; ++r) {
    float* s = ps->data() + r * C;
    float* t = pt->data() + r * C;
    for (int64_t c = 0; c < C; ++c) {
      s[c] = student_logits.data()[r * C + c] / temperature;
      t[c] = tl.data<float>()[r * C + c] / temperature;
    }
    // log-softmax in double for the loss value
    auto logz = [C](const float* x) {
      float mx = x[0];
      for (int64_t c = 1; c < C; ++c) mx = std::max(mx, x[c]);
      double z = 0;
      for (int64_t c = 0; c < C; ++c) z += std::exp(double(x[c]) - mx);
      return std::log(z) + mx;
    };
    const double zs = logz(s), zt = logz(t);
    for (int64_t c = 0; c < C; ++c) {
      const double lt = t[c] - zt, ls = s[c] - zs;
      total += std::exp(lt) * (lt - ls);
    }
    ops::softmax(s, C);
    ops::softmax(t, C);
  }
  Tensor y = Tensor::empty(DType::F32, {1});
  y.data<float>()[0] = static_cast<float>(total / std::max<int64_t>(1, n));
  return make(std::move(y), "kl_div", {&student_logits}, [student_logits, ps, pt, n, C, temperature](Node& nd) {
    const float s = nd.grad.data<float>()[0] / static_cast<float>(std::max<int64_t>(1, n)) / temperature;
    float* g = student_logits.node().g();
    for (int64_t i = 0; i < n * C; ++i) g[i] += s * ((*ps)[i] - (*pt)[i]);
  });
}

Var mse(const Var& a, const Tensor& target) {
  check(target.numel() == a.numel(), "mse: target has {} values; expected {}", target.numel(), a.numel());
  const Tensor t = target.to_f32();
  const int64_t n = a.numel();
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(a.data()[i]) - t.data<float>()[i];
    total += d * d;
  }
  Tensor y = Tensor::empty(DType::F32, {1});
  y.data<float>()[0] = static_cast<float>(total / std::max<int64_t>(1, n));
  return make(std::move(y), "mse", {&a}, [a, t, n](Node& nd) {
    const float s = 2.f * nd.grad.data<float>()[0] / static_cast<float>(std::max<int64_t>(1, n));
    float* g = a.node().g();
    for (int64_t i = 0; i < n; ++i) g[i] += s * (a.data()[i] - t.data<float>()[i]);
  });
}

Var sum(const Var& x) {
  double s = 0;
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) s += x.data()[i];
  Tensor y = Tensor::empty(DType::F32, {1});
  y.data<float>()[0] = static_cast<float>(s);
  return make(std::move(y), "sum", {&x}, [x, n](Node& nd) {
    const float d = nd.grad.data<float>()[0];
    float* g = x.node().g();
    for (int64_t i = 0; i < n; ++i) g[i] += d;
  });
}

Var mean(const Var& x) { return scale(sum(x), 1.f / static_cast<float>(std::max<int64_t>(1, x.numel()))); }

// ---------------------------------------------------------------- fake quantization

namespace {

// Straight-through: gradient passes unchanged where keep[i] != 0.
Var ste(const Var& x, Tensor y, std::shared_ptr<std::vector<uint8_t>> keep, const char* name) {
  const int64_t n = x.numel();
  return make(std::move(y), name, {&x}, [x, keep, n](Node& nd) {
    const float* dy = nd.grad.data<float>();
    float* g = x.node().g();
    for (int64_t i = 0; i < n; ++i)
      if ((*keep)[i]) g[i] += dy[i];
  });
}

}  // namespace

Var fake_quant_w8(const Var& w) {
  check(w.value().rank() == 2, "fake_quant_w8: weight shape {}; expected [out, in]", shape_str(w.shape()));
  const int64_t out = w.dim(0), in = w.dim(1);
  Tensor y = like(w);
  std::vector<int8_t> q(in);
  for (int64_t r = 0; r < out; ++r) {
    float s;
    kernels::quantize_row_s8_ref(w.data() + r * in, in, q.data(), &s);
    kernels::dequantize_row_s8_ref(q.data(), s, in, y.data<float>() + r * in);
  }
  // The range is the row's max: nothing is clipped, every gradient passes.
  return ste(w, std::move(y), std::make_shared<std::vector<uint8_t>>(out * in, 1), "fake_quant_w8");
}

Var fake_quant_w4(const Var& w, int group, bool asym) {
  check(w.value().rank() == 2, "fake_quant_w4: weight shape {}; expected [out, in]", shape_str(w.shape()));
  const int64_t out = w.dim(0), in = w.dim(1), groups = kernels::w4_groups(in, group);
  Tensor y = like(w);
  std::vector<uint8_t> codes(kernels::w4_row_bytes(in, group)), zps(groups);
  std::vector<uint16_t> scales(groups);
  // Symmetric W4 clips the positive end at +7 steps: values off by more than half a step were clipped and get no
  // gradient (the straight-through estimator of clipped values).
  auto keep = std::make_shared<std::vector<uint8_t>>(out * in, 1);
  for (int64_t r = 0; r < out; ++r) {
    const float* wr = w.data() + r * in;
    float* yr = y.data<float>() + r * in;
    kernels::quantize_row_w4_ref(wr, in, group, asym, codes.data(), scales.data(), zps.data());
    kernels::dequantize_row_w4_ref(codes.data(), scales.data(), asym ? zps.data() : nullptr, in, group, yr);
    for (int64_t i = 0; i < in; ++i)
      (*keep)[r * in + i] = std::fabs(yr[i] - wr[i]) <= 0.5f * std::fabs(f16_to_f32(scales[i / group])) * 1.0001f;
  }
  return ste(w, std::move(y), keep, "fake_quant_w4");
}

Var fake_quant_a8(const Var& x, const Var& lo, const Var& hi) {
  check(lo.numel() == 1 && hi.numel() == 1, "fake_quant_a8: lo and hi must be one-element parameters");
  float s;
  int32_t zp;
  kernels::choose_u8_params(lo.item(), hi.item(), &s, &zp);
  const int64_t n = x.numel();
  Tensor y = like(x);
  auto state = std::make_shared<std::vector<int8_t>>(n);  // -1 below range, 0 inside, +1 above
  for (int64_t i = 0; i < n; ++i) {
    const float v = x.data()[i];
    const long q = std::lround(v / s) + zp;
    const long qc = std::clamp(q, 0L, 255L);
    (*state)[i] = q < 0 ? -1 : q > 255 ? 1 : 0;
    y.data<float>()[i] = static_cast<float>(qc - zp) * s;
  }
  Var out = make(std::move(y), "fake_quant_a8", {&x, &lo, &hi}, nullptr);
  if (out.requires_grad()) {
    Node* self = &out.node();
    out.node().backward = [x, lo, hi, state, n, s, zp, self](Node& nd) {
      const float* dy = nd.grad.data<float>();
      float* gx = wants(x) ? x.node().g() : nullptr;
      // LSQ-style range gradients: a clipped value moves with its bound; inside the range the rounding error
      // (y - x) changes linearly with the step s = (hi - lo) / 255, split between lo and hi.
      double glo = 0, ghi = 0;
      for (int64_t i = 0; i < n; ++i) {
        const int8_t st = (*state)[i];
        if (st == 0) {
          if (gx) gx[i] += dy[i];
          const double r = (self->value.data<float>()[i] - x.data()[i]) / s;  // in steps
          glo += dy[i] * (-r / 255.0);
          ghi += dy[i] * (r / 255.0);
        } else if (st < 0) {
          glo += dy[i];
        } else {
          ghi += dy[i];
        }
      }
      (void)zp;
      if (wants(lo)) lo.node().g()[0] += static_cast<float>(glo);
      if (wants(hi)) hi.node().g()[0] += static_cast<float>(ghi);
    };
  }
  return out;
}

}  // namespace shrink::train
