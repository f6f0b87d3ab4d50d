// W8A16 and W8A8 (dynamic per-token or static activations) Linear on the INT8 kernels of kernels/int8.h. The
// layer keeps one weight copy, the VNNI panels; the PackedLinear it was built from is regenerated exactly from
// them on the first packed() call (so a layer loaded from a mapped file does not pin the file's tensors).
#include <shrink/core/cpu.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/kernels/gemm.h>
#include <shrink/kernels/int8.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <mutex>
#include <vector>

#include "ops/qlinear_impl.h"

namespace shrink::detail {
namespace {

std::atomic<bool> g_count_clips{false};

class Int8Linear final : public Linear {
 public:
  Int8Linear(const PackedLinear& p, kernels::Int8Isa isa) : spec_(p.spec), isa_(isa) {
    check(kernels::int8_isa_available(isa), "{} layer: int8 kernels '{}' do not run on this CPU ({})", spec_.name(),
          kernels::int8_isa_name(isa), cpu_features().model);
    p.validate(spec_.name() + " layer");
    in_ = p.in;
    out_ = p.out;
    const Tensor* s = p.find("weight_scale");
    weights_ = kernels::PackedWeightsS8::pack(p.find("weight")->data<int8_t>(), s->data<float>(), out_, in_, in_);
    if (const Tensor* b = p.find("bias")) bias_.assign(b->data<float>(), b->data<float>() + out_);
    if (spec_.static_act) {
      act_scale_ = p.find("input_scale")->data<float>()[0];
      act_zp_ = p.find("input_zero_point")->data<int32_t>()[0];
      check(act_scale_ > 0.f && std::isfinite(act_scale_) && act_zp_ >= 0 && act_zp_ <= 255,
            "{} layer: input_scale {} and input_zero_point {}; expected a positive finite scale and a zero point in "
            "[0, 255]. Re-run shrink quantize with calibration",
            spec_.name(), act_scale_, act_zp_);
    }
  }

  void forward(const float* x, int64_t m, float* y) const override {
    check(m >= 0, "{} Linear [{} -> {}]: m = {} rows; expected m >= 0", spec_.name(), in_, out_, m);
    if (m == 0) return;
    const float* b = bias_.empty() ? nullptr : bias_.data();
    if (spec_.scheme == WeightScheme::W8A16) return kernels::gemm_w8a16(isa_, weights_, x, m, in_, b, y, out_);
    const kernels::A8Rows a = quantize(x, m, m * in_ >= kParallelQuantize);
    kernels::gemm_u8s8_f32(isa_, weights_, a, m, b, y, out_);
  }

  bool forward_rows(const float* x, int64_t m, float* y, int64_t o0, int64_t o1) const override {
    if (m > kernels::kGemvMaxRows) return false;
    check(m >= 0 && o0 >= 0 && o1 <= out_, "{} Linear [{} -> {}]: forward_rows m = {}, columns [{}, {})", spec_.name(),
          in_, out_, m, o0, o1);
    if (m == 0 || o1 <= o0) return true;
    const float* b = bias_.empty() ? nullptr : bias_.data();
    if (spec_.scheme == WeightScheme::W8A16) {
      kernels::gemv_w8a16_cols(isa_, weights_, x, m, in_, b, y, out_, o0, o1);
    } else {
      const kernels::A8Rows a = quantize(x, m, false);
      kernels::gemm_u8s8_f32_cols(isa_, weights_, a, m, b, y, out_, o0, o1);
    }
    return true;
  }

  std::string scheme() const override { return spec_.name(); }

  size_t weight_bytes() const override {
    size_t n = weights_.bytes() + bias_.size() * sizeof(float);
    if (packed_ready_.load(std::memory_order_acquire))
      for (auto& [name, t] : packed_->tensors) n += t.nbytes();
    return n;
  }

  const PackedLinear* packed() const override {
    std::call_once(packed_once_, [&] {
      auto p = std::make_unique<PackedLinear>();
      p->spec = spec_;
      p->out = out_;
      p->in = in_;
      Tensor w = Tensor::empty(DType::I8, {out_, in_});
      weights_.unpack(w.data<int8_t>(), in_);
      p->tensors.emplace_back("weight", w);
      Tensor s = Tensor::empty(DType::F32, {out_, 1});
      std::copy(weights_.scale(), weights_.scale() + out_, s.data<float>());
      p->tensors.emplace_back("weight_scale", s);
      if (spec_.static_act) {
        p->tensors.emplace_back("input_scale", Tensor::from_f32({act_scale_}, {1}));
        Tensor zp = Tensor::empty(DType::I32, {1});
        zp.data<int32_t>()[0] = act_zp_;
        p->tensors.emplace_back("input_zero_point", zp);
      }
      if (!bias_.empty()) p->tensors.emplace_back("bias", Tensor::from_f32(bias_, {out_}));
      packed_ = std::move(p);
      packed_ready_.store(true, std::memory_order_release);
    });
    return packed_.get();
  }

 private:
  static constexpr int64_t kParallelQuantize = 1 << 15;

  // Activations of this call in the calling thread's buffer (thread-local: concurrent forwards do not share it).
  kernels::A8Rows quantize(const float* x, int64_t m, bool threaded) const {
    thread_local std::vector<uint8_t> q;
    thread_local std::vector<float> scales;
    const int64_t ldq = weights_.kpad();
    if (q.size() < static_cast<size_t>(m * ldq)) q.resize(static_cast<size_t>(m * ldq));
    if (scales.size() < static_cast<size_t>(m)) scales.resize(static_cast<size_t>(m));
    uint8_t* qd = q.data();
    float* sd = scales.data();
    auto rows = [&](int64_t r0, int64_t r1) {
      if (spec_.static_act)
        kernels::quantize_a8_static(isa_, x + r0 * in_, r1 - r0, in_, in_, act_scale_, act_zp_, qd + r0 * ldq, ldq);
      else
        kernels::quantize_a8_dynamic(isa_, x + r0 * in_, r1 - r0, in_, in_, qd + r0 * ldq, ldq, sd + r0);
    };
    if (threaded)
      parallel_for(m, 8, rows);
    else
      rows(0, m);
    if (spec_.static_act && g_count_clips.load(std::memory_order_relaxed)) count_clips(qd, m, ldq);
    if (spec_.static_act) return {qd, ldq, &act_scale_, 0, act_zp_};
    return {qd, ldq, sd, 1, 128};
  }

  void count_clips(const uint8_t* q, int64_t m, int64_t ldq) const {
    uint64_t clipped = 0;
    for (int64_t r = 0; r < m; ++r)
      for (int64_t i = 0; i < in_; ++i) clipped += q[r * ldq + i] == 0 || q[r * ldq + i] == 255;
    clipped_.fetch_add(clipped, std::memory_order_relaxed);
    quantized_.fetch_add(static_cast<uint64_t>(m * in_), std::memory_order_relaxed);
  }

 public:
  ActivationClipCount clip_count() const { return {clipped_.load(), quantized_.load()}; }

 private:
  QuantSpec spec_;
  kernels::Int8Isa isa_;
  kernels::PackedWeightsS8 weights_;
  std::vector<float> bias_;
  float act_scale_ = 0.f;
  int32_t act_zp_ = 0;
  mutable std::once_flag packed_once_;
  mutable std::unique_ptr<PackedLinear> packed_;
  mutable std::atomic<bool> packed_ready_{false};
  mutable std::atomic<uint64_t> clipped_{0}, quantized_{0};
};

}  // namespace

std::unique_ptr<Linear> make_w8_linear(PackedLinear p, kernels::Int8Isa isa) {
  return std::make_unique<Int8Linear>(p, isa);
}

std::unique_ptr<Linear> make_w8_linear(PackedLinear p) {
  return make_w8_linear(std::move(p), kernels::int8_isa_for(active_isa()));
}

}  // namespace shrink::detail

namespace shrink {

void set_activation_clip_counting(bool on) {
  detail::g_count_clips.store(on, std::memory_order_relaxed);
}

bool activation_clip_count(const Linear& layer, ActivationClipCount& out) {
  const auto* l = dynamic_cast<const detail::Int8Linear*>(&layer);
  if (!l || l->scheme() != "w8a8-static") return false;
  out = l->clip_count();
  return true;
}

}  // namespace shrink
