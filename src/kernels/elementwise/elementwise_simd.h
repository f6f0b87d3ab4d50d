// The elementwise family written once over a vec_*.h traits struct V; elementwise_avx2.cc and
// elementwise_avx512.cc instantiate it. Reductions accumulate in double like the references.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/elementwise/simd_math.h"

namespace shrink::kernels {
namespace {

// Applies y[i] = fn(x[i]) for a unary vector function, tail masked.
template <class V, class Fn>
void map_inplace(float* x, int64_t n, Fn fn) {
  constexpr int W = V::kLanes;
  int64_t i = 0;
  for (; i + W <= n; i += W) V::store(x + i, fn(V::load(x + i)));
  if (i < n) {
    const auto m = V::first(n - i);
    V::store(x + i, fn(V::load(x + i, m)), m);
  }
}

template <class V>
void rmsnorm_simd(const float* x, const float* w, float eps, int64_t dim, float* y) {
  constexpr int W = V::kLanes;
  using D = typename V::D;
  D a0 = V::dzero(), a1 = V::dzero(), b0 = V::dzero(), b1 = V::dzero();
  int64_t i = 0;
  for (; i + 2 * W <= dim; i += 2 * W) {
    V::sq_wide(a0, a1, V::load(x + i));
    V::sq_wide(b0, b1, V::load(x + i + W));
  }
  for (; i < dim; i += W) V::sq_wide(a0, a1, V::load(x + i, V::first(dim - i)));
  const double ss = V::reduce_add(a0, a1) + V::reduce_add(b0, b1);
  const auto inv = V::set1(static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps)));
  // w * (x * inv), the order of llama2.c's run.c.
  for (i = 0; i + W <= dim; i += W) V::store(y + i, V::mul(V::load(w + i), V::mul(V::load(x + i), inv)));
  if (i < dim) {
    const auto m = V::first(dim - i);
    V::store(y + i, V::mul(V::load(w + i, m), V::mul(V::load(x + i, m), inv)), m);
  }
}

template <class V>
void layernorm_simd(const float* x, const float* w, const float* b, float eps, int64_t dim, float* y) {
  constexpr int W = V::kLanes;
  using D = typename V::D;
  D s0 = V::dzero(), s1 = V::dzero();
  int64_t i = 0;
  for (; i + W <= dim; i += W) V::add_wide(s0, s1, V::load(x + i));
  if (i < dim) V::add_wide(s0, s1, V::load(x + i, V::first(dim - i)));
  const double mean = V::reduce_add(s0, s1) / static_cast<double>(dim);
  D v0 = V::dzero(), v1 = V::dzero();
  for (i = 0; i + W <= dim; i += W) V::sub_sq_wide(v0, v1, V::load(x + i), mean);
  double var = V::reduce_add(v0, v1);
  // Masked-out lanes load as 0 and contributed (0 - mean)^2 each: take them back out.
  if (i < dim) {
    D t0 = V::dzero(), t1 = V::dzero();
    V::sub_sq_wide(t0, t1, V::load(x + i, V::first(dim - i)), mean);
    var += V::reduce_add(t0, t1) - static_cast<double>(i + W - dim) * mean * mean;
  }
  var = var > 0 ? var : 0;
  const auto inv = V::set1(static_cast<float>(1.0 / std::sqrt(var / static_cast<double>(dim) + eps)));
  // x - mean as (x - mean_hi) - mean_lo: a float mean would cost |mean| * 2^-24 on every output.
  const float mean_hi = static_cast<float>(mean);
  const auto mh = V::set1(mean_hi), ml = V::set1(static_cast<float>(mean - mean_hi));
  for (i = 0; i + W <= dim; i += W) {
    const auto d = V::mul(V::sub(V::sub(V::load(x + i), mh), ml), inv);
    V::store(y + i, V::fma(d, V::load(w + i), V::load(b + i)));
  }
  if (i < dim) {
    const auto m = V::first(dim - i);
    const auto d = V::mul(V::sub(V::sub(V::load(x + i, m), mh), ml), inv);
    V::store(y + i, V::fma(d, V::load(w + i, m), V::load(b + i, m)), m);
  }
}

template <class V>
void softmax_simd(float* x, int64_t n) {
  constexpr int W = V::kLanes;
  using F = typename V::F;
  if (n <= 0) return;
  const F ninf = V::set1(-std::numeric_limits<float>::infinity());
  F mv = ninf;
  int64_t i = 0;
  for (; i + W <= n; i += W) mv = V::max(mv, V::load(x + i));
  if (i < n) mv = V::max(mv, V::load_or(x + i, V::first(n - i), ninf));
  const float m = V::reduce_max(mv);
  if (m == -std::numeric_limits<float>::infinity()) {
    for (i = 0; i < n; ++i) x[i] = 0.0f;
    return;
  }
  const F neg_m = V::set1(-m), floor = V::set1(m - 110.0f);
  // e = exp(x - m) with x - m carried exactly as s + err (TwoSum), so small probabilities keep their digits.
  auto exp_shifted = [&](F v) {
    const F a = V::max(floor, v);
    const F s = V::add(a, neg_m);
    const F bb = V::sub(s, a);
    const F err = V::add(V::sub(a, V::sub(s, bb)), V::sub(neg_m, bb));
    return exp_hilo<V>(s, err);
  };
  typename V::D s0 = V::dzero(), s1 = V::dzero();
  for (i = 0; i + W <= n; i += W) {
    const F e = exp_shifted(V::load(x + i));
    V::store(x + i, e);
    V::add_wide(s0, s1, e);
  }
  if (i < n) {
    const auto mk = V::first(n - i);
    const F e = exp_shifted(V::load_or(x + i, mk, ninf));  // masked lanes give exp(-110) = 0
    V::store(x + i, e, mk);
    V::add_wide(s0, s1, e);
  }
  const F inv = V::set1(static_cast<float>(1.0 / V::reduce_add(s0, s1)));
  map_inplace<V>(x, n, [&](F v) { return V::mul(v, inv); });
}

template <class V>
void gelu_erf_simd(float* x, int64_t n) {
  map_inplace<V>(x, n, [](typename V::F v) { return vgelu_erf<V>(v); });
}

template <class V>
void gelu_tanh_simd(float* x, int64_t n) {
  map_inplace<V>(x, n, [](typename V::F v) { return vgelu_tanh<V>(v); });
}

template <class V>
void silu_simd(float* x, int64_t n) {
  map_inplace<V>(x, n, [](typename V::F v) { return vsilu<V>(v); });
}

template <class V>
void swiglu_simd(float* gate, const float* up, int64_t n) {
  constexpr int W = V::kLanes;
  int64_t i = 0;
  for (; i + W <= n; i += W) V::store(gate + i, V::mul(vsilu<V>(V::load(gate + i)), V::load(up + i)));
  if (i < n) {
    const auto m = V::first(n - i);
    V::store(gate + i, V::mul(vsilu<V>(V::load(gate + i, m)), V::load(up + i, m)), m);
  }
}

template <class V>
void add_simd(float* y, const float* x, int64_t n) {
  constexpr int W = V::kLanes;
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    V::store(y + i, V::add(V::load(y + i), V::load(x + i)));
    V::store(y + i + W, V::add(V::load(y + i + W), V::load(x + i + W)));
  }
  for (; i < n; i += W) {
    const auto m = V::first(n - i);
    V::store(y + i, V::add(V::load(y + i, m), V::load(x + i, m)), m);
  }
}

template <class V>
void exp_simd(const float* x, float* y, int64_t n) {
  constexpr int W = V::kLanes;
  int64_t i = 0;
  for (; i + W <= n; i += W) V::store(y + i, vexp<V>(V::load(x + i)));
  if (i < n) {
    const auto m = V::first(n - i);
    V::store(y + i, vexp<V>(V::load(x + i, m)), m);
  }
}

template <class V>
void rope_simd(float* x, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin, bool interleaved) {
  constexpr int W = V::kLanes;
  using F = typename V::F;
  const int64_t half = head_dim / 2;
  if (interleaved) {
    // Lanes (2i, 2i+1) hold one pair: y = x * (c, c) + swap(x) * (-s, s).
    const F sign = V::alternate(-1.0f, 1.0f);
    for (int64_t d = 0; d < 2 * half; d += W) {
      const auto m = V::first(2 * half - d);
      const F c = V::dup_pairs(cos + d / 2, half - d / 2);
      const F s = V::mul(V::dup_pairs(sin + d / 2, half - d / 2), sign);
      for (int64_t h = 0; h < n_heads; ++h) {
        float* p = x + h * head_dim + d;
        const F v = V::load(p, m);
        V::store(p, V::fma(v, c, V::mul(V::swap_pairs(v), s)), m);
      }
    }
    return;
  }
  for (int64_t i = 0; i < half; i += W) {
    const auto m = V::first(half - i);
    const F c = V::load(cos + i, m), s = V::load(sin + i, m);
    for (int64_t h = 0; h < n_heads; ++h) {
      float* a = x + h * head_dim + i;
      float* b = a + half;
      const F va = V::load(a, m), vb = V::load(b, m);
      V::store(a, V::fnma(vb, s, V::mul(va, c)), m);
      V::store(b, V::fma(va, s, V::mul(vb, c)), m);
    }
  }
}

}  // namespace
}  // namespace shrink::kernels
