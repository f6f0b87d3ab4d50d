// u8s8 -> s32 GEMM for AVX-VNNI (256-bit vpdpbusd, VEX encoded): 6 rows x 16 columns per tile.
#include "kernels/int8/int8_ymm_gemm.h"

namespace shrink::kernels::detail {
namespace {

struct DotAvxVnni {
  using A = __m256i;
  static constexpr int kMr = 6;  // 12 accumulators + 2 weight vectors + 1 broadcast of 16 ymm registers
  static constexpr int32_t kBias = 0;
  static constexpr int64_t kAStride = kInt8Kg;  // the quantized activations as they are
  static A load(const uint8_t* p) { return _mm256_set1_epi32(load_u32(p)); }
  // Inline asm: GCC 12 copies the accumulators around the intrinsic (see int8_avx512vnni.cc).
  static __m256i dot(__m256i acc, A a, __m256i b) {
    asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(b));
    return acc;
  }
};

}  // namespace

void gemm_u8s8_panels_avxvnni(const Int8GemmArgs& g, int64_t p0, int64_t p1) {
  ymm_gemm_panels<DotAvxVnni>(g, p0, p1);
}

}  // namespace shrink::kernels::detail
