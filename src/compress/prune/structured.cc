// Structured pruning of encoder heads and FFN neurons: importance scores (weight norms, first-order Taylor), the
// choice of what to remove, and the physical removal of rows and columns from the checkpoint tensors.
#include <shrink/compress/prune.h>
#include <shrink/core/error.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace shrink::prune {

namespace {

const Tensor& tensor_of(const TensorMap& t, const std::string& name) {
  auto it = t.find(name);
  check(it != t.end(), "structured pruning: tensor '{}' is missing; expected a bert / distilbert / vit checkpoint",
        name);
  check(it->second.dtype() == DType::F32, "structured pruning: tensor '{}' is {}; expected F32 (convert first)", name,
        dtype_name(it->second.dtype()));
  return it->second;
}

// Sum over rows [r0, r1) (or columns [c0, c1) when `cols`) of w^2 (g null) or |w * g|.
double block_sum(const Tensor& w, const float* g, int64_t a0, int64_t a1, bool cols) {
  const int64_t R = w.dim(0), C = w.dim(1);
  const float* x = w.data<float>();
  double s = 0;
  const int64_t r0 = cols ? 0 : a0, r1 = cols ? R : a1, c0 = cols ? a0 : 0, c1 = cols ? a1 : C;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t i = r * C + c;
      s += g ? std::fabs(static_cast<double>(x[i]) * g[i]) : static_cast<double>(x[i]) * x[i];
    }
  return s;
}

// Heads and neurons present in `t` for layer `b`, checked against head_dim.
std::pair<int, int64_t> present(const ModelConfig& c, const TensorMap& t, const BlockLinears& b) {
  const Tensor& q = tensor_of(t, b.q + ".weight");
  check(q.rank() == 2 && q.dim(0) % c.head_dim == 0,
        "structured pruning: '{}.weight' has shape {}; expected [heads x {}, {}]", b.q, shape_str(q.shape()),
        c.head_dim, c.hidden_size);
  return {static_cast<int>(q.dim(0) / c.head_dim), tensor_of(t, b.ffn_in + ".weight").dim(0)};
}

// Scores of every layer; grad(name) gives the gradient of a weight (null: norm scores).
Scores scores_of(const ModelConfig& c, const TensorMap& t, const std::function<const float*(const std::string&)>& grad,
                 const Scores* add_to) {
  Scores s = add_to ? *add_to : Scores{};
  const auto blocks = encoder_blocks(c, t);
  s.heads.resize(blocks.size());
  s.neurons.resize(blocks.size());
  const int64_t hd = c.head_dim;
  for (size_t l = 0; l < blocks.size(); ++l) {
    const BlockLinears& b = blocks[l];
    auto [nh, nf] = present(c, t, b);
    s.heads[l].resize(nh, 0.0);
    s.neurons[l].resize(nf, 0.0);
    for (int h = 0; h < nh; ++h) {
      double v = 0;
      for (const std::string* n : {&b.q, &b.k, &b.v})
        v += block_sum(tensor_of(t, *n + ".weight"), grad(*n + ".weight"), h * hd, (h + 1) * hd, false);
      v += block_sum(tensor_of(t, b.o + ".weight"), grad(b.o + ".weight"), h * hd, (h + 1) * hd, true);
      s.heads[l][h] += v;
    }
    const Tensor& wi = tensor_of(t, b.ffn_in + ".weight");
    const Tensor& wo = tensor_of(t, b.ffn_out + ".weight");
    const float* gi = grad(b.ffn_in + ".weight");
    const float* go = grad(b.ffn_out + ".weight");
    for (int64_t j = 0; j < nf; ++j)
      s.neurons[l][j] += block_sum(wi, gi, j, j + 1, false) + block_sum(wo, go, j, j + 1, true);
  }
  return s;
}

Tensor keep_rows(const Tensor& w, const std::vector<int64_t>& rows) {
  const int64_t C = w.rank() == 2 ? w.dim(1) : 1;
  Shape shape = w.shape();
  shape[0] = static_cast<int64_t>(rows.size());
  Tensor o = Tensor::empty(DType::F32, shape);
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy_n(w.data<float>() + rows[i] * C, C, o.data<float>() + static_cast<int64_t>(i) * C);
  return o;
}

Tensor keep_cols(const Tensor& w, const std::vector<int64_t>& cols) {
  const int64_t R = w.dim(0), C = w.dim(1), n = static_cast<int64_t>(cols.size());
  Tensor o = Tensor::empty(DType::F32, {R, n});
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < n; ++j) o.data<float>()[r * n + j] = w.data<float>()[r * C + cols[j]];
  return o;
}

// Positions [0, n) not in `drop` (checked: in range, no repeats).
std::vector<int64_t> kept_positions(int64_t n, const std::vector<int>& drop, const char* what, size_t layer) {
  std::vector<uint8_t> gone(static_cast<size_t>(n), 0);
  for (int d : drop) {
    check(d >= 0 && d < n && !gone[d], "structured pruning: layer {}: {} index {} is out of range [0, {}) or repeated",
          layer, what, d, n);
    gone[d] = 1;
  }
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < n; ++i)
    if (!gone[i]) keep.push_back(i);
  return keep;
}

// The lowest-scoring entries to drop so that `keep_total` stay, over the groups (layers) of `scores`.
std::vector<std::vector<int>> choose(const std::vector<std::vector<double>>& scores, int64_t original_per_layer,
                                     double fraction, bool global) {
  std::vector<std::vector<int>> drop(scores.size());
  auto order_of = [](const std::vector<double>& v) {
    std::vector<int> o(v.size());
    std::iota(o.begin(), o.end(), 0);
    std::stable_sort(o.begin(), o.end(), [&](int a, int b) { return v[a] < v[b]; });
    return o;
  };
  if (!global) {
    const int64_t keep = original_per_layer - std::llround(fraction * static_cast<double>(original_per_layer));
    for (size_t l = 0; l < scores.size(); ++l) {
      const int64_t n = static_cast<int64_t>(scores[l].size());
      const auto o = order_of(scores[l]);
      for (int64_t i = 0; i < n - keep; ++i) drop[l].push_back(o[i]);
    }
    return drop;
  }
  const int64_t total = original_per_layer * static_cast<int64_t>(scores.size());
  const int64_t keep = total - std::llround(fraction * static_cast<double>(total));
  struct Entry {
    double score;
    size_t layer;
    int index;
  };
  std::vector<Entry> all;
  for (size_t l = 0; l < scores.size(); ++l) {
    // Layers differ in scale (norm growth, gradient size); normalising by the layer's mean compares shares.
    double mean = 0;
    for (double v : scores[l]) mean += v;
    mean = scores[l].empty() ? 1.0 : mean / static_cast<double>(scores[l].size());
    for (size_t i = 0; i < scores[l].size(); ++i)
      all.push_back({mean > 0 ? scores[l][i] / mean : 0.0, l, static_cast<int>(i)});
  }
  std::stable_sort(all.begin(), all.end(), [](const Entry& a, const Entry& b) { return a.score < b.score; });
  const int64_t n = static_cast<int64_t>(all.size());
  for (int64_t i = 0; i < n - keep; ++i) drop[all[i].layer].push_back(all[i].index);
  return drop;
}

}  // namespace

Scores norm_scores(const ModelConfig& c, const TensorMap& t) {
  Scores s = scores_of(
      c, t, [](const std::string&) -> const float* { return nullptr; }, nullptr);
  for (auto* group : {&s.heads, &s.neurons})
    for (auto& layer : *group)
      for (double& v : layer) v = std::sqrt(v);
  return s;
}

Scores taylor_scores(const train::TrainableEncoder& model, const train::ClassifySource& calib, int batches, int batch) {
  check(calib.size() > 0, "Taylor importance: no calibration examples (pass --data with labelled rows)");
  check(batches > 0 && batch > 0, "Taylor importance: {} batches of {}; expected positive counts", batches, batch);
  std::vector<train::Var> params;
  for (const auto& p : model.parameters()) params.push_back(p.var);
  TensorMap values;  // views of the live parameters (no copies) under their names
  for (const auto& p : model.parameters()) values[p.name] = p.var.value();
  std::mt19937 rng(0);
  Scores s;
  const int64_t n = static_cast<int64_t>(calib.size());
  for (int bi = 0; bi < batches; ++bi) {
    std::vector<int64_t> idx;
    std::vector<int32_t> labels;
    for (int i = 0; i < batch; ++i) {
      const int64_t r = (static_cast<int64_t>(bi) * batch + i) % n;
      idx.push_back(r);
      labels.push_back(calib.label(static_cast<size_t>(r)));
    }
    train::zero_grad(params);
    train::backward(train::cross_entropy(model.forward(calib.batch(idx), false, rng).logits, labels));
    s = scores_of(
        model.config(), values,
        [&](const std::string& name) -> const float* {
          const Tensor& g = model.param(name).grad();
          return g.defined() && g.raw() ? g.data<float>() : nullptr;
        },
        &s);
    if (static_cast<int64_t>(bi + 1) * batch >= n && bi + 1 < batches) break;  // every example seen once
  }
  train::zero_grad(params);
  return s;
}

Removal plan_removal(const ModelConfig& c, const Scores& s, double head_fraction, double ffn_fraction, bool global) {
  check(head_fraction >= 0 && head_fraction <= 1 && ffn_fraction >= 0 && ffn_fraction <= 1,
        "structured pruning: fractions {} (heads) / {} (FFN) are outside [0, 1]", head_fraction, ffn_fraction);
  check(static_cast<int>(s.heads.size()) == c.num_layers && static_cast<int>(s.neurons.size()) == c.num_layers,
        "structured pruning: scores for {} layers; the model has {}", s.heads.size(), c.num_layers);
  Removal r;
  r.heads = choose(s.heads, c.num_heads, head_fraction, global);
  r.neurons = choose(s.neurons, c.intermediate_size, ffn_fraction, global);
  return r;
}

void remove_structures(ModelConfig& c, TensorMap& t, const Removal& r) {
  const auto blocks = encoder_blocks(c, t);
  check(r.heads.size() == blocks.size() && r.neurons.size() == blocks.size(),
        "structured pruning: removal lists for {} / {} layers; the model has {}", r.heads.size(), r.neurons.size(),
        blocks.size());
  EncoderShape shape = encoder_shape(c);
  const int64_t hd = c.head_dim;
  for (size_t l = 0; l < blocks.size(); ++l) {
    const BlockLinears& b = blocks[l];
    auto [nh, nf] = present(c, t, b);
    check(nh == static_cast<int>(shape.heads[l].size()),
          "structured pruning: layer {} has {} heads in '{}.weight' but config.json (pruned_heads) says {}", l, nh, b.q,
          shape.heads[l].size());
    if (!r.heads[l].empty()) {
      const auto keep = kept_positions(nh, r.heads[l], "head", l);
      std::vector<int64_t> rows;
      std::vector<int> ids;
      for (int64_t h : keep) {
        ids.push_back(shape.heads[l][h]);
        for (int64_t i = 0; i < hd; ++i) rows.push_back(h * hd + i);
      }
      for (const std::string* n : {&b.q, &b.k, &b.v}) {
        t[*n + ".weight"] = keep_rows(tensor_of(t, *n + ".weight"), rows);
        t[*n + ".bias"] = keep_rows(tensor_of(t, *n + ".bias"), rows);
      }
      t[b.o + ".weight"] = keep_cols(tensor_of(t, b.o + ".weight"), rows);
      shape.heads[l] = ids;
    }
    if (!r.neurons[l].empty()) {
      const auto keep = kept_positions(nf, r.neurons[l], "FFN neuron", l);
      t[b.ffn_in + ".weight"] = keep_rows(tensor_of(t, b.ffn_in + ".weight"), keep);
      t[b.ffn_in + ".bias"] = keep_rows(tensor_of(t, b.ffn_in + ".bias"), keep);
      t[b.ffn_out + ".weight"] = keep_cols(tensor_of(t, b.ffn_out + ".weight"), keep);
      shape.ffn[l] = static_cast<int64_t>(keep.size());
    } else {
      shape.ffn[l] = nf;
    }
  }
  record_encoder_shape(c, shape);
}

}  // namespace shrink::prune
