// Pruning: unstructured magnitude masks, structured removal of attention heads and FFN neurons (by weight norms or
// first-order Taylor importance) that physically shrinks the matrices, and the gradual prune -> fine-tune schedule.
#pragma once

#include <shrink/core/tensor.h>
#include <shrink/formats/config.h>
#include <shrink/train/trainer.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace shrink::prune {

// ---- the shape of a structurally pruned encoder (BERT / DistilBERT / ViT) ----

// Per layer: the original ids of the heads still present, and the FFN width. config.json records them as Hugging
// Face's `pruned_heads` ({"layer": [head ids]}, what BertModel.prune_heads removed) and shrink's
// `shrink_pruning.intermediate_sizes` (one width per layer; Hugging Face has no per-layer width).
struct EncoderShape {
  std::vector<std::vector<int>> heads;
  std::vector<int64_t> ffn;
};
// The shape config.json describes (unpruned: every head, intermediate_size everywhere). Throws naming the field
// when `pruned_heads` or `shrink_pruning` is malformed (layer or head out of range, wrong width count).
EncoderShape encoder_shape(const ModelConfig& c);
// Writes `s` into c.raw (pruned_heads, shrink_pruning.intermediate_sizes); the inverse of encoder_shape.
void record_encoder_shape(ModelConfig& c, const EncoderShape& s);

// Hugging Face names (without ".weight") of one encoder block's linears.
struct BlockLinears {
  std::string q, k, v, o, ffn_in, ffn_out;
};
// Every block of a bert / distilbert / vit checkpoint (prefix "bert." / "distilbert." / "vit." or none, as in `t`).
std::vector<BlockLinears> encoder_blocks(const ModelConfig& c, const TensorMap& t);

// ---- schedule ----

// Zhu & Gupta's cubic ramp: s_t = s_f + (s_i - s_f) (1 - t / n)^3 for step t of n (t = 0: s_i, t = n: s_f).
double cubic_sparsity(double final_sparsity, int step, int steps, double initial_sparsity = 0.0);

// ---- unstructured (magnitude) ----

// The weight tensors magnitude pruning touches by default: the matrices of the transformer blocks (attention and
// FFN / MLP linears of bert, distilbert, llama, gpt2 names), not embeddings, norms or heads.
std::vector<std::string> default_prunable_weights(const TensorMap& t);
// Keep-masks (1 = keep) that zero `sparsity` of the weights with the smallest |w|: one threshold over all of them
// (global) or `sparsity` of each tensor (per layer). Exactly round(sparsity * n) values are dropped.
using Masks = std::map<std::string, std::vector<uint8_t>>;
Masks magnitude_masks(const TensorMap& t, const std::vector<std::string>& weights, double sparsity, bool global);
// Zeros the masked values in place (the tensors must be owned F32: see own_f32).
void apply_masks(TensorMap& t, const Masks& masks);
// Share of exact zeros over `weights`.
double zero_fraction(const TensorMap& t, const std::vector<std::string>& weights);
// Every tensor as an owned F32 copy (checkpoint views are read-only mappings); non-float tensors are kept as they are.
TensorMap own_f32(const TensorMap& t);

// ---- structured (heads and FFN neurons) ----

enum class Importance { Norm, Taylor };
Importance parse_importance(const std::string& name);  // "norm" | "taylor"

// [layer][current index] importance of each present head / neuron (higher = more important).
struct Scores {
  std::vector<std::vector<double>> heads, neurons;
};
// Norm: sqrt of the summed squares of the head's q/k/v rows and output-dense columns (of the neuron's input row and
// output column). Biases are not counted.
Scores norm_scores(const ModelConfig& c, const TensorMap& t);
// Taylor (first order): sum over the same weights of |w * dL/dw|, L the cross-entropy of `batches` calibration
// batches of `batch` examples from `calib` (accumulated batch by batch), dropout off.
Scores taylor_scores(const train::TrainableEncoder& model, const train::ClassifySource& calib, int batches, int batch);

// Current indices to remove, per layer.
struct Removal {
  std::vector<std::vector<int>> heads, neurons;
};
// The lowest-scoring heads / neurons to remove so that `head_fraction` of the ORIGINAL heads and `ffn_fraction` of
// the original FFN width are gone (rounded to whole heads / neurons). Per layer (each layer keeps its share), or
// global (one ranking over all layers of scores normalised by each layer's mean; a layer may lose everything).
Removal plan_removal(const ModelConfig& c, const Scores& s, double head_fraction, double ffn_fraction, bool global);
// Physically removes them: q/k/v out-rows and attention-output in-columns of heads, intermediate out-rows and
// output in-columns of neurons (t must be owned F32). Updates c (pruned_heads with original ids, FFN widths).
void remove_structures(ModelConfig& c, TensorMap& t, const Removal& r);

// Elements of all tensors.
int64_t count_parameters(const TensorMap& t);

// ---- the prune -> fine-tune driver for classifiers ----

enum class Method { Magnitude, Structured };
Method parse_method(const std::string& name);  // "magnitude" | "structured"

struct PruneOptions {
  Method method = Method::Structured;
  double sparsity = 0.5;          // final share of weights (magnitude) or of heads and FFN neurons (structured) removed
  int steps = 1;                  // prune -> fine-tune cycles on the cubic ramp (1: one-shot)
  bool heads = true, ffn = true;  // structured: what to remove
  bool global = false;            // magnitude: one threshold; structured: one ranking over layers
  Importance importance = Importance::Norm;
  int calib_batches = 8;      // Taylor importance
  double max_drop = 0.5;      // validation-accuracy points below the dense model that stop the schedule
  train::TrainOptions train;  // recovery fine-tuning per step (epochs = 0: none)
  bool recover = true;
};

struct PruneStep {
  int step = 0;
  double target = 0;    // sparsity this step aims at
  double achieved = 0;  // magnitude: zero share of the pruned weights; structured: removed share of heads+FFN params
  double val_accuracy = -1;
  double drop_points = 0;  // 100 x (dense - this step's validation accuracy); 0 without validation data
  int64_t parameters = 0;
  double seconds = 0;
  bool accepted = false;  // within the drop budget (the model kept so far)
};

struct PruneResult {
  ModelConfig config;
  TensorMap tensors;  // the last accepted model (the dense one when even the first step broke the budget)
  double dense_accuracy = -1;
  int64_t dense_parameters = 0;
  std::vector<PruneStep> steps;
  bool stopped_early = false;
};

// Runs the schedule on a classifier (bert / distilbert / vit): dense validation accuracy, then for each step prune to
// the step's target, fine-tune (masks kept for magnitude), evaluate; stops when accuracy falls more than max_drop
// points below the dense model and returns the last model within the budget.
PruneResult prune_classifier(const ModelConfig& config, const TensorMap& tensors, const train::ClassifySource& train,
                             const train::ClassifySource& val, const PruneOptions& opt,
                             const std::function<void(const PruneStep&)>& on_step = {});

}  // namespace shrink::prune
