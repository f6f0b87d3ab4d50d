// AVX2 INT8 kernels: the u8s8 GEMM with vpmaddubsw (sign trick, see Dot), the W8A16 GEMV, the panel dequantizer of
// the W8A16 GEMM, and A8 activation quantization (also used by the AVX-VNNI set).
#include <shrink/kernels/quant.h>

#include <cmath>
#include <vector>

#include "kernels/int8/int8_ymm_gemm.h"

namespace shrink::kernels::detail {
namespace {

// vpmaddubsw multiplies u8 by s8 and adds pairs into a saturating int16: with a in [0, 255] and w in [-127, 127] a
// pair reaches 64770 and saturates. llama.cpp's sign trick avoids it exactly: with s = a - 128 in [-128, 127],
// |s| * (w * sign(s)) = s * w, and a pair is at most 2 * 128 * 127 = 32512. The tile accumulates sum (a - 128) w;
// the raw sum is recovered with + 128 * wsum (kBias). Needs w != -128, which packing refuses.
// |s| and s are computed once per call for all rows (prepare_sign_rows: per k group, 4 bytes of |s| then 4 of s),
// so the tile broadcasts both from memory instead of spending an xor and an abs per row and k group (the tile is
// bound by vector ALU ops). bench_int8 on the AVX2 VM, two interleaved runs, share of oneDNN's u8s8s32: m128 k3072
// n768 63-66% -> 80%, k768 n768 63% -> 65-74%, k768 n3072 55-61% before and after (noise). oneDNN's AVX2 u8s8s32
// is not exact there (vpmaddubsw saturates without the sign trick; bench_int8 reports that its results differ).
struct DotAvx2 {
  struct A {
    __m256i abs, sgn;
  };
  static constexpr int kMr = 4;  // 8 accumulators + 2 weights + |s|, s, ones and temporaries in 16 ymm
  static constexpr int32_t kBias = 128;
  static constexpr int64_t kAStride = 2 * kInt8Kg;
  static A load(const uint8_t* p) { return {_mm256_set1_epi32(load_u32(p)), _mm256_set1_epi32(load_u32(p + 4))}; }
  static __m256i dot(__m256i acc, const A& a, __m256i b) {
    const __m256i p16 = _mm256_maddubs_epi16(a.abs, _mm256_sign_epi8(b, a.sgn));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
  }
};

// W8A16 GEMV: a ymm holds 2 columns x 4 k-values of a group, multiplied by the same 4 x values in both halves; the
// 4 k-lanes of a column are summed once at the end. k runs in chunks of 64 groups (16 KiB of panel, in L1) so the
// 4 column quarters x m rows reuse the chunk; partial sums live in acc_buf between chunks.
template <int R>
void w8a16_panel(const W8A16Args& g, const int8_t* b, int64_t groups, int64_t pcol, int lo, int hi) {
  constexpr int64_t kChunk = 64;
  alignas(32) float acc_buf[R][kInt8Nr * kInt8Kg];
  for (int64_t g0 = 0; g0 < groups; g0 += kChunk) {
    const int64_t g1 = std::min(groups, g0 + kChunk);
    for (int quarter = 0; quarter < 4; ++quarter) {
      if (hi <= 16 * quarter || lo >= 16 * (quarter + 1)) continue;
      for (int r = 0; r < R; ++r) {
        float* buf = acc_buf[r] + quarter * 64;
        __m256 acc[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) acc[i] = g0 ? _mm256_load_ps(buf + 8 * i) : _mm256_setzero_ps();
        const float* x = g.x + r * g.ldx;
        for (int64_t q = g0; q < g1; ++q) {
          const __m256 xv = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(x + q * kInt8Kg));
          const int8_t* bq = b + q * (kInt8Nr * kInt8Kg) + quarter * 64;
#pragma GCC unroll 8
          for (int i = 0; i < 8; ++i) {
            const __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bq + 8 * i)));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(w), xv, acc[i]);
          }
        }
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) _mm256_store_ps(buf + 8 * i, acc[i]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = lo; c < hi; ++c) {
      const float* s = acc_buf[r] + c * kInt8Kg;
      const int64_t col = pcol + c;
      g.y[r * g.ldy + col] = ((s[0] + s[1]) + (s[2] + s[3])) * g.w_scale[col] + (g.bias ? g.bias[col] : 0.f);
    }
}

template <int R = 4>
void w8a16_panel_rows(int rows, const W8A16Args& g, const int8_t* b, int64_t groups, int64_t pcol, int lo, int hi) {
  if (rows == R) {
    w8a16_panel<R>(g, b, groups, pcol, lo, hi);
  } else if constexpr (R > 1) {
    w8a16_panel_rows<R - 1>(rows, g, b, groups, pcol, lo, hi);
  }
}

// x * inv rounded half away from zero (std::lround), plus zp, clamped to [0, 255]: bit-exact with the reference.
inline __m256i quantize8(__m256 x, __m256 inv, __m256 zp) {
  const __m256 v = _mm256_mul_ps(x, inv);
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 sign = _mm256_and_ps(v, _mm256_set1_ps(-0.f));
  const __m256 d = _mm256_andnot_ps(_mm256_set1_ps(-0.f), _mm256_sub_ps(v, t));
  const __m256 up =
      _mm256_and_ps(_mm256_cmp_ps(d, _mm256_set1_ps(0.5f), _CMP_GE_OQ), _mm256_or_ps(sign, _mm256_set1_ps(1.f)));
  __m256 r = _mm256_add_ps(_mm256_add_ps(t, up), zp);
  r = _mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), _mm256_set1_ps(255.f));
  return _mm256_cvttps_epi32(r);
}

void quant_row(const float* x, int64_t k, float scale, float inv, int32_t zp, uint8_t* q) {
  const __m256 vinv = _mm256_set1_ps(inv), vzp = _mm256_set1_ps(static_cast<float>(zp));
  const __m256i order = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const __m256i v = quantize8(_mm256_loadu_ps(x + i), vinv, vzp);
    const __m256i w16 = _mm256_packs_epi32(v, v);
    const __m256i b8 = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w16, w16), order);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), _mm256_castsi256_si128(b8));
  }
  if (i < k) quantize_row_u8_ref(x + i, k - i, scale, zp, q + i);
  const int64_t kpad = (k + kInt8Kg - 1) / kInt8Kg * kInt8Kg;
  for (int64_t j = k; j < kpad; ++j) q[j] = static_cast<uint8_t>(zp);
}

float abs_max(const float* x, int64_t k) {
  __m256 m = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(_mm256_set1_ps(-0.f), _mm256_loadu_ps(x + i)));
  alignas(32) float t[8];
  _mm256_store_ps(t, m);
  float r = 0.f;
  for (float v : t) r = std::max(r, v);
  for (; i < k; ++i) r = std::max(r, std::fabs(x[i]));
  return r;
}

// Rows of a (u8, kpad per row) as DotAvx2 reads them: per k group of 4, |a - 128| then a - 128 (4 bytes each).
void prepare_sign_rows(const Int8GemmArgs& g, std::vector<uint8_t>& out) {
  const int64_t groups = g.kpad / kInt8Kg;
  out.resize(static_cast<size_t>(g.m * groups * 2 * kInt8Kg));
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  // 8 groups (32 bytes of a) at a time: unpacklo/hi_epi32 of |s| and s interleave them 4 bytes at a time per
  // 128-bit half; the two halves then go out in order.
  for (int64_t r = 0; r < g.m; ++r) {
    const uint8_t* a = g.a + r * g.lda;
    uint8_t* o = out.data() + r * groups * 2 * kInt8Kg;
    int64_t q = 0;
    for (; q + 8 <= groups; q += 8) {
      const __m256i sv = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + q * kInt8Kg)), flip);
      const __m256i av = _mm256_abs_epi8(sv);
      const __m256i lo = _mm256_unpacklo_epi32(av, sv), hi = _mm256_unpackhi_epi32(av, sv);
      uint8_t* dst = o + q * 2 * kInt8Kg;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(lo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16), _mm256_castsi256_si128(hi));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 32), _mm256_extracti128_si256(lo, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 48), _mm256_extracti128_si256(hi, 1));
    }
    for (; q < groups; ++q)
      for (int i = 0; i < kInt8Kg; ++i) {
        const int8_t sv = static_cast<int8_t>(a[q * kInt8Kg + i] ^ 0x80);
        o[q * 2 * kInt8Kg + i] = static_cast<uint8_t>(sv < 0 ? -sv : sv);  // |-128| = 128 fits u8
        o[q * 2 * kInt8Kg + kInt8Kg + i] = static_cast<uint8_t>(sv);
      }
  }
}

}  // namespace

void gemm_u8s8_panels_avx2(const Int8GemmArgs& g, int64_t p0, int64_t p1) {
  thread_local std::vector<uint8_t> rows;
  prepare_sign_rows(g, rows);
  Int8GemmArgs h = g;
  h.a = rows.data();
  h.lda = g.kpad / kInt8Kg * 2 * kInt8Kg;
  ymm_gemm_panels<DotAvx2>(h, p0, p1);
}

// W8A16 decode with x rounded to int8 per 32 values: one row against a whole 64-column panel as in the W8A8
// ymm_row_panel (the panel streams once, contiguously), the integer sums of each 32-value block (8 k groups) scaled
// by the block's d into fp32 accumulators. 4 vector ops per 32 multiply-adds instead of sign-extend, convert and
// FMA per 8: the exact GEMV is compute-bound at 37-54% of a streaming read on this AVX2 VM.
namespace {

void w8a16_q8_row_panel(const W8A16Q8Args& g, int64_t row, const int8_t* panel, int64_t groups, int64_t pcol, int lo,
                        int hi) {
  __m256 f[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) f[j] = _mm256_setzero_ps();
  const uint8_t* a = g.xq + row * g.ldxq;
  const float* d = g.dx + row * g.lddx;
  for (int64_t b0 = 0; b0 < groups; b0 += 8) {
    __m256i acc[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_si256();
    const int64_t b1 = std::min<int64_t>(groups, b0 + 8);
    for (int64_t k = b0; k < b1; ++k) {
      const int8_t* bq = panel + k * (kInt8Nr * kInt8Kg);
      const DotAvx2::A av = DotAvx2::load(a + k * DotAvx2::kAStride);
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j)
        acc[j] = DotAvx2::dot(acc[j], av, _mm256_load_si256(reinterpret_cast<const __m256i*>(bq + 32 * j)));
    }
    const __m256 db = _mm256_set1_ps(d[b0 / 8]);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) f[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[j]), db, f[j]);
  }
  // Vector j holds columns 8j .. 8j + 7 of the panel (quarter j / 2, half j % 2).
  alignas(32) float out[64];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) _mm256_store_ps(out + 8 * j, f[j]);
  float* y = g.y + row * g.ldy + pcol;
  for (int c = lo; c < hi; ++c) y[c] = out[c] * g.w_scale[pcol + c] + (g.bias ? g.bias[pcol + c] : 0.f);
}

}  // namespace

void w8a16_gemv_panels_avx2(const W8A16Args& g, int64_t p0, int64_t p1) {
  const int64_t groups = g.kpad / kInt8Kg;
  for_each_panel(g, p0, p1, [&](const int8_t* panel, int64_t pcol, int lo, int hi) {
    w8a16_panel_rows(static_cast<int>(g.m), g, panel, groups, pcol, lo, hi);
  });
}

void w8a16_gemv_q8_panels_avx2(const W8A16Q8Args& g, int64_t p0, int64_t p1) {
  const int64_t groups = g.kpad / kInt8Kg;
  for_each_panel(g, p0, p1, [&](const int8_t* panel, int64_t pcol, int lo, int hi) {
    for (int64_t r = 0; r < g.m; ++r) w8a16_q8_row_panel(g, r, panel, groups, pcol, lo, hi);
  });
}

void dequant_panel_avx2(const int8_t* panel, int64_t k, const float* scale, int nr, float* out) {
  // Within a 128-bit lane (4 columns x 4 k) gather by k, then across lanes so each k has 8 consecutive columns.
  const __m256i by_k = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9, 13,
                                        2, 6, 10, 14, 3, 7, 11, 15);
  const __m256i lanes = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const int64_t groups = (k + kInt8Kg - 1) / kInt8Kg;
  for (int64_t q = 0; q < groups; ++q) {
    const int8_t* bq = panel + q * (kInt8Nr * kInt8Kg);
    for (int h = 0; h < 8; ++h) {  // columns 8h .. 8h + 7
      const __m256i v = _mm256_permutevar8x32_epi32(
          _mm256_shuffle_epi8(_mm256_load_si256(reinterpret_cast<const __m256i*>(bq + 32 * h)), by_k), lanes);
      const __m256 s = _mm256_loadu_ps(scale + 8 * h);
      const int c = 8 * h;
      float* dst = out + (c / nr) * k * nr + c % nr;
      for (int t = 0; t < kInt8Kg && q * kInt8Kg + t < k; ++t) {
        const __m128i part = t < 2 ? _mm256_castsi256_si128(v) : _mm256_extracti128_si256(v, 1);
        const __m128i bytes = (t & 1) ? _mm_srli_si128(part, 8) : part;
        const __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)), s);
        _mm256_storeu_ps(dst + (q * kInt8Kg + t) * nr, f);
      }
    }
  }
}

void quant_dynamic_avx2(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq, float* scales) {
  for (int64_t i = 0; i < m; ++i) {
    const float amax = abs_max(x + i * ldx, k);
    const float s = amax > 0.f ? amax / 127.f : 1.f;
    scales[i] = s;
    quant_row(x + i * ldx, k, s, 1.f / s, 128, q + i * ldq);
  }
}

void quant_static_avx2(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* q,
                       int64_t ldq) {
  for (int64_t i = 0; i < m; ++i) quant_row(x + i * ldx, k, scale, 1.f / scale, zp, q + i * ldq);
}

}  // namespace shrink::kernels::detail
