// W4A16 Linear: the packed tensors (weight_packed, weight_scale, weight_zero_point; possibly views into a mapped
// file) used in place by the kernels of kernels/int4.h; GEMV passes for m <= 16 and forward_rows, dequantized-panel
// GEMM for batches. A small layer (fp32 weights <= kDequantizedCacheBytes) keeps its dequantized weights packed for the
// fp32 GEMM for the batches w4_matmul would give the GEMM (m > kW4GemvPassMaxRows): at the demo ViT's 64x64 and 64x128
// the per-call dequantization cost half as much as the GEMM itself (perf, batch 1), and the copy is at most 256 KiB.
// Same values, so the same results up to summation order.
#include <shrink/kernels/gemm.h>
#include <shrink/kernels/int4.h>
#include <shrink/kernels/quant.h>

#include <optional>
#include <vector>

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
    if (out_ * in_ * int64_t{sizeof(float)} <= kDequantizedCacheBytes) {
      std::vector<float> w(static_cast<size_t>(out_ * in_));
      for (int64_t r = 0; r < out_; ++r)
        kernels::dequantize_row_w4_ref(w_.codes + r * w_.row_bytes(), w_.scales_f16 + r * w_.groups(),
                                       w_.zero_points ? w_.zero_points + r * w_.groups() : nullptr, in_, w_.group,
                                       w.data() + r * in_);
      dequantized_ = kernels::PackedWeightsF32::pack(w.data(), DType::F32, out_, in_, in_, isa_);
    }
  }

  void forward(const float* x, int64_t m, float* y) const override {
    if (dequantized_ && m > kernels::kW4GemvPassMaxRows)
      return kernels::sgemm_packed(*dequantized_, x, m, in_, bias_, y, out_);
    kernels::w4_matmul(w_, x, m, in_, bias_, y, out_, isa_);
  }

  bool forward_rows(const float* x, int64_t m, float* y, int64_t o0, int64_t o1) const override {
    if (m > kernels::kGemvMaxRows) return false;
    kernels::w4_gemv_rows(w_, x, m, in_, bias_, y, out_, o0, o1, isa_);
    return true;
  }

 private:
  static constexpr int64_t kDequantizedCacheBytes = 256 << 10;
  Isa isa_;
  kernels::W4Matrix w_;
  std::optional<kernels::PackedWeightsF32> dequantized_;
};

}  // namespace

std::unique_ptr<Linear> make_w4_linear(PackedLinear p) {
  return std::make_unique<W4Linear>(std::move(p));
}

}  // namespace shrink::detail
