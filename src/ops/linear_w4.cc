// W4A16 Linear: the packed tensors (weight_packed, weight_scale, weight_zero_point; possibly views into a mapped
// file) used in place by the kernels of kernels/int4.h; GEMV for m <= 4 and forward_rows, dequantized-panel GEMM
// for batches.
#include <shrink/kernels/gemm.h>
#include <shrink/kernels/int4.h>

#include "ops/qlinear_impl.h"

namespace shrink::detail {

namespace {

class W4Linear final : public PackedTensorsLinear {
 public:
  explicit W4Linear(PackedLinear p) : PackedTensorsLinear(std::move(p)), isa_(active_isa()) {
    w_.codes = p_.find("weight_packed")->data<uint8_t>();
    w_.scales_f16 = p_.find("weight_scale")->data<uint16_t>();
    const Tensor* z = p_.find("weight_zero_point");
    w_.zero_points = p_.spec.asym && z ? z->data<uint8_t>() : nullptr;
    w_.n = out_;
    w_.k = in_;
    w_.group = p_.spec.group;
  }

  void forward(const float* x, int64_t m, float* y) const override {
    kernels::w4_matmul(w_, x, m, in_, bias_, y, out_, isa_);
  }

  bool forward_rows(const float* x, int64_t m, float* y, int64_t o0, int64_t o1) const override {
    if (m > kernels::kGemvMaxRows) return false;
    kernels::w4_gemv_rows(w_, x, m, in_, bias_, y, out_, o0, o1, isa_);
    return true;
  }

 private:
  Isa isa_;
  kernels::W4Matrix w_;
};

}  // namespace

std::unique_ptr<Linear> make_w4_linear(PackedLinear p) {
  return std::make_unique<W4Linear>(std::move(p));
}

}  // namespace shrink::detail
