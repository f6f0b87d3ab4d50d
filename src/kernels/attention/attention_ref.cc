// Scalar attend kernels (the Scalar-ISA row of the attention table): plain loops, float dot products and
// accumulation as in llama2.c's run.c, exp and the softmax sum in double; the INT8 KV cache through the KV8
// reference dequantization.
#include <shrink/kernels/quant.h>

#include <cmath>
#include <limits>

#include "kernels/elementwise/kernel_tables.h"

namespace shrink::kernels {

namespace {

void attend_scalar(const AttendArgs& a) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  float* s = a.scratch;
  for (int qi = 0; qi < a.n_q; ++qi) {
    const float* q = a.q + qi * a.q_stride;
    float m = kNegInf;
    for (int64_t j = 0; j < a.n_keys; ++j) {
      if (a.mask && a.mask[j] == 0) {
        s[j] = kNegInf;
        continue;
      }
      const float* k = a.k + j * a.kv_stride;
      float dot = 0.0f;
      for (int d = 0; d < a.head_dim; ++d) dot += q[d] * k[d];
      s[j] = dot * a.scale;
      m = s[j] > m ? s[j] : m;
    }
    double sum = 0;
    for (int64_t j = 0; j < a.n_keys; ++j) {
      s[j] = m == kNegInf ? 0.0f : static_cast<float>(std::exp(static_cast<double>(s[j]) - m));
      sum += s[j];
    }
    float* out = a.out + qi * a.out_stride;
    for (int d = 0; d < a.head_dim; ++d) out[d] = 0.0f;
    for (int64_t j = 0; j < a.n_keys; ++j) {
      const float* v = a.v + j * a.kv_stride;
      for (int d = 0; d < a.head_dim; ++d) out[d] += s[j] * v[d];
    }
    if (a.row_max) {
      a.row_max[qi] = m;
      a.row_sum[qi] = static_cast<float>(sum);
    } else {
      const float inv = sum > 0 ? static_cast<float>(1.0 / sum) : 0.0f;
      for (int d = 0; d < a.head_dim; ++d) out[d] *= inv;
    }
  }
}

void attend_kv8_scalar(const AttendArgs& a) {
  float* ktile = a.scratch + attend_scratch_floats(a.n_q, a.n_keys);
  float* vtile = ktile + a.n_keys * a.head_dim;
  for (int64_t j = 0; j < a.n_keys; ++j) {
    dequantize_row_s8_ref(a.k8 + j * a.kv_stride, a.k_scale[j], a.head_dim, ktile + j * a.head_dim);
    dequantize_row_s8_ref(a.v8 + j * a.kv_stride, a.v_scale[j], a.head_dim, vtile + j * a.head_dim);
  }
  AttendArgs f = a;
  f.k = ktile;
  f.v = vtile;
  f.kv_stride = a.head_dim;
  attend_scalar(f);
}

}  // namespace

namespace detail {

const AttentionKernels kAttentionScalar = {Isa::Scalar, "f32-attend-scalar", attend_scalar, attend_kv8_scalar,
                                           "kv8-attend-scalar"};

}  // namespace detail

}  // namespace shrink::kernels
