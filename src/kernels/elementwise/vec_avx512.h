// 16-lane AVX-512 float vectors for the templated kernels (elementwise_simd.h, attend_simd.h).
// Include only from *_avx512.cc translation units; everything here has internal linkage.
#pragma once

// GCC 12 reports its own `__m512 __Y = __Y` (_mm512_undefined_ps) inside the AVX-512 intrinsics as maybe
// uninitialised once they are inlined; the warning is about the header, not this code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

namespace shrink::kernels {
namespace {

struct VecAvx512 {
  using F = __m512;
  using D = __m512d;    // half a float vector widened to double
  using M = __mmask16;  // lane mask for loads/stores
  using C = __mmask16;  // comparison result
  static constexpr int kLanes = 16;
  static constexpr int kMaxQueryBlock = 4;  // attention: query rows sharing one register block of V

  static M all() { return 0xFFFF; }
  static M first(int64_t n) { return n >= 16 ? M(0xFFFF) : M((1u << (n < 0 ? 0 : n)) - 1); }
  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static F load(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static F load_or(const float* p, M m, F fill) { return _mm512_mask_loadu_ps(fill, m, p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static void store(float* p, F v, M m) { _mm512_mask_storeu_ps(p, m, v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }    // a * b + c
  static F fnma(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a * b
  static F fms(F a, F b, F c) { return _mm512_fmsub_ps(a, b, c); }    // a * b - c
  // Return b when either is NaN, so max(limit, x) keeps a NaN x.
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static F abs(F a) { return _mm512_abs_ps(a); }
  static F round(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static F ldexp(F p, F n) { return _mm512_scalef_ps(p, n); }  // p * 2^n; over/underflow handled by the hardware
  static C lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static F select(C c, F a, F b) { return _mm512_mask_blend_ps(c, b, a); }  // c ? a : b
  static float reduce_add(F v) { return _mm512_reduce_add_ps(v); }
  static float reduce_max(F v) { return _mm512_reduce_max_ps(v); }

  static D dzero() { return _mm512_setzero_pd(); }
  static D lo_pd(F v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
  static D hi_pd(F v) { return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))); }
  static void add_wide(D& lo, D& hi, F v) {
    lo = _mm512_add_pd(lo, lo_pd(v));
    hi = _mm512_add_pd(hi, hi_pd(v));
  }
  // acc += v^2 (a float squared is exact in double).
  static void sq_wide(D& lo, D& hi, F v) {
    const D a = lo_pd(v), b = hi_pd(v);
    lo = _mm512_fmadd_pd(a, a, lo);
    hi = _mm512_fmadd_pd(b, b, hi);
  }
  // acc += (v - mean)^2 in double.
  static void sub_sq_wide(D& lo, D& hi, F v, double mean) {
    const D m = _mm512_set1_pd(mean);
    const D a = _mm512_sub_pd(lo_pd(v), m), b = _mm512_sub_pd(hi_pd(v), m);
    lo = _mm512_fmadd_pd(a, a, lo);
    hi = _mm512_fmadd_pd(b, b, hi);
  }
  static double reduce_add(D lo, D hi) { return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi)); }
  // -(c1 x + c3 x^3) evaluated in double and split into float hi + lo (keeps exp's argument exact to ~2^-48).
  static void neg_odd_cubic_hilo(F x, double c1, double c3, F& hi, F& lo) {
    const D k1 = _mm512_set1_pd(-c1), k3 = _mm512_set1_pd(-c3);
    const D a = lo_pd(x), b = hi_pd(x);
    const D va = _mm512_mul_pd(a, _mm512_fmadd_pd(_mm512_mul_pd(a, a), k3, k1));
    const D vb = _mm512_mul_pd(b, _mm512_fmadd_pd(_mm512_mul_pd(b, b), k3, k1));
    const __m256 ha = _mm512_cvtpd_ps(va), hb = _mm512_cvtpd_ps(vb);
    const __m256 la = _mm512_cvtpd_ps(_mm512_sub_pd(va, _mm512_cvtps_pd(ha)));
    const __m256 lb = _mm512_cvtpd_ps(_mm512_sub_pd(vb, _mm512_cvtps_pd(hb)));
    hi = _mm512_insertf32x8(_mm512_castps256_ps512(ha), hb, 1);
    lo = _mm512_insertf32x8(_mm512_castps256_ps512(la), lb, 1);
  }

  // Lane i of the result = sum of the lanes of acc[i], for 16 vectors: 15 adds and 30 shuffles instead of
  // 16 horizontal sums.
  static F reduce_rows(const F* acc) {
    F l1[8], l2[4], l3[2];
    for (int i = 0; i < 8; ++i) {
      const F a = acc[2 * i], b = acc[2 * i + 1];
      l1[i] = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    for (int i = 0; i < 4; ++i) {
      const F a = l1[2 * i], b = l1[2 * i + 1];
      l2[i] = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    // l2[i]: 128-bit block b holds sums over block b of acc[4i .. 4i+3].
    for (int i = 0; i < 2; ++i) {
      const F a = l2[2 * i], b = l2[2 * i + 1];
      l3[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    return _mm512_add_ps(_mm512_shuffle_f32x4(l3[0], l3[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(l3[0], l3[1], _MM_SHUFFLE(3, 1, 3, 1)));
  }

  // RoPE, interleaved layout: lanes (2i, 2i+1) <- c[i] for the first n pairs (n <= 8).
  static F dup_pairs(const float* c, int64_t n) {
    const __m256 h = _mm256_maskz_loadu_ps(static_cast<__mmask8>(n >= 8 ? 0xFF : (1u << n) - 1), c);
    const __m512i idx = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    return _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(h));
  }
  static F swap_pairs(F v) { return _mm512_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1)); }
  static F alternate(float even, float odd) {
    return _mm512_setr_ps(even, odd, even, odd, even, odd, even, odd, even, odd, even, odd, even, odd, even, odd);
  }
};

}  // namespace
}  // namespace shrink::kernels
