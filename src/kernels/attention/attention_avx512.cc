// AVX-512 instantiation of the attend kernel (attend_simd.h).
#include "kernels/attention/attend_simd.h"
#include "kernels/elementwise/kernel_tables.h"
#include "kernels/elementwise/vec_avx512.h"

namespace shrink::kernels::detail {

const AttentionKernels kAttentionAvx512 = {Isa::Avx512, "f32-attend-avx512", attend_simd<VecAvx512>};

}  // namespace shrink::kernels::detail
