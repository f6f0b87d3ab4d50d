// The two-matrix Linear y = B (A x) + bias: two dense fp32 Linears (packed GEMM for batches, GEMV for m <= 4)
// with the rank-sized intermediate in a per-call buffer.
#include <fmt/format.h>
#include <shrink/compress/lowrank.h>
#include <shrink/core/error.h>

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

void LowRankLinear::forward(const float* x, int64_t m, float* y) const {
  std::vector<float> t(static_cast<size_t>(m * rank()));
  la_->forward(x, m, t.data());
  lb_->forward(t.data(), m, y);
}

std::string LowRankLinear::scheme() const {
  return fmt::format("lowrank-r{}", rank());
}

size_t LowRankLinear::weight_bytes() const {
  return la_->weight_bytes() + lb_->weight_bytes();
}

const LowRankLinear* as_lowrank(const Linear* l) {
  return dynamic_cast<const LowRankLinear*>(l);
}

}  // namespace shrink
