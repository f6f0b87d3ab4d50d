// AVX2 instantiation of the attend kernel (attend_simd.h).
#include "kernels/attention/attend_simd.h"
#include "kernels/elementwise/kernel_tables.h"
#include "kernels/elementwise/vec_avx2.h"

namespace shrink::kernels::detail {

const AttentionKernels kAttentionAvx2 = {Isa::Avx2, "f32-attend-avx2", attend_simd<VecAvx2>};

}  // namespace shrink::kernels::detail
