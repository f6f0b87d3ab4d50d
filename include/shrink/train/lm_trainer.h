// Training a causal language model: a token stream cut into chunks of ctx + 1 tokens (inputs and next-token
// targets), batches, the loop (AdamW, warmup + decay, clipping, accumulation, early stopping on validation
// perplexity keeping the best weights, a time budget; the same rules as train_classifier) and evaluation.
#pragma once

#include <shrink/train/decoder.h>
#include <shrink/train/trainer.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

namespace shrink::train {

struct LmData {
  std::vector<int32_t> tokens;  // the stream
  int64_t ctx = 0;              // inputs per chunk; a chunk is tokens[s .. s + ctx] (ctx + 1 tokens)
  std::vector<int64_t> starts;  // chunk start offsets
  size_t size() const { return starts.size(); }
};

// Non-overlapping chunks of `ctx` predictions; the last `val_fraction` of the stream (whole chunks) is validation,
// the rest training (a contiguous tail, so validation text is never seen in training).
std::pair<LmData, LmData> split_lm_data(const std::vector<int32_t>& tokens, int64_t ctx, double val_fraction);

struct LmBatch {
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> ids, targets;  // [batch][seq]; targets are the next tokens
};
LmBatch make_lm_batch(const LmData& d, const std::vector<int64_t>& idx);

struct LmTrainOptions : TrainSchedule {
  // The language model's defaults: one epoch of batches of 16, lr 1e-3, 5% warmup, cosine decay.
  LmTrainOptions() {
    epochs = 1;
    batch = 16;
    lr = 1e-3f;
    warmup_fraction = 0.05;
    decay = Decay::Cosine;
  }
  explicit LmTrainOptions(const TrainSchedule& s) : TrainSchedule(s) {}
  // Loss of one batch; default: cross-entropy of out.logits against b.targets. Distillation mixes in a teacher here
  // (idx are the chunks of the training data the batch holds).
  std::function<Var(const DecoderForward& out, const LmBatch& b, const std::vector<int64_t>& idx)> loss;
  std::function<void(int64_t step)> after_update;
};

struct LmProgress {
  int64_t step = 0, total_steps = 0;
  double loss = 0;      // running mean of the last updates
  double val_ppl = -1;  // last validation perplexity (-1: none yet)
  double elapsed_s = 0, eta_s = 0;
};

struct LmReport {
  int64_t steps = 0;
  double seconds = 0, tokens_per_s = 0, gemm_share = 0;
  double best_val_ppl = -1, initial_val_ppl = -1, final_train_loss = 0;
  bool early_stopped = false, time_budget_hit = false;
  std::vector<std::pair<int64_t, double>> val_curve;  // (step, perplexity)
  nlohmann::json to_json() const;
};

// Trains in place; with validation data the weights of the best validation perplexity are restored at the end.
LmReport train_lm(TrainableDecoder& model, const LmData& train, const LmData& val, const LmTrainOptions& opt,
                  const std::function<void(const LmProgress&)>& progress = {});
// Mean next-token NLL (nats) over every prediction of `d`, no gradients.
double lm_nll(const TrainableDecoder& model, const LmData& d, int batch = 16);

// The tokenizer file a model uses, to copy into a trained model's directory: `explicit_file` when given, else the
// first of tokenizer.json, tokenizer.model, tokenizer.bin in the model directory (or tokenizer.bin beside a
// llama2.c .bin). Throws naming the model and what was looked for.
std::filesystem::path tokenizer_file_of(const std::filesystem::path& model, const std::filesystem::path& explicit_file);

// A byte-level tokenizer.json (GPT-2 byte alphabet, no merges: one token per byte, 256 ids, plus <|endoftext|>
// as 256) for LMs trained from scratch on any text.
nlohmann::json byte_level_tokenizer_json();

}  // namespace shrink::train
