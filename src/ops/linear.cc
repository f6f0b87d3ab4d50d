// Dense fp32 Linear: weights converted and packed for the active ISA on first use (and again after release_packed);
// GEMV for m <= 4, and for batches the packed GEMM or oneDNN's matmul, whichever src/kernels/gemm/README.md measured
// faster here.
#include <shrink/core/cpu.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/kernels/gemm.h>
#include <shrink/ops/linear.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string_view>
#include <vector>

#include "kernels/gemm/sgemm_kernels.h"

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
    weight_ = weight;
    isa_ = active_isa();
    gemm = gemm_from_env(gemm);
    use_onednn_ = out_ > 0 && in_ > 0 &&
                  (gemm == DenseGemm::OneDnn || (gemm == DenseGemm::Auto && prefer_onednn(isa_, out_, in_)));
  }

  void forward(const float* x, int64_t m, float* y) const override {
    check(m >= 0, "dense Linear [{} -> {}]: m = {} rows; expected m >= 0", in_, out_, m);
    if (m == 0) return;
    const float* b = bias_.empty() ? nullptr : bias_.data();
    const Packed& p = ensure_packed();
    if (p.onednn && m > kernels::kGemvMaxRows)
      p.onednn->run(x, m, y);
    else
      kernels::sgemm_packed(p.panels, x, m, in_, b, y, out_);
  }

  // The GEMV kernel over the panels that cover [o0, o1): whole panels write y directly; a panel cut by the range
  // goes through a [m][nr] tile. Each output is computed exactly as forward() computes it (same kernel, same panel).
  bool forward_rows(const float* x, int64_t m, float* y, int64_t o0, int64_t o1) const override {
    if (m < 1 || m > kernels::kGemvMaxRows) return false;
    check(0 <= o0 && o0 <= o1 && o1 <= out_, "dense Linear [{} -> {}]: output range [{}, {}) is outside [0, {})", in_,
          out_, o0, o1, out_);
    // The empty range is linear_fused's question, asked outside its parallel region: pack here, on the pool.
    const kernels::PackedWeightsF32& packed = ensure_packed().panels;
    if (o0 == o1) return true;
    const float* b = bias_.empty() ? nullptr : bias_.data();
    if (in_ == 0) {
      for (int64_t r = 0; r < m; ++r)
        for (int64_t o = o0; o < o1; ++o) y[r * out_ + o] = b ? b[o] : 0.0f;
      return true;
    }
    const kernels::detail::SgemmPanelsFn gemv = kernels::detail::sgemm_kernels(packed.isa()).gemv;
    const int64_t nr = packed.nr();
    const kernels::detail::SgemmArgs all{x, in_, m, out_, in_, packed.panel(0), b, y, out_};
    auto whole = [&](int64_t p) { return p * nr >= o0 && std::min((p + 1) * nr, out_) <= o1; };
    const int64_t p_end = (o1 + nr - 1) / nr;
    for (int64_t p = o0 / nr; p < p_end;) {
      if (whole(p)) {
        int64_t q = p + 1;
        while (q < p_end && whole(q)) ++q;
        gemv(all, p, q);
        p = q;
        continue;
      }
      alignas(64) float tile[kernels::kGemvMaxRows * 64];
      kernels::detail::SgemmArgs one = all;
      one.n = out_ - p * nr;
      one.packed = packed.panel(p);
      one.bias = b ? b + p * nr : nullptr;
      one.y = tile;
      one.ldy = nr;
      gemv(one, 0, 1);
      const int64_t c0 = std::max(o0, p * nr), c1 = std::min(o1, (p + 1) * nr);
      for (int64_t r = 0; r < m; ++r)
        std::copy(tile + r * nr + (c0 - p * nr), tile + r * nr + (c1 - p * nr), y + r * out_ + c0);
      ++p;
    }
    return true;
  }

  std::string scheme() const override { return "f32"; }

  // What the packed layer occupies (panels padded to the ISA's width; oneDNN's copy, when chosen, counted as out x in
  // floats), packed or not.
  size_t weight_bytes() const override {
    const int64_t nr = kernels::sgemm_panel_width(isa_), panels = (out_ + nr - 1) / nr;
    const size_t f32_bytes = static_cast<size_t>(out_ * in_) * sizeof(float);
    return static_cast<size_t>(panels * nr * in_) * sizeof(float) + bias_.size() * sizeof(float) +
           (use_onednn_ ? f32_bytes : 0);
  }

  void release_packed() override {
    const std::lock_guard<std::mutex> lock(mutex_);
    ready_.store(nullptr, std::memory_order_release);
    packed_.reset();
  }

 private:
  struct Packed {
    kernels::PackedWeightsF32 panels;
    std::unique_ptr<kernels::DnnlMatmulF32> onednn;  // batches only, when chosen
  };

  // Packs on the first call (double-checked: later calls cost one acquire load). After packing, the checkpoint's
  // pages of the source are dead weight in RSS (the model would hold the mapped file and the packed copy: 8.8 GB
  // for TinyLlama), so they are dropped; they reload from the file if the weight is read again (quantization passes
  // read LinearSlot::weight, a repack after release_packed).
  const Packed& ensure_packed() const {
    if (const Packed* p = ready_.load(std::memory_order_acquire)) return *p;
    const std::lock_guard<std::mutex> lock(mutex_);
    if (!packed_) {
      auto p = std::make_unique<Packed>();
      p->panels = kernels::PackedWeightsF32::pack(weight_.raw(), weight_.dtype(), out_, in_, in_, isa_);
      if (use_onednn_) {
        // oneDNN wants the [out][in] fp32 rows.
        const Tensor w32 = weight_.to_f32();
        p->onednn = std::make_unique<kernels::DnnlMatmulF32>(w32.data<float>(), out_, in_, in_,
                                                             bias_.empty() ? nullptr : bias_.data());
      }
      drop_mapped_pages(weight_.raw(), weight_.nbytes());
      packed_ = std::move(p);
    }
    ready_.store(packed_.get(), std::memory_order_release);
    return *packed_;
  }

  Tensor weight_;  // the source [out, in] (keeps a mapped file or heap storage alive)
  std::vector<float> bias_;
  Isa isa_ = Isa::Scalar;
  bool use_onednn_ = false;
  mutable std::mutex mutex_;
  mutable std::unique_ptr<Packed> packed_;
  mutable std::atomic<const Packed*> ready_{nullptr};
};

}  // namespace

std::unique_ptr<Linear> make_dense_linear(const Tensor& weight, const Tensor* bias, DenseGemm gemm) {
  return std::make_unique<DenseLinearF32>(weight, bias, gemm);
}

std::unique_ptr<Linear> make_dense_linear(const Tensor& weight, const Tensor* bias) {
  return make_dense_linear(weight, bias, DenseGemm::Auto);
}

}  // namespace shrink
