// AVX2 instantiations of the attend kernel (attend_simd.h): fp32 K/V and the INT8 KV cache.
#include <cstring>

#include "kernels/attention/attend_simd.h"
#include "kernels/elementwise/kernel_tables.h"
#include "kernels/elementwise/vec_avx2.h"

namespace shrink::kernels::detail {
namespace {

// int8 -> float lanes for the INT8 KV cache tiles (the last partial vector goes through a zeroed copy: AVX2 has no
// masked byte load, and the row may end the cache).
struct Kv8LoadAvx2 {
  static __m256 load(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static __m256 load_n(const int8_t* p, int n) {
    int8_t buf[8] = {};
    std::memcpy(buf, p, static_cast<size_t>(n));
    return load(buf);
  }
};

}  // namespace

const AttentionKernels kAttentionAvx2 = {Isa::Avx2, "f32-attend-avx2", attend_simd<VecAvx2>,
                                         attend_kv8_simd<VecAvx2, Kv8LoadAvx2>, "kv8-attend-avx2"};

}  // namespace shrink::kernels::detail
