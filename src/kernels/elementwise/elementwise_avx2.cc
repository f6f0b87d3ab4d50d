// AVX2 instantiation of the elementwise family (norms, activations, softmax, exp, RoPE).
#include "kernels/elementwise/elementwise_simd.h"
#include "kernels/elementwise/kernel_tables.h"
#include "kernels/elementwise/vec_avx2.h"

namespace shrink::kernels::detail {

const ElementwiseKernels kElementwiseAvx2 = {
    Isa::Avx2,
    "f32-elementwise-avx2",
    rmsnorm_simd<VecAvx2>,
    layernorm_simd<VecAvx2>,
    softmax_simd<VecAvx2>,
    gelu_erf_simd<VecAvx2>,
    gelu_tanh_simd<VecAvx2>,
    silu_simd<VecAvx2>,
    swiglu_simd<VecAvx2>,
    add_simd<VecAvx2>,
    exp_simd<VecAvx2>,
    rope_simd<VecAvx2>,
};

}  // namespace shrink::kernels::detail
