// 8-lane AVX2 + FMA float vectors for the templated kernels (elementwise_simd.h, attend_simd.h).
// Include only from *_avx2.cc translation units; everything here has internal linkage.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace shrink::kernels {
namespace {

struct VecAvx2 {
  using F = __m256;
  using D = __m256d;
  using M = __m256i;  // lane mask for maskload/maskstore (sign bit set = active)
  using C = __m256;   // comparison result (all-ones lanes)
  static constexpr int kLanes = 8;
  static constexpr int kMaxQueryBlock = 2;  // 16 registers: 2 rows x 4 vectors of accumulators + 4 of V

  static M all() { return _mm256_set1_epi32(-1); }
  static M first(int64_t n) {
    const int k = static_cast<int>(n >= 8 ? 8 : (n < 0 ? 0 : n));
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static F load(const float* p, M m) { return _mm256_maskload_ps(p, m); }
  static F load_or(const float* p, M m, F fill) {
    return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
  }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static void store(float* p, F v, M m) { _mm256_maskstore_ps(p, m, v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fnma(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static F fms(F a, F b, F c) { return _mm256_fmsub_ps(a, b, c); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F abs(F a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static F round(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // p * 2^n for integral n in [-160, 130], in two steps so each power of two is a normal float.
  static F ldexp(F p, F n) {
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1);
    const __m256i n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const F s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const F s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  }
  static C lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static F select(C c, F a, F b) { return _mm256_blendv_ps(b, a, c); }
  static float reduce_add(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float reduce_max(F v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  static D dzero() { return _mm256_setzero_pd(); }
  static D lo_pd(F v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
  static D hi_pd(F v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
  static void add_wide(D& lo, D& hi, F v) {
    lo = _mm256_add_pd(lo, lo_pd(v));
    hi = _mm256_add_pd(hi, hi_pd(v));
  }
  static void sq_wide(D& lo, D& hi, F v) {
    const D a = lo_pd(v), b = hi_pd(v);
    lo = _mm256_fmadd_pd(a, a, lo);
    hi = _mm256_fmadd_pd(b, b, hi);
  }
  static void sub_sq_wide(D& lo, D& hi, F v, double mean) {
    const D m = _mm256_set1_pd(mean);
    const D a = _mm256_sub_pd(lo_pd(v), m), b = _mm256_sub_pd(hi_pd(v), m);
    lo = _mm256_fmadd_pd(a, a, lo);
    hi = _mm256_fmadd_pd(b, b, hi);
  }
  static double reduce_add(D lo, D hi) {
    const D s = _mm256_add_pd(lo, hi);
    __m128d t = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    t = _mm_add_sd(t, _mm_unpackhi_pd(t, t));
    return _mm_cvtsd_f64(t);
  }
  static void neg_odd_cubic_hilo(F x, double c1, double c3, F& hi, F& lo) {
    const D k1 = _mm256_set1_pd(-c1), k3 = _mm256_set1_pd(-c3);
    const D a = lo_pd(x), b = hi_pd(x);
    const D va = _mm256_mul_pd(a, _mm256_fmadd_pd(_mm256_mul_pd(a, a), k3, k1));
    const D vb = _mm256_mul_pd(b, _mm256_fmadd_pd(_mm256_mul_pd(b, b), k3, k1));
    const __m128 ha = _mm256_cvtpd_ps(va), hb = _mm256_cvtpd_ps(vb);
    const __m128 la = _mm256_cvtpd_ps(_mm256_sub_pd(va, _mm256_cvtps_pd(ha)));
    const __m128 lb = _mm256_cvtpd_ps(_mm256_sub_pd(vb, _mm256_cvtps_pd(hb)));
    hi = _mm256_insertf128_ps(_mm256_castps128_ps256(ha), hb, 1);
    lo = _mm256_insertf128_ps(_mm256_castps128_ps256(la), lb, 1);
  }

  // Lane i of the result = sum of the lanes of acc[i], for 8 vectors.
  static F reduce_rows(const F* acc) {
    const F h01 = _mm256_hadd_ps(acc[0], acc[1]), h23 = _mm256_hadd_ps(acc[2], acc[3]);
    const F h45 = _mm256_hadd_ps(acc[4], acc[5]), h67 = _mm256_hadd_ps(acc[6], acc[7]);
    // Each 128-bit half of a and b holds the sums of acc[0..3] (a) and acc[4..7] (b) over that half.
    const F a = _mm256_hadd_ps(h01, h23), b = _mm256_hadd_ps(h45, h67);
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
  }

  static F dup_pairs(const float* c, int64_t n) {
    const int k = static_cast<int>(n >= 4 ? 4 : n);
    const __m128i m = _mm_cmpgt_epi32(_mm_set1_epi32(k), _mm_setr_epi32(0, 1, 2, 3));
    const __m128 h = _mm_maskload_ps(c, m);
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(h), _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
  }
  static F swap_pairs(F v) { return _mm256_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1)); }
  static F alternate(float even, float odd) { return _mm256_setr_ps(even, odd, even, odd, even, odd, even, odd); }
};

}  // namespace
}  // namespace shrink::kernels
