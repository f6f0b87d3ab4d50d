// The prune -> fine-tune schedule for classifiers: cubic sparsity ramp over the steps, recovery fine-tuning (masks
// re-applied after every update for magnitude pruning), early stop on the validation-accuracy budget.
#include <shrink/compress/prune.h>
#include <shrink/core/error.h>
#include <shrink/core/timer.h>

#include <cmath>

namespace shrink::prune {

namespace {

// Elements of the block linears (weights and biases) that structured pruning shrinks.
int64_t block_parameters(const ModelConfig& c, const TensorMap& t) {
  int64_t n = 0;
  for (const BlockLinears& b : encoder_blocks(c, t))
    for (const std::string* s : {&b.q, &b.k, &b.v, &b.o, &b.ffn_in, &b.ffn_out})
      for (const char* part : {".weight", ".bias"})
        if (auto it = t.find(*s + part); it != t.end()) n += it->second.numel();
  return n;
}

}  // namespace

PruneResult prune_classifier(const ModelConfig& config, const TensorMap& tensors, const train::ClassifySource& train,
                             const train::ClassifySource& val, const PruneOptions& opt,
                             const std::function<void(const PruneStep&)>& on_step) {
  check(opt.sparsity >= 0.0 && opt.sparsity < 1.0, "pruning: --sparsity {} is outside [0, 1)", opt.sparsity);
  check(opt.steps >= 1, "pruning: --steps {}; expected at least 1", opt.steps);
  check(opt.method == Method::Magnitude || opt.heads || opt.ffn,
        "structured pruning: neither heads nor FFN neurons are selected (--heads-only and --ffn-only exclude each "
        "other)");
  PruneResult res;
  ModelConfig cfg = config;
  TensorMap cur = own_f32(tensors);
  const std::vector<std::string> weights =
      opt.method == Method::Magnitude ? default_prunable_weights(cur) : std::vector<std::string>{};
  if (opt.method == Method::Magnitude)
    check(!weights.empty(), "magnitude pruning: the model has no transformer-block weight matrices to prune");
  else
    encoder_blocks(cfg, cur);  // names the unsupported model type up front
  const int64_t dense_block = opt.method == Method::Structured ? block_parameters(cfg, cur) : 0;
  {
    train::TrainableEncoder dense(cfg, cur, opt.train.seed);
    res.dense_accuracy = val.size() > 0 ? train::accuracy(dense, val) : -1;
  }
  res.dense_parameters = count_parameters(cur);
  res.config = cfg;
  res.tensors = cur;
  for (int step = 1; step <= opt.steps; ++step) {
    Timer timer;
    PruneStep ps;
    ps.step = step;
    ps.target = cubic_sparsity(opt.sparsity, step, opt.steps);
    Masks masks;
    if (opt.method == Method::Structured) {
      Scores s;
      if (opt.importance == Importance::Taylor) {
        train::TrainableEncoder m(cfg, cur, opt.train.seed);
        s = taylor_scores(m, train, opt.calib_batches, opt.train.batch);
      } else {
        s = norm_scores(cfg, cur);
      }
      const Removal r = plan_removal(cfg, s, opt.heads ? ps.target : 0.0, opt.ffn ? ps.target : 0.0, opt.global);
      remove_structures(cfg, cur, r);
    } else {
      masks = magnitude_masks(cur, weights, ps.target, opt.global);
      apply_masks(cur, masks);
    }
    train::TrainableEncoder m(cfg, cur, opt.train.seed);
    if (opt.recover && opt.train.epochs > 0 && train.size() > 0) {
      train::TrainOptions o = opt.train;
      if (!masks.empty())
        o.after_update = [&](int64_t) {
          for (const auto& [name, mask] : masks) {
            train::Var p = m.param(name);
            float* w = p.mutable_data();
            for (size_t i = 0; i < mask.size(); ++i)
              if (!mask[i]) w[i] = 0.f;
          }
        };
      train::train_classifier(m, train, val, o);
    }
    ps.val_accuracy = val.size() > 0 ? train::accuracy(m, val) : -1;
    cur = m.state();  // copies: the accepted model never aliases the next step's tensors
    ps.parameters = count_parameters(cur);
    ps.achieved = opt.method == Method::Magnitude
                      ? zero_fraction(cur, weights)
                      : 1.0 - static_cast<double>(block_parameters(cfg, cur)) / static_cast<double>(dense_block);
    ps.drop_points = res.dense_accuracy < 0 ? 0.0 : 100.0 * (res.dense_accuracy - ps.val_accuracy);
    ps.accepted = res.dense_accuracy < 0 || ps.drop_points <= opt.max_drop + 1e-9;
    ps.seconds = timer.elapsed_ms() * 1e-3;
    res.steps.push_back(ps);
    if (on_step) on_step(ps);
    if (!ps.accepted) {
      res.stopped_early = true;
      break;
    }
    res.config = cfg;
    res.tensors = cur;
  }
  return res;
}

}  // namespace shrink::prune
