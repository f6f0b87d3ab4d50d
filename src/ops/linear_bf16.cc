// BF16 Linear: the bf16 weight tensor (possibly a view into a mapped file) is the only copy; GEMV for m <= 4 and
// forward_rows widen it in registers, the GEMM converts one panel at a time per call (kernels/bf16.h).
#include <shrink/kernels/bf16.h>
#include <shrink/kernels/gemm.h>

#include "ops/qlinear_impl.h"

namespace shrink::detail {

namespace {

class Bf16Linear final : public PackedTensorsLinear {
 public:
  explicit Bf16Linear(PackedLinear p) : PackedTensorsLinear(std::move(p)), isa_(active_isa()) {
    w_.w = p_.find("weight")->data<uint16_t>();
    w_.n = out_;
    w_.k = in_;
    w_.ld = in_;
  }

  void forward(const float* x, int64_t m, float* y) const override {
    kernels::bf16_matmul(w_, x, m, in_, bias_, y, out_, isa_);
  }

  bool forward_rows(const float* x, int64_t m, float* y, int64_t o0, int64_t o1) const override {
    if (m > kernels::kGemvMaxRows) return false;
    kernels::bf16_gemv_rows(w_, x, m, in_, bias_, y, out_, o0, o1, isa_);
    return true;
  }

 private:
  Isa isa_;
  kernels::Bf16Matrix w_;
};

}  // namespace

std::unique_ptr<Linear> make_bf16_linear(PackedLinear p) {
  return std::make_unique<Bf16Linear>(std::move(p));
}

}  // namespace shrink::detail
