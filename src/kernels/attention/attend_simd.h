// The attend kernel written once over a vec_*.h traits struct V (attention_avx2.cc / attention_avx512.cc
// instantiate it): scores for blocks of V::kLanes keys reduced together, softmax with a double sum, and the
// weighted sum of V rows in register blocks of (query rows x 4 vectors). The INT8 KV cache variant dequantizes
// the call's keys and values into a float tile first (L: the ISA's int8 -> float loader).
#pragma once

#include <shrink/kernels/attention.h>
#include <xmmintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/elementwise/simd_math.h"

namespace shrink::kernels {
namespace {

// acc[i] += k_i[d .. d + W) * qv for the kLanes key rows; rows[i] already offset by d.
template <class V, bool kMasked>
inline void dot_step(typename V::F* acc, typename V::F qv, const float* const* rows, int64_t d, typename V::M m) {
  for (int i = 0; i < V::kLanes; ++i) {
    const typename V::F k = kMasked ? V::load(rows[i] + d, m) : V::load(rows[i] + d);
    acc[i] = V::fma(k, qv, acc[i]);
  }
}

// Same with the rows kv_stride apart from p (full blocks: pointer increments instead of a pointer table).
template <class V, bool kMasked>
inline void dot_step_strided(typename V::F* acc, typename V::F qv, const float* p, int64_t stride, typename V::M m) {
  for (int i = 0; i < V::kLanes; ++i) {
    const typename V::F k = kMasked ? V::load(p, m) : V::load(p);
    acc[i] = V::fma(k, qv, acc[i]);
    p += stride;
  }
}

// Rows this far ahead are prefetched: a head's slice of a long KV cache is a few hundred bytes per row, rows are a
// page or more apart, so the hardware streamers (which work within a page) cannot run ahead on their own.
constexpr int64_t kPrefetchRows = 48;
inline bool worth_prefetching(const AttendArgs& a) {
  return a.stream && a.n_keys > kPrefetchRows;
}

// Prefetches the cache lines of `floats` floats at p.
inline void prefetch_span(const float* p, int64_t floats) {
  for (int64_t d = 0; d < floats; d += 16) _mm_prefetch(reinterpret_cast<const char*>(p + d), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(p + floats - 1), _MM_HINT_T0);
}

// s[qi * ld_s + j] = scale * q_qi . k_j for all j < n_keys (entries up to the next multiple of kLanes are junk).
template <class V>
void attend_scores(const AttendArgs& a, float* s, int64_t ld_s) {
  constexpr int W = V::kLanes;
  using F = typename V::F;
  const int hd = a.head_dim;
  const int64_t hd_full = hd / W * W;
  const auto tail = V::first(hd - hd_full);
  const F scale = V::set1(a.scale);
  const int64_t prefetch_end = worth_prefetching(a) ? a.n_keys : 0;
  // Prime the first rows too: a decode chunk is only a few hundred keys long.
  for (int64_t j = 0; j < kPrefetchRows && j < prefetch_end; ++j) prefetch_span(a.k + j * a.kv_stride, hd);
  for (int64_t j0 = 0; j0 < a.n_keys; j0 += W) {
    const float* base = a.k + j0 * a.kv_stride;
    const bool full = j0 + W <= a.n_keys;
    for (int64_t j = j0 + kPrefetchRows; j < j0 + kPrefetchRows + W && j < prefetch_end; ++j)
      prefetch_span(a.k + j * a.kv_stride, hd);
    const float* rows[W] = {};
    if (!full) {
      // Past the last key, re-read it: the block stays branch-free and never touches memory beyond the keys.
      for (int i = 0; i < W; ++i) rows[i] = a.k + (j0 + i < a.n_keys ? j0 + i : a.n_keys - 1) * a.kv_stride;
    }
    for (int qi = 0; qi < a.n_q; ++qi) {
      const float* q = a.q + qi * a.q_stride;
      F acc[W];
      for (int i = 0; i < W; ++i) acc[i] = V::zero();
      if (full) {
        int64_t d = 0;
        for (; d < hd_full; d += W) dot_step_strided<V, false>(acc, V::load(q + d), base + d, a.kv_stride, tail);
        if (d < hd) dot_step_strided<V, true>(acc, V::load(q + d, tail), base + d, a.kv_stride, tail);
      } else {
        int64_t d = 0;
        for (; d < hd_full; d += W) dot_step<V, false>(acc, V::load(q + d), rows, d, tail);
        if (d < hd) dot_step<V, true>(acc, V::load(q + d, tail), rows, d, tail);
      }
      V::store(s + qi * ld_s + j0, V::mul(V::reduce_rows(acc), scale));
    }
  }
}

// In place over s[0, n): masked keys dropped, e = exp(s - max). Returns the double sum of e; *max_out = max,
// -inf with all of e zeroed when no key is allowed.
template <class V>
double attend_softmax(float* s, int64_t n, const int32_t* mask, float* max_out) {
  constexpr int W = V::kLanes;
  using F = typename V::F;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (mask) {
    for (int64_t j = 0; j < n; ++j)
      if (mask[j] == 0) s[j] = kNegInf;
  }
  const F ninf = V::set1(kNegInf);
  F mv = ninf;
  int64_t j = 0;
  for (; j + W <= n; j += W) mv = V::max(mv, V::load(s + j));
  if (j < n) mv = V::max(mv, V::load_or(s + j, V::first(n - j), ninf));
  const float m = V::reduce_max(mv);
  *max_out = m;
  if (m == kNegInf) {
    for (j = 0; j < n; ++j) s[j] = 0.0f;
    return 0.0;
  }
  const F neg_m = V::set1(-m);
  typename V::D s0 = V::dzero(), s1 = V::dzero();
  for (j = 0; j + W <= n; j += W) {
    const F e = vexp<V>(V::add(V::load(s + j), neg_m));
    V::store(s + j, e);
    V::add_wide(s0, s1, e);
  }
  if (j < n) {
    const auto mk = V::first(n - j);
    const F e = vexp<V>(V::add(V::load_or(s + j, mk, ninf), neg_m));  // masked lanes: exp(-inf) = 0
    V::store(s + j, e, mk);
    V::add_wide(s0, s1, e);
  }
  return V::reduce_add(s0, s1);
}

struct WeightedSumArgs {
  const float* p;  // weights: row h at p + h * ld_p
  int64_t ld_p;
  const float* v;  // value row j at v + j * kv_stride (already offset to the column chunk)
  int64_t kv_stride;
  int64_t n_keys;
  int64_t prefetch_end;    // value rows below this index are prefetched kPrefetchRows ahead
  const float* out_scale;  // per query row
  float* out;              // row h at out + h * out_stride (already offset to the column chunk)
  int64_t out_stride;
};

// out[h][0 .. NV*W) = out_scale[h] * sum_j p[h][j] v_j, for HB query rows; the last vector is masked by `last`.
template <class V, int NV, int HB>
void weighted_sum(const WeightedSumArgs& a, typename V::M last) {
  constexpr int W = V::kLanes;
  using F = typename V::F;
  F acc[HB][NV];
  for (int h = 0; h < HB; ++h)
    for (int n = 0; n < NV; ++n) acc[h][n] = V::zero();
  const float* vr = a.v;
  for (int64_t j = 0; j < kPrefetchRows && j < a.prefetch_end; ++j) prefetch_span(vr + j * a.kv_stride, NV * W);
  for (int64_t j = 0; j < a.n_keys; ++j, vr += a.kv_stride) {
    if (j + kPrefetchRows < a.prefetch_end) prefetch_span(vr + kPrefetchRows * a.kv_stride, NV * W);
    F vv[NV];
    for (int n = 0; n < NV - 1; ++n) vv[n] = V::load(vr + n * W);
    vv[NV - 1] = V::load(vr + (NV - 1) * W, last);
    for (int h = 0; h < HB; ++h) {
      const F w = V::set1(a.p[h * a.ld_p + j]);
      for (int n = 0; n < NV; ++n) acc[h][n] = V::fma(w, vv[n], acc[h][n]);
    }
  }
  for (int h = 0; h < HB; ++h) {
    const F sc = V::set1(a.out_scale[h]);
    float* o = a.out + h * a.out_stride;
    for (int n = 0; n < NV - 1; ++n) V::store(o + n * W, V::mul(acc[h][n], sc));
    V::store(o + (NV - 1) * W, V::mul(acc[h][NV - 1], sc), last);
  }
}

template <class V, int NV>
void weighted_sum_rows(int hb, const WeightedSumArgs& a, typename V::M last) {
  switch (hb) {
    case 1: weighted_sum<V, NV, 1>(a, last); return;
    case 2: weighted_sum<V, NV, 2>(a, last); return;
    default:
      if constexpr (V::kMaxQueryBlock >= 4) {
        if (hb == 3) {
          weighted_sum<V, NV, 3>(a, last);
        } else {
          weighted_sum<V, NV, 4>(a, last);
        }
      }
      return;
  }
}

template <class V>
void attend_simd(const AttendArgs& a) {
  constexpr int W = V::kLanes;
  constexpr int QB = V::kMaxQueryBlock;
  const int64_t ld_s = (a.n_keys + 15) / 16 * 16;
  float* s = a.scratch;
  attend_scores<V>(a, s, ld_s);
  for (int q0 = 0; q0 < a.n_q; q0 += QB) {
    const int hb = a.n_q - q0 < QB ? a.n_q - q0 : QB;
    float out_scale[QB];
    for (int h = 0; h < hb; ++h) {
      float m;
      const double sum = attend_softmax<V>(s + (q0 + h) * ld_s, a.n_keys, a.mask, &m);
      if (a.row_max) {
        a.row_max[q0 + h] = m;
        a.row_sum[q0 + h] = static_cast<float>(sum);
        out_scale[h] = 1.0f;
      } else {
        out_scale[h] = sum > 0 ? static_cast<float>(1.0 / sum) : 0.0f;
      }
    }
    for (int d0 = 0; d0 < a.head_dim; d0 += 4 * W) {
      const int left = a.head_dim - d0;
      const int nv = left >= 4 * W ? 4 : (left + W - 1) / W;
      const auto last = V::first(left - (nv - 1) * W);
      const WeightedSumArgs w{s + q0 * ld_s, ld_s,
                              a.v + d0,      a.kv_stride,
                              a.n_keys,      worth_prefetching(a) ? a.n_keys : 0,
                              out_scale,     a.out + q0 * a.out_stride + d0,
                              a.out_stride};
      switch (nv) {
        case 1: weighted_sum_rows<V, 1>(hb, w, last); break;
        case 2: weighted_sum_rows<V, 2>(hb, w, last); break;
        case 3: weighted_sum_rows<V, 3>(hb, w, last); break;
        default: weighted_sum_rows<V, 4>(hb, w, last); break;
      }
    }
  }
}

// dst[j][0 .. hd) = codes of row j * scales[j] (rows `stride` bytes apart): dequantize_row_s8_ref's float
// product exactly. L provides load(const int8_t*) -> V::F and load_n(const int8_t*, n) for the last n < kLanes.
template <class V, class L>
void dequantize_rows_kv8(const int8_t* src, int64_t stride, const float* scales, int64_t n, int hd, float* dst,
                         bool stream) {
  constexpr int W = V::kLanes;
  const int full = hd / W * W;
  const auto tail = V::first(hd - full);
  const int64_t prefetch_end = stream ? n : 0;
  for (int64_t j = 0; j < kPrefetchRows && j < prefetch_end; ++j)
    _mm_prefetch(reinterpret_cast<const char*>(src + j * stride), _MM_HINT_T0);
  for (int64_t j = 0; j < n; ++j) {
    const int8_t* row = src + j * stride;
    if (j + kPrefetchRows < prefetch_end) {
      const int8_t* ahead = row + kPrefetchRows * stride;
      for (int d = 0; d < hd; d += 64) _mm_prefetch(reinterpret_cast<const char*>(ahead + d), _MM_HINT_T0);
    }
    const typename V::F s = V::set1(scales[j]);
    float* out = dst + j * hd;
    int d = 0;
    for (; d < full; d += W) V::store(out + d, V::mul(L::load(row + d), s));
    if (d < hd) V::store(out + d, V::mul(L::load_n(row + d, hd - d), s), tail);
  }
}

template <class V, class L>
void attend_kv8_simd(const AttendArgs& a) {
  float* ktile = a.scratch + attend_scratch_floats(a.n_q, a.n_keys);
  float* vtile = ktile + a.n_keys * a.head_dim;
  dequantize_rows_kv8<V, L>(a.k8, a.kv_stride, a.k_scale, a.n_keys, a.head_dim, ktile, a.stream);
  dequantize_rows_kv8<V, L>(a.v8, a.kv_stride, a.v_scale, a.n_keys, a.head_dim, vtile, a.stream);
  AttendArgs f = a;
  f.k = ktile;
  f.v = vtile;
  f.kv_stride = a.head_dim;
  f.stream = false;  // the tiles were just written
  attend_simd<V>(f);
}

}  // namespace
}  // namespace shrink::kernels
