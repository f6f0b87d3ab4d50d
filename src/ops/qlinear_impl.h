// Internal: the per-format Linear factories behind make_packed_linear (one file per format family) and the
// scalar reference Linear they are tested against.
#pragma once

#include <shrink/kernels/int8.h>
#include <shrink/ops/qlinear.h>

namespace shrink::detail {

// A Linear computing straight from the tensors it was given (file layout, possibly mmap'd): validates them,
// keeps them, and answers scheme / weight_bytes / packed from them.
class PackedTensorsLinear : public Linear {
 public:
  explicit PackedTensorsLinear(PackedLinear p) : p_(std::move(p)) {
    p_.validate(p_.spec.name() + " layer");
    in_ = p_.in;
    out_ = p_.out;
    const Tensor* b = p_.find("bias");
    bias_ = b ? b->data<float>() : nullptr;
  }
  std::string scheme() const override { return p_.spec.name(); }
  size_t weight_bytes() const override { return p_.bytes(); }
  const PackedLinear* packed() const override { return &p_; }

 protected:
  PackedLinear p_;
  const float* bias_ = nullptr;
};

std::unique_ptr<Linear> make_w8_linear(PackedLinear p);  // W8A16, W8A8 (src/ops/linear_int8.cc)
// The same with the INT8 kernel set pinned (tests run every set the CPU has; make_w8_linear uses active_isa()).
std::unique_ptr<Linear> make_w8_linear(PackedLinear p, kernels::Int8Isa isa);
std::unique_ptr<Linear> make_w4_linear(PackedLinear p);    // W4A16 (src/ops/linear_w4.cc)
std::unique_ptr<Linear> make_bf16_linear(PackedLinear p);  // BF16 (src/ops/linear_bf16.cc)

// Straight from the definitions with the scalar references of kernels/quant.h: weights dequantized on the fly,
// W8A8 activations quantized per token (or with the static scale) and dotted in integers. Slow; the oracle.
std::unique_ptr<Linear> make_reference_packed_linear(PackedLinear p);

}  // namespace shrink::detail
