// u8s8 -> s32 GEMM for AVX-512 VNNI (the main W8A8 kernel): 6 rows x 64 columns per tile, 24 zmm accumulators fed
// by vpdpbusd (4 k-values per int32 lane), the dequantizing epilogue fused. With m <= 4 the same tile is the GEMV.
// GCC 12 flags the _mm512_undefined_* inside its own intrinsic headers as uninitialized (a false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstring>

#include "kernels/int8/int8_kernels.h"

namespace shrink::kernels::detail {
namespace {

constexpr int kMr = 6;
// Rows of A per block: 132 x 3072 bytes of activations stay in the 1 MiB L2 next to one 192 KiB weight panel.
constexpr int64_t kMc = 132;

inline __mmask16 lane_mask(int lo, int hi, int j) {
  const int a = std::clamp(lo - 16 * j, 0, 16), b = std::clamp(hi - 16 * j, 0, 16);
  if (b <= a) return 0;
  return static_cast<__mmask16>(((1u << b) - 1u) & ~((1u << a) - 1u));
}

// acc += dot(u8 a, s8 b) per int32 lane; inline asm so the accumulator is updated in place (GCC 12 copies it
// around the intrinsic).
inline void dpbusd(__m512i& acc, __m512i a, __m512i b) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
}

inline int32_t load_u32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Stores a finished R x 64 tile: raw int32 sums, or the dequantized fp32 outputs.
template <int R>
inline void store_tile(const Int8GemmArgs& g, int64_t row, int64_t pcol, int lo, int hi, const __m512i (&acc)[R][4]) {
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __mmask16 mask = lane_mask(lo, hi, j);
    if (!mask) continue;
    const int64_t col = pcol + 16 * j;
    if (g.c) {
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) _mm512_mask_storeu_epi32(g.c + (row + r) * g.ldc + col, mask, acc[r][j]);
      continue;
    }
    const __m512i comp = _mm512_mullo_epi32(_mm512_set1_epi32(g.zp), _mm512_loadu_si512(g.wsum + col));
    const __m512 ws = _mm512_loadu_ps(g.w_scale + col);
    const __m512 bias = g.bias ? _mm512_maskz_loadu_ps(mask, g.bias + col) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 s = _mm512_mul_ps(_mm512_set1_ps(g.a_scale[(row + r) * g.a_scale_stride]), ws);
      const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][j], comp));
      _mm512_mask_storeu_ps(g.y + (row + r) * g.ldy + col, mask, _mm512_fmadd_ps(v, s, bias));
    }
  }
}

// The full 6-row tile with its 24 accumulators as named variables: GCC 12 keeps an accumulator array that is
// handed to the store in memory and reloads/spills it around every vpdpbusd (measured 60% of oneDNN's rate).
void tile6(const Int8GemmArgs& g, int64_t row, const int8_t* b, int64_t groups, int64_t pcol, int lo, int hi) {
#define SHRINK_ACC_ROW(r) \
  __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0, c##r##2 = c##r##0, c##r##3 = c##r##0;
  SHRINK_ACC_ROW(0)
  SHRINK_ACC_ROW(1) SHRINK_ACC_ROW(2) SHRINK_ACC_ROW(3) SHRINK_ACC_ROW(4) SHRINK_ACC_ROW(5)
#undef SHRINK_ACC_ROW
      const uint8_t* a = g.a + row * g.lda;
  const int64_t lda = g.lda;
  for (int64_t q = 0; q < groups; ++q) {
    const int8_t* bq = b + q * (kInt8Nr * kInt8Kg);
    const __m512i b0 = _mm512_load_si512(bq), b1 = _mm512_load_si512(bq + 64);
    const __m512i b2 = _mm512_load_si512(bq + 128), b3 = _mm512_load_si512(bq + 192);
    const uint8_t* aq = a + q * kInt8Kg;
#define SHRINK_ROW(r)                                             \
  {                                                               \
    const __m512i av = _mm512_set1_epi32(load_u32(aq + (r)*lda)); \
    dpbusd(c##r##0, av, b0);                                      \
    dpbusd(c##r##1, av, b1);                                      \
    dpbusd(c##r##2, av, b2);                                      \
    dpbusd(c##r##3, av, b3);                                      \
  }
    SHRINK_ROW(0) SHRINK_ROW(1) SHRINK_ROW(2) SHRINK_ROW(3) SHRINK_ROW(4) SHRINK_ROW(5)
#undef SHRINK_ROW
  }
  const __m512i acc[6][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23},
                             {c30, c31, c32, c33}, {c40, c41, c42, c43}, {c50, c51, c52, c53}};
  store_tile<6>(g, row, pcol, lo, hi, acc);
}

// Fewer rows (the last tile of a block; the GEMV at m <= 4, which streams weights and is not compute bound).
template <int R>
void tile(const Int8GemmArgs& g, int64_t row, const int8_t* b, int64_t groups, int64_t pcol, int lo, int hi) {
  if constexpr (R == kMr) {
    tile6(g, row, b, groups, pcol, lo, hi);
  } else {
    __m512i acc[R][4];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_si512();
    const uint8_t* a = g.a + row * g.lda;
    for (int64_t q = 0; q < groups; ++q) {
      const int8_t* bq = b + q * (kInt8Nr * kInt8Kg);
      const __m512i b0 = _mm512_load_si512(bq), b1 = _mm512_load_si512(bq + 64);
      const __m512i b2 = _mm512_load_si512(bq + 128), b3 = _mm512_load_si512(bq + 192);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512i av = _mm512_set1_epi32(load_u32(a + r * g.lda + q * kInt8Kg));
        acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, b0);
        acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, b1);
        acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], av, b2);
        acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], av, b3);
      }
    }
    store_tile<R>(g, row, pcol, lo, hi, acc);
  }
}

template <int R = kMr>
inline void tile_rows(int rows, const Int8GemmArgs& g, int64_t row, const int8_t* b, int64_t groups, int64_t pcol,
                      int lo, int hi) {
  if (rows == R) {
    tile<R>(g, row, b, groups, pcol, lo, hi);
  } else if constexpr (R > 1) {
    tile_rows<R - 1>(rows, g, row, b, groups, pcol, lo, hi);
  }
}

}  // namespace

void gemm_u8s8_panels_avx512vnni(const Int8GemmArgs& g, int64_t p0, int64_t p1) {
  const int64_t groups = g.kpad / kInt8Kg;
  for (int64_t ic = 0; ic < g.m; ic += kMc) {
    const int64_t mc = std::min(kMc, g.m - ic);
    for (int64_t p = p0; p < p1; ++p) {
      int lo, hi;
      panel_cols(p, g.n, g.col0, g.col1, &lo, &hi);
      if (hi <= lo) continue;
      const int8_t* b = g.packed + p * g.kpad * kInt8Nr;
      for (int64_t ir = ic; ir < ic + mc; ir += kMr)
        tile_rows(static_cast<int>(std::min<int64_t>(kMr, ic + mc - ir)), g, ir, b, groups, p * kInt8Nr, lo, hi);
    }
  }
}

}  // namespace shrink::kernels::detail
