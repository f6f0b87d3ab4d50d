// The 256-bit u8s8 GEMM tile shared by the AVX2 and AVX-VNNI TUs (each includes it once with its own Dot policy;
// everything here has internal linkage so code built with different -m flags never merges). A tile is R rows x 16
// columns (a quarter of a 64-column panel: 64 bytes of each 256-byte group), so the panel layout is the AVX-512 one.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/int8/int8_kernels.h"

namespace shrink::kernels::detail {
namespace {

inline int32_t load_u32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The epilogue of one row of a tile: columns [lo, hi) of the 16 at `col`, from the two accumulators of the row.
template <class Dot>
// acc0/acc1 come by value: an address taken here would keep a tile's accumulators in memory through its k loop.
inline void ymm_store_row(const Int8GemmArgs& g, int64_t row, int64_t col, int lo, int hi, __m256i acc0, __m256i acc1) {
  const bool full = lo == 0 && hi == 16;
  const __m256i acc[2] = {acc0, acc1};
  __m256i v[2];
#pragma GCC unroll 2
  for (int j = 0; j < 2; ++j) {
    const __m256i ws = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.wsum + col + 8 * j));
    // raw = acc + kBias wsum; y mode wants raw - zp wsum.
    const int32_t coef = g.c ? Dot::kBias : Dot::kBias - g.zp;
    v[j] = coef ? _mm256_add_epi32(acc[j], _mm256_mullo_epi32(_mm256_set1_epi32(coef), ws)) : acc[j];
  }
  if (g.c) {
    int32_t* dst = g.c + row * g.ldc + col;
    if (full) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v[0]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8), v[1]);
    } else {
      alignas(32) int32_t out[16];
      _mm256_store_si256(reinterpret_cast<__m256i*>(out), v[0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(out + 8), v[1]);
      for (int c = lo; c < hi; ++c) dst[c] = out[c];
    }
    return;
  }
  const __m256 s = _mm256_set1_ps(g.a_scale[row * g.a_scale_stride]);
  float* dst = g.y + row * g.ldy + col;
  // A partial tile takes its bias through a zero-padded copy so that full and partial tiles run the same vector
  // code: a column slice (forward_rows) then equals the full call bit for bit, whatever the compiler contracts.
  alignas(32) float f[16], btmp[16] = {};
  if (g.bias && !full)
    for (int c = lo; c < hi; ++c) btmp[c] = g.bias[col + c];
#pragma GCC unroll 2
  for (int j = 0; j < 2; ++j) {
    const __m256 ws = _mm256_mul_ps(s, _mm256_loadu_ps(g.w_scale + col + 8 * j));
    __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(v[j]), ws);
    if (g.bias) y = _mm256_add_ps(y, full ? _mm256_loadu_ps(g.bias + col + 8 * j) : _mm256_load_ps(btmp + 8 * j));
    if (full)
      _mm256_storeu_ps(dst + 8 * j, y);
    else
      _mm256_store_ps(f + 8 * j, y);
  }
  if (!full)
    for (int c = lo; c < hi; ++c) dst[c] = f[c];
}

// Dot provides kMr, kBias, kAStride and load(p) -> A (the activations of one k group of a row, at p + q * kAStride
// in the row the tile gets), and dot(acc, A, b): acc += per-lane dot of 4 activations with 4 s8 (b).
// The accumulators hold sum (a - kBias) w; the raw sum a w is acc + kBias * wsum.
template <class Dot, int R>
void ymm_tile(const Int8GemmArgs& g, int64_t row, const int8_t* b, int64_t groups, int64_t col, int lo, int hi) {
  __m256i acc[R][2];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const uint8_t* a = g.a + row * g.lda;
  for (int64_t q = 0; q < groups; ++q) {
    const int8_t* bq = b + q * (kInt8Nr * kInt8Kg);
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bq));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bq + 32));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const typename Dot::A av = Dot::load(a + r * g.lda + q * Dot::kAStride);
      acc[r][0] = Dot::dot(acc[r][0], av, b0);
      acc[r][1] = Dot::dot(acc[r][1], av, b1);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) ymm_store_row<Dot>(g, row + r, col, lo, hi, acc[r][0], acc[r][1]);
}

template <class Dot, int R = Dot::kMr>
inline void ymm_tile_rows(int rows, const Int8GemmArgs& g, int64_t row, const int8_t* b, int64_t groups, int64_t col,
                          int lo, int hi) {
  if (rows == R) {
    ymm_tile<Dot, R>(g, row, b, groups, col, lo, hi);
  } else if constexpr (R > 1) {
    ymm_tile_rows<Dot, R - 1>(rows, g, row, b, groups, col, lo, hi);
  }
}

// One row (decode) against a whole 64-column panel: the four 16-column quarters of each k group together, so the
// panel streams once, contiguously, instead of once per quarter with a 256-byte stride.
template <class Dot>
void ymm_row_panel(const Int8GemmArgs& g, int64_t row, const int8_t* panel, int64_t groups, int64_t col, int lo,
                   int hi) {
  __m256i acc[4][2];
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) acc[q][0] = acc[q][1] = _mm256_setzero_si256();
  const uint8_t* a = g.a + row * g.lda;
  for (int64_t k = 0; k < groups; ++k) {
    const int8_t* bq = panel + k * (kInt8Nr * kInt8Kg);
    const typename Dot::A av = Dot::load(a + k * Dot::kAStride);
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      acc[q][0] = Dot::dot(acc[q][0], av, _mm256_load_si256(reinterpret_cast<const __m256i*>(bq + 64 * q)));
      acc[q][1] = Dot::dot(acc[q][1], av, _mm256_load_si256(reinterpret_cast<const __m256i*>(bq + 64 * q + 32)));
    }
  }
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const int qlo = std::clamp(lo - 16 * q, 0, 16), qhi = std::clamp(hi - 16 * q, 0, 16);
    if (qhi > qlo) ymm_store_row<Dot>(g, row, col + 16 * q, qlo, qhi, acc[q][0], acc[q][1]);
  }
}

template <class Dot>
void ymm_gemm_panels(const Int8GemmArgs& g, int64_t p0, int64_t p1) {
  constexpr int64_t kMc = 128;
  const int64_t groups = g.kpad / kInt8Kg;
  if (g.m == 1) {
    for_each_panel(g, p0, p1, [&](const int8_t* panel, int64_t pcol, int lo, int hi) {
      ymm_row_panel<Dot>(g, 0, panel, groups, pcol, lo, hi);
    });
    return;
  }
  for (int64_t ic = 0; ic < g.m; ic += kMc) {
    const int64_t mc = std::min(kMc, g.m - ic);
    for (int64_t p = p0; p < p1; ++p) {
      int lo, hi;
      panel_cols(p, g.n, g.col0, g.col1, &lo, &hi);
      for (int quarter = 0; quarter < 4; ++quarter) {
        const int qlo = std::clamp(lo - 16 * quarter, 0, 16), qhi = std::clamp(hi - 16 * quarter, 0, 16);
        if (qhi <= qlo) continue;
        const int8_t* b = g.packed + p * g.kpad * kInt8Nr + quarter * 64;
        for (int64_t ir = ic; ir < ic + mc; ir += Dot::kMr)
          ymm_tile_rows<Dot>(static_cast<int>(std::min<int64_t>(Dot::kMr, ic + mc - ir)), g, ir, b, groups,
                             p * kInt8Nr + 16 * quarter, qlo, qhi);
      }
    }
  }
}

}  // namespace
}  // namespace shrink::kernels::detail
