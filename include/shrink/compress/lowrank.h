// Low-rank factorization: truncated SVD of a Linear's weight (rank from a target or an energy threshold), the
// two-matrix Linear y = B (A x) + bias that runs the factors, and the pass that rewrites chosen slots of a Model.
#pragma once

#include <shrink/core/tensor.h>
#include <shrink/models/model.h>
#include <shrink/ops/linear.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace shrink {

// ---- truncated SVD ----
struct TruncatedSvd {
  std::vector<double> sigma;  // the leading singular values, descending (at least `rank` of them)
  double total_energy = 0;    // sum of all sigma^2 (= squared Frobenius norm of the matrix)
  int64_t rank = 0;           // chosen rank
  Tensor a, b;                // F32: a [rank, in], b [out, rank], b * a = the rank-`rank` approximation of w
  bool randomized = false;    // sketched (large matrices) rather than exact
};

struct SvdOptions {
  int64_t rank = 0;      // > 0: this rank
  double energy = 0;     // else: smallest rank whose sum of sigma^2 reaches this share of the total (0 < e <= 1)
  int64_t max_rank = 0;  // > 0: never above this (the pass passes the rank beyond which factors are not smaller)
  // Matrices whose smaller side exceeds this use a randomized range finder (power iterations) instead of the
  // exact eigendecomposition of the Gram matrix.
  int64_t exact_limit = 1024;
  int power_iterations = 3;
  uint64_t seed = 0;
};

// Smallest r with sum_{i<r} sigma_i^2 >= energy * total (sigma descending); sigma.size() when never reached.
int64_t rank_for_energy(const std::vector<double>& sigma, double total_energy, double energy);

// Truncated SVD of w ([out, in], any float dtype). The factors split sigma evenly (b = U sqrt(S), a = sqrt(S) V^T)
// so neither factor is badly scaled for fine-tuning.
TruncatedSvd truncated_svd(const Tensor& w, const SvdOptions& opt);

// ---- the two-matrix Linear ----
// y = B (A x) + bias; a [r, in], b [out, r], bias [out] or undefined. Dense factors run through the fp32 GEMM/GEMV
// kernels. Either factor may instead be quantized (shrink quantize on a low-rank model): each is then its own packed
// Linear (ops/qlinear.h), and a packed B carries the bias.
class LowRankLinear : public Linear {
 public:
  LowRankLinear(Tensor a, Tensor b, Tensor bias);
  // Quantized factors (packed Linears): a maps in -> r, b maps r -> out and adds the layer's bias.
  LowRankLinear(std::unique_ptr<Linear> a, std::unique_ptr<Linear> b);
  void forward(const float* x, int64_t m, float* y) const override;
  std::string scheme() const override;  // "lowrank-r<rank>", with the factors' schemes when quantized
  size_t weight_bytes() const override;
  int64_t rank() const { return la_->out_features(); }
  // The dense factors (undefined for a quantized factor) and the bias kept beside them (undefined when packed B
  // carries it).
  const Tensor& a() const { return a_; }
  const Tensor& b() const { return b_; }
  const Tensor& bias() const { return bias_; }
  // The packed factors, or null for a dense one.
  const PackedLinear* packed_a() const { return la_->packed(); }
  const PackedLinear* packed_b() const { return lb_->packed(); }
  bool quantized() const { return packed_a() || packed_b(); }

 private:
  Tensor a_, b_, bias_;
  std::unique_ptr<Linear> la_, lb_;
};

// The low-rank layer behind a Linear, or null.
const LowRankLinear* as_lowrank(const Linear* l);

// The packed matrices of a slot, under the prefix of their tensor names in a model file: a packed slot under its
// own name, a low-rank slot's quantized factors under `<slot>.lowrank_A` / `<slot>.lowrank_B`; none when dense.
std::vector<std::pair<std::string, const PackedLinear*>> packed_parts(const LinearSlot& s);

// Tensor names in a model file: `<slot>.lowrank_A` F32 [r, in], `<slot>.lowrank_B` F32 [out, r], `<slot>.bias`.
// config.json records {"shrink_lowrank": {"format_version": 1, "layers": {"<slot>": rank}}}. A quantized factor is
// saved as a packed layer named `<slot>.lowrank_A` / `<slot>.lowrank_B` (its tensors `<slot>.lowrank_A.weight`,
// `.weight_scale`, ...; its scheme under that name in quantization_config.shrink.layers); a packed B holds the bias.
constexpr const char* kLowRankA = "lowrank_A";
constexpr const char* kLowRankB = "lowrank_B";
constexpr const char* kLowRankConfigKey = "shrink_lowrank";

// ---- the pass ----
struct LowRankOptions {
  int64_t rank = 0;  // one of rank / energy
  double energy = 0;
  // ECMAScript regex searched in slot names; empty: every encoder/decoder block Linear (not classifier heads,
  // poolers or lm_head).
  std::string layers;
  uint64_t seed = 0;
};

struct LayerLowRank {
  std::string name;
  int64_t in = 0, out = 0, rank = 0;  // rank 0: skipped
  double energy_kept = 0;             // share of sum sigma^2 kept (exact SVD; a lower bound when randomized)
  size_t bytes_before = 0, bytes_after = 0;
  std::string note;  // why skipped, "randomized SVD"
  double ms = 0;
};

struct LowRankReport {
  std::vector<LayerLowRank> layers;
  size_t bytes_before = 0, bytes_after = 0;  // over the selected linears
  int factored = 0, skipped = 0;
  double time_ms = 0;
};

// The default selection (block linears of the model's architecture).
std::string default_lowrank_layers(const Model& model);

// Replaces each selected dense slot by a LowRankLinear, skipping (and saying so) layers whose factors would not be
// smaller (rank * (in + out) >= in * out). Throws before changing anything on a bad option or pattern, on a pattern
// that selects nothing, or on a selected slot that is not dense (quantized or already low-rank).
LowRankReport lowrank_model(Model& model, const LowRankOptions& opt);

}  // namespace shrink
