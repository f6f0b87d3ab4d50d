// Unstructured magnitude pruning: keep-masks that zero the smallest |w| (one threshold over all chosen matrices, or
// the same share of each), applied to owned F32 copies of the checkpoint.
#include <shrink/compress/prune.h>
#include <shrink/core/error.h>

#include <algorithm>
#include <cmath>

namespace shrink::prune {

namespace {

bool is_block_matrix(const std::string& name, const Tensor& t) {
  if (t.rank() != 2 || !name.ends_with(".weight")) return false;
  const bool in_block = name.find(".layer.") != std::string::npos || name.find(".layers.") != std::string::npos ||
                        name.find(".h.") != std::string::npos || name.starts_with("layer.") ||
                        name.starts_with("layers.") || name.starts_with("h.");
  const bool excluded = name.find("norm") != std::string::npos || name.find("Norm") != std::string::npos ||
                        name.find("ln_") != std::string::npos || name.find("embed") != std::string::npos;
  return in_block && !excluded;
}

const Tensor& weight_of(const TensorMap& t, const std::string& name) {
  auto it = t.find(name);
  check(it != t.end(), "magnitude pruning: tensor '{}' is not in the model", name);
  check(it->second.rank() == 2, "magnitude pruning: tensor '{}' has shape {}; expected a weight matrix", name,
        shape_str(it->second.shape()));
  check(it->second.dtype() == DType::F32, "magnitude pruning: tensor '{}' is {}; expected F32 (convert first)", name,
        dtype_name(it->second.dtype()));
  return it->second;
}

// Masks dropping exactly k of the values of `parts` (all together), smallest |w| first; ties at the threshold are
// dropped in order of appearance.
void mask_smallest(const std::vector<const Tensor*>& parts, const std::vector<std::vector<uint8_t>*>& masks,
                   int64_t k) {
  int64_t n = 0;
  for (const Tensor* p : parts) n += p->numel();
  for (auto* m : masks) std::fill(m->begin(), m->end(), uint8_t{1});
  if (k <= 0 || n == 0) return;
  std::vector<float> a;
  a.reserve(static_cast<size_t>(n));
  for (const Tensor* p : parts)
    for (int64_t i = 0; i < p->numel(); ++i) a.push_back(std::fabs(p->data<float>()[i]));
  k = std::min(k, n);
  std::nth_element(a.begin(), a.begin() + (k - 1), a.end());
  const float thr = a[k - 1];
  int64_t below = 0;
  for (const Tensor* p : parts)
    for (int64_t i = 0; i < p->numel(); ++i) below += std::fabs(p->data<float>()[i]) < thr;
  int64_t ties = k - below;  // values equal to thr that must go too
  for (size_t j = 0; j < parts.size(); ++j) {
    const float* w = parts[j]->data<float>();
    std::vector<uint8_t>& m = *masks[j];
    for (int64_t i = 0; i < parts[j]->numel(); ++i) {
      const float x = std::fabs(w[i]);
      if (x < thr || (x == thr && ties > 0 && (--ties, true))) m[i] = 0;
    }
  }
}

}  // namespace

std::vector<std::string> default_prunable_weights(const TensorMap& t) {
  std::vector<std::string> v;
  for (const auto& [name, x] : t)
    if (is_block_matrix(name, x)) v.push_back(name);
  return v;
}

Masks magnitude_masks(const TensorMap& t, const std::vector<std::string>& weights, double sparsity, bool global) {
  check(sparsity >= 0.0 && sparsity < 1.0, "magnitude pruning: sparsity {} is outside [0, 1)", sparsity);
  check(!weights.empty(),
        "magnitude pruning: no weight matrices to prune (the model has no transformer-block linears)");
  Masks masks;
  std::vector<const Tensor*> parts;
  std::vector<std::vector<uint8_t>*> ms;
  for (const auto& name : weights) {
    const Tensor& w = weight_of(t, name);
    auto& m = masks[name];
    m.assign(static_cast<size_t>(w.numel()), 1);
    parts.push_back(&w);
    ms.push_back(&m);
  }
  if (global) {
    int64_t n = 0;
    for (const Tensor* p : parts) n += p->numel();
    mask_smallest(parts, ms, std::llround(sparsity * static_cast<double>(n)));
  } else {
    for (size_t j = 0; j < parts.size(); ++j)
      mask_smallest({parts[j]}, {ms[j]}, std::llround(sparsity * static_cast<double>(parts[j]->numel())));
  }
  return masks;
}

void apply_masks(TensorMap& t, const Masks& masks) {
  for (const auto& [name, m] : masks) {
    auto it = t.find(name);
    check(it != t.end() && it->second.dtype() == DType::F32 && it->second.numel() == static_cast<int64_t>(m.size()),
          "pruning mask for '{}' does not match the model's tensor (missing, not F32 or another size)", name);
    float* w = it->second.data<float>();
    for (size_t i = 0; i < m.size(); ++i)
      if (!m[i]) w[i] = 0.f;
  }
}

double zero_fraction(const TensorMap& t, const std::vector<std::string>& weights) {
  int64_t n = 0, z = 0;
  for (const auto& name : weights) {
    const Tensor& w = weight_of(t, name);
    n += w.numel();
    for (int64_t i = 0; i < w.numel(); ++i) z += w.data<float>()[i] == 0.f;
  }
  return n ? static_cast<double>(z) / static_cast<double>(n) : 0.0;
}

TensorMap own_f32(const TensorMap& t) {
  TensorMap o;
  for (const auto& [name, x] : t) {
    const bool is_float = x.dtype() == DType::F32 || x.dtype() == DType::F16 || x.dtype() == DType::BF16;
    o[name] = is_float ? x.to_f32() : x.clone();
  }
  return o;
}

}  // namespace shrink::prune
