// AVX-512 instantiation of the elementwise family (norms, activations, softmax, exp, RoPE).
#include "kernels/elementwise/elementwise_simd.h"
#include "kernels/elementwise/kernel_tables.h"
#include "kernels/elementwise/vec_avx512.h"

namespace shrink::kernels::detail {

const ElementwiseKernels kElementwiseAvx512 = {
    Isa::Avx512,
    "f32-elementwise-avx512",
    rmsnorm_simd<VecAvx512>,
    layernorm_simd<VecAvx512>,
    softmax_simd<VecAvx512>,
    gelu_erf_simd<VecAvx512>,
    gelu_tanh_simd<VecAvx512>,
    silu_simd<VecAvx512>,
    swiglu_simd<VecAvx512>,
    add_simd<VecAvx512>,
    exp_simd<VecAvx512>,
    rope_simd<VecAvx512>,
};

}  // namespace shrink::kernels::detail
