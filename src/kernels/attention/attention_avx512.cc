// AVX-512 instantiations of the attend kernel (attend_simd.h): fp32 K/V and the INT8 KV cache.
#include <cstring>

#include "kernels/attention/attend_simd.h"
#include "kernels/elementwise/kernel_tables.h"
#include "kernels/elementwise/vec_avx512.h"

namespace shrink::kernels::detail {
namespace {

// int8 -> float lanes for the INT8 KV cache tiles.
struct Kv8LoadAvx512 {
  static __m512 load(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static __m512 load_n(const int8_t* p, int n) {
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
  }
};

}  // namespace

const AttentionKernels kAttentionAvx512 = {Isa::Avx512, "f32-attend-avx512", attend_simd<VecAvx512>,
                                           attend_kv8_simd<VecAvx512, Kv8LoadAvx512>, "kv8-attend-avx512"};

}  // namespace shrink::kernels::detail
