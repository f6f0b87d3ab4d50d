// W4A16 Linear: the packed tensors (weight_packed, weight_scale, weight_zero_point; possibly views into a mapped
// file) used in place by the kernels of kernels/int4.h; GEMV for m <= 4 and forward_rows, dequantized-panel GEMM
// for batches.
#include <shrink/kernels/gemm.h>
#include <shrink/kernels/int4.h>

#include "ops/qlinear_impl.h"

namespace shrink::detail {

namespace {

class W4Linear final : public Linear {
 public:
  explicit W4Linear(PackedLinear p) : p_(std::move(p)), isa_(active_isa()) {
    p_.validate(p_.spec.name() + " layer");
    in_ = p_.in;
    out_ = p_.out;
    w_.codes = p_.find("weight_packed")->data<uint8_t>();
    w_.scales_f16 = p_.find("weight_scale")->data<uint16_t>();
    const Tensor* z = p_.find("weight_zero_point");
    w_.zero_points = p_.spec.asym && z ? z->data<uint8_t>() : nullptr;
    w_.n = out_;
    w_.k = in_;
    w_.group = p_.spec.group;
    const Tensor* b = p_.find("bias");
    bias_ = b ? b->data<float>() : nullptr;
  }

  void forward(const float* x, int64_t m, float* y) const override {
    kernels::w4_matmul(w_, x, m, in_, bias_, y, out_, isa_);
  }

  bool forward_rows(const float* x, int64_t m, float* y, int64_t o0, int64_t o1) const override {
    if (m > kernels::kGemvMaxRows) return false;
    kernels::w4_gemv_rows(w_, x, m, in_, bias_, y, out_, o0, o1, isa_);
    return true;
  }

  std::string scheme() const override { return p_.spec.name(); }
  // Everything the layer keeps in memory: codes, scales, zero points, the shape record and the bias.
  size_t weight_bytes() const override {
    size_t bytes = 0;
    for (const auto& [name, t] : p_.tensors) bytes += t.nbytes();
    return bytes;
  }
  const PackedLinear* packed() const override { return &p_; }

 private:
  PackedLinear p_;
  Isa isa_;
  kernels::W4Matrix w_;
  const float* bias_ = nullptr;
};

}  // namespace

std::unique_ptr<Linear> make_w4_linear(PackedLinear p) {
  return std::make_unique<W4Linear>(std::move(p));
}

}  // namespace shrink::detail
