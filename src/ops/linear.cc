// Dense fp32 Linear: weights converted and packed once for the active ISA; GEMV for m <= 4, and for batches the
// packed GEMM or oneDNN's matmul, whichever src/kernels/gemm/README.md measured faster here.
#include <shrink/core/cpu.h>
#include <shrink/core/error.h>
#include <shrink/kernels/gemm.h>
#include <shrink/ops/linear.h>

#include <cstdlib>
#include <string_view>
#include <vector>

namespace shrink {
namespace {

DenseGemm gemm_from_env(DenseGemm requested) {
  if (requested != DenseGemm::Auto) return requested;
  const char* env = std::getenv("SHRINK_DENSE_GEMM");
  if (!env || !*env) return DenseGemm::Auto;
  const std::string_view v(env);
  if (v == "packed") return DenseGemm::Packed;
  if (v == "onednn") return DenseGemm::OneDnn;
  if (v == "auto") return DenseGemm::Auto;
  fail("SHRINK_DENSE_GEMM={}: expected one of auto, packed, onednn", v);
}

// The measured choice (src/kernels/gemm/README.md, "Which GEMM make_dense_linear picks"): with AVX-512 the packed
// GEMM beat oneDNN 2.6 on every BERT-base shape; with AVX2 on all but (k, n) = (3072, 768), 3-4% slower, which does
// not pay for a second weight copy (the GEMV reads the packed panels). So Auto never picks oneDNN today; a shape or
// ISA that measures otherwise goes here. SHRINK_ISA=scalar promises no SIMD, and oneDNN would JIT anyway.
bool prefer_onednn(Isa isa, int64_t out, int64_t in) {
  return false;
}

class DenseLinearF32 final : public Linear {
 public:
  DenseLinearF32(const Tensor& weight, const Tensor* bias, DenseGemm gemm) {
    check(weight.rank() == 2, "dense Linear: weight has shape {}; expected [out_features, in_features]",
          shape_str(weight.shape()));
    check(weight.dtype() == DType::F32 || weight.dtype() == DType::F16 || weight.dtype() == DType::BF16,
          "dense Linear: weight {} has dtype {}; expected F32, F16 or BF16 (quantized weights need their own Linear)",
          shape_str(weight.shape()), dtype_name(weight.dtype()));
    out_ = weight.dim(0);
    in_ = weight.dim(1);
    if (bias && bias->defined() && bias->numel() > 0) {
      check(bias->rank() == 1 && bias->dim(0) == out_, "dense Linear: bias has shape {}; expected [{}] (out_features)",
            shape_str(bias->shape()), out_);
      check(bias->dtype() == DType::F32 || bias->dtype() == DType::F16 || bias->dtype() == DType::BF16,
            "dense Linear: bias has dtype {}; expected F32, F16 or BF16", dtype_name(bias->dtype()));
      const Tensor b = bias->to_f32();
      bias_.assign(b.data<float>(), b.data<float>() + out_);
    }
    const Isa isa = active_isa();
    packed_ = kernels::PackedWeightsF32::pack(weight.raw(), weight.dtype(), out_, in_, in_, isa);
    gemm = gemm_from_env(gemm);
    const bool use_onednn = out_ > 0 && in_ > 0 &&
                            (gemm == DenseGemm::OneDnn || (gemm == DenseGemm::Auto && prefer_onednn(isa, out_, in_)));
    if (use_onednn) {
      // oneDNN wants the [out][in] fp32 rows; rebuild them from the conversion already done by packing.
      const Tensor w32 = weight.to_f32();
      onednn_ = std::make_unique<kernels::DnnlMatmulF32>(w32.data<float>(), out_, in_, in_,
                                                         bias_.empty() ? nullptr : bias_.data());
    }
  }

  void forward(const float* x, int64_t m, float* y) const override {
    check(m >= 0, "dense Linear [{} -> {}]: m = {} rows; expected m >= 0", in_, out_, m);
    if (m == 0) return;
    const float* b = bias_.empty() ? nullptr : bias_.data();
    if (onednn_ && m > kernels::kGemvMaxRows)
      onednn_->run(x, m, y);
    else
      kernels::sgemm_packed(packed_, x, m, in_, b, y, out_);
  }

  std::string scheme() const override { return "f32"; }

  size_t weight_bytes() const override {
    return packed_.bytes() + bias_.size() * sizeof(float) + (onednn_ ? onednn_->bytes() : 0);
  }

 private:
  kernels::PackedWeightsF32 packed_;
  std::vector<float> bias_;
  std::unique_ptr<kernels::DnnlMatmulF32> onednn_;  // batches only, when chosen
};

}  // namespace

std::unique_ptr<Linear> make_dense_linear(const Tensor& weight, const Tensor* bias, DenseGemm gemm) {
  return std::make_unique<DenseLinearF32>(weight, bias, gemm);
}

std::unique_ptr<Linear> make_dense_linear(const Tensor& weight, const Tensor* bias) {
  return make_dense_linear(weight, bias, DenseGemm::Auto);
}

}  // namespace shrink
