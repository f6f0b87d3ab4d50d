// Scalar references of the elementwise family (the published equations in double) and the Scalar-ISA table.
#include <cmath>
#include <limits>

#include "kernels/elementwise/kernel_tables.h"

namespace shrink::kernels {

void rmsnorm_ref(const float* x, const float* w, float eps, int64_t dim, float* y) {
  double ss = 0;
  for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[i]) * x[i];
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
  for (int64_t i = 0; i < dim; ++i) y[i] = static_cast<float>(static_cast<double>(x[i]) * inv * w[i]);
}

void layernorm_ref(const float* x, const float* w, const float* b, float eps, int64_t dim, float* y) {
  double sum = 0;
  for (int64_t i = 0; i < dim; ++i) sum += x[i];
  const double mean = sum / static_cast<double>(dim);
  double var = 0;
  for (int64_t i = 0; i < dim; ++i) var += (x[i] - mean) * (x[i] - mean);
  const double inv = 1.0 / std::sqrt(var / static_cast<double>(dim) + eps);
  for (int64_t i = 0; i < dim; ++i) y[i] = static_cast<float>((x[i] - mean) * inv * w[i] + b[i]);
}

void softmax_ref(float* x, int64_t n) {
  if (n <= 0) return;
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  if (m == -std::numeric_limits<float>::infinity()) {
    for (int64_t i = 0; i < n; ++i) x[i] = 0.0f;
    return;
  }
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - m);
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(std::exp(static_cast<double>(x[i]) - m) / sum);
}

void gelu_erf_ref(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    x[i] = static_cast<float>(0.5 * v * std::erfc(-v * 0.70710678118654752440));
  }
}

void gelu_tanh_ref(float* x, int64_t n) {
  const double k = std::sqrt(2.0 / 3.14159265358979323846);
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    const double u = k * (v + 0.044715 * v * v * v);
    x[i] = static_cast<float>(v / (1.0 + std::exp(-2.0 * u)));
  }
}

void silu_ref(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    x[i] = static_cast<float>(v / (1.0 + std::exp(-v)));
  }
}

void swiglu_ref(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    gate[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[i]);
  }
}

void add_ref(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void exp_ref(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(std::exp(static_cast<double>(x[i])));
}

namespace {

// Same float operations as run.c: freq = 1.0f / powf(10000.0f, head_dim_index / (float)head_size); val = pos * freq.
void rope_angle(int64_t pair, int64_t pos, int64_t head_dim, float theta, float* cos, float* sin) {
  const float freq = 1.0f / std::pow(theta, static_cast<float>(2 * pair) / static_cast<float>(head_dim));
  const float angle = static_cast<float>(pos) * freq;
  *cos = std::cos(angle);
  *sin = std::sin(angle);
}

void rotate_pair(float* a, float* b, double c, double s) {
  const double v0 = *a, v1 = *b;
  *a = static_cast<float>(v0 * c - v1 * s);
  *b = static_cast<float>(v0 * s + v1 * c);
}

void rotate_ref(float* x, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin, bool interleaved) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* xh = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      if (interleaved) {
        rotate_pair(xh + 2 * i, xh + 2 * i + 1, cos[i], sin[i]);
      } else {
        rotate_pair(xh + i, xh + i + half, cos[i], sin[i]);
      }
    }
  }
}

}  // namespace

void rope_cos_sin(int64_t pos, int64_t head_dim, float theta, float* cos, float* sin) {
  for (int64_t i = 0; i < head_dim / 2; ++i) rope_angle(i, pos, head_dim, theta, cos + i, sin + i);
}

void rope_ref(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, float theta, bool interleaved) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    float c, s;
    rope_angle(i, pos, head_dim, theta, &c, &s);
    for (int64_t h = 0; h < n_heads; ++h) {
      float* xh = x + h * head_dim;
      if (interleaved) {
        rotate_pair(xh + 2 * i, xh + 2 * i + 1, c, s);
      } else {
        rotate_pair(xh + i, xh + i + half, c, s);
      }
    }
  }
}

namespace detail {

const ElementwiseKernels kElementwiseScalar = {
    Isa::Scalar,   "f32-elementwise-scalar-ref",
    rmsnorm_ref,   layernorm_ref,
    softmax_ref,   gelu_erf_ref,
    gelu_tanh_ref, silu_ref,
    swiglu_ref,    add_ref,
    exp_ref,       rotate_ref,
};

}  // namespace detail

}  // namespace shrink::kernels
