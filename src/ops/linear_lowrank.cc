// The two-matrix Linear y = B (A x) + bias: two Linears (dense fp32: packed GEMM for batches, GEMV for m <= 4; or
// packed quantized factors) with the rank-sized intermediate in a per-call buffer.
#include <fmt/format.h>
#include <shrink/compress/lowrank.h>
#include <shrink/core/error.h>
#include <shrink/ops/qlinear.h>

#include <vector>

namespace shrink {

LowRankLinear::LowRankLinear(Tensor a, Tensor b, Tensor bias) {
  check(a.defined() && b.defined() && a.rank() == 2 && b.rank() == 2 && a.dim(0) > 0 && b.dim(1) == a.dim(0),
        "low-rank Linear: factors A {} and B {}; expected A [r, in] and B [out, r] with the same r > 0",
        a.defined() ? shape_str(a.shape()) : "missing", b.defined() ? shape_str(b.shape()) : "missing");
  const bool has_bias = bias.defined() && bias.numel() > 0;
  check(!has_bias || bias.numel() == b.dim(0), "low-rank Linear: bias has {} values, expected {} (B's rows)",
        has_bias ? bias.numel() : 0, b.dim(0));
  a_ = a.dtype() == DType::F32 ? a : a.to_f32();
  b_ = b.dtype() == DType::F32 ? b : b.to_f32();
  if (has_bias) bias_ = bias.dtype() == DType::F32 ? bias : bias.to_f32();
  in_ = a_.dim(1);
  out_ = b_.dim(0);
  la_ = make_dense_linear(a_, nullptr);
  lb_ = make_dense_linear(b_, has_bias ? &bias_ : nullptr);
}

LowRankLinear::LowRankLinear(std::unique_ptr<Linear> a, std::unique_ptr<Linear> b)
    : la_(std::move(a)), lb_(std::move(b)) {
  check(la_ && lb_ && la_->out_features() > 0 && lb_->in_features() == la_->out_features(),
        "low-rank Linear: factor A maps {} -> {} and B {} -> {}; expected the same rank r > 0 between them",
        la_ ? la_->in_features() : 0, la_ ? la_->out_features() : 0, lb_ ? lb_->in_features() : 0,
        lb_ ? lb_->out_features() : 0);
  check(la_->packed() && lb_->packed(), "low-rank Linear: the two-Linear form is for quantized factors; got {} and {}",
        la_->scheme(), lb_->scheme());
  in_ = la_->in_features();
  out_ = lb_->out_features();
}

void LowRankLinear::forward(const float* x, int64_t m, float* y) const {
  std::vector<float> t(static_cast<size_t>(m * rank()));
  la_->forward(x, m, t.data());
  lb_->forward(t.data(), m, y);
}

std::string LowRankLinear::scheme() const {
  if (!quantized()) return fmt::format("lowrank-r{}", rank());
  const std::string sa = la_->scheme(), sb = lb_->scheme();
  return sa == sb ? fmt::format("lowrank-r{}+{}", rank(), sa) : fmt::format("lowrank-r{}+{}/{}", rank(), sa, sb);
}

size_t LowRankLinear::weight_bytes() const {
  return la_->weight_bytes() + lb_->weight_bytes();
}

const LowRankLinear* as_lowrank(const Linear* l) {
  return dynamic_cast<const LowRankLinear*>(l);
}

std::vector<std::pair<std::string, const PackedLinear*>> packed_parts(const LinearSlot& s) {
  std::vector<std::pair<std::string, const PackedLinear*>> parts;
  if (const PackedLinear* p = s.impl->packed(); p && p->spec.scheme != WeightScheme::F32) parts.emplace_back(s.name, p);
  if (const LowRankLinear* lr = as_lowrank(s.impl.get())) {
    if (const PackedLinear* p = lr->packed_a()) parts.emplace_back(s.name + "." + kLowRankA, p);
    if (const PackedLinear* p = lr->packed_b()) parts.emplace_back(s.name + "." + kLowRankB, p);
  }
  return parts;
}

}  // namespace shrink
