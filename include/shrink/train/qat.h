// Quantization-aware training of a TrainableEncoder (classifier) or TrainableDecoder (LLaMA LM): fake quantization of
// every selected Linear through linear_hook (W8A8 with per-tensor activation ranges observed then learned, or
// group-wise W4), the LM training loop with cross-entropy or self-distillation (KL to the fp32 model, LLM-QAT), and
// the conversion of the trained weights into the engine's packed model, so inference computes what training saw.
#pragma once

#include <shrink/models/model.h>
#include <shrink/ops/qlinear.h>
#include <shrink/train/decoder.h>
#include <shrink/train/encoder.h>
#include <shrink/train/lm_trainer.h>
#include <shrink/train/trainer.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace shrink::train {

struct QatOptions {
  // "w8a8" / "w8a8-static" (int8 per-channel weights, static per-tensor uint8 activations whose range is
  // trained) or "w4a16-g32|g64|g128[-asym]" (group-wise 4-bit weights, fp32 activations).
  QuantSpec spec;
  // Slots left in fp32 (ECMAScript regexes searched in the slot name), in addition to the defaults when
  // default_skips: the quantize pass's defaults (encoders ^classifier$ and ^pre_classifier$, decoders ^lm_head$),
  // so the converted model is what `shrink quantize` would produce.
  std::vector<std::string> skip;
  bool default_skips = true;
  // W8A8: during the first `observe_steps` optimizer updates a slot's input range follows an exponential moving
  // average of the batch min/max (momentum `ema`); afterwards lo/hi are trained by the optimizer (LSQ-style
  // gradients of fake_quant_a8).
  int observe_steps = 50;
  float ema = 0.9f;
};

// Installs the fake-quant hook on a model and owns the per-slot ranges (model.extra_parameters, named
// "<slot>.input_lo" / "<slot>.input_hi", no weight decay). The model must outlive the Qat object's use, and the
// hook stays installed after this object is gone (it shares the state).
class Qat {
 public:
  Qat(TrainableEncoder& model, const QatOptions& opt);
  Qat(TrainableDecoder& model, const QatOptions& opt);

  const QatOptions& options() const;
  // The slots that are fake-quantized, in model order.
  const std::vector<std::string>& slots() const;
  // W8A8: whether training forwards still update the ranges from the batch (true until observe_steps updates).
  bool observing() const;
  void set_observing(bool on);
  // Goes into TrainOptions::after_update: ends observation after observe_steps updates.
  void after_update(int64_t step);
  // W8A8: the current input range of a slot, and the engine's static activation scale / zero point for it.
  std::pair<float, float> input_range(const std::string& slot) const;
  // The scheme the engine stores `slot` in ("w8a8-static" with the learned activation scale, or the W4 scheme).
  QuantSpec slot_spec(const std::string& slot) const;

  struct State;

 private:
  using Hook = std::function<Var(const std::string&, const Var&, const Var&, const Var&)>;
  // Picks the slots of `linears` not skipped, registers the W8A8 ranges in `extra` and installs the hook.
  void install(const std::vector<std::string>& linears, const std::vector<std::string>& default_skips, Hook& hook,
               std::vector<NamedParam>& extra);
  std::shared_ptr<State> s_;
};

// The engine model of the trained weights (build_model on model.state()), with every QAT slot replaced by its
// packed Linear (make_packed_linear of quantize_linear_weights: the codes the fake quantization used). The result
// saves with save_model.
std::unique_ptr<Model> convert_qat(const TrainableEncoder& model, const Qat& qat);
std::unique_ptr<Model> convert_qat(const TrainableDecoder& model, const Qat& qat);
// Replaces every slot of `slots` in the engine model by its packed Linear in scheme spec(slot) (round-to-nearest by
// the scalar references; W8A8 static with the spec's activation scale). Throws naming a slot the model lacks.
void pack_linears(Model& model, const std::vector<std::string>& slots,
                  const std::function<QuantSpec(const std::string&)>& spec);

// The loss of QAT on a language model: cross-entropy on the text's next tokens, or (LLM-QAT) KL(fp32 || QAT) of the
// next-token distributions, the fp32 model being the weights before QAT (self-distillation: no labels needed).
enum class QatLoss { CrossEntropy, Kl };
QatLoss parse_qat_loss(const std::string& name);  // "ce" | "kl"; throws naming the valid ones
// LLM-QAT's data-free training text: `sequences` samples of `length` tokens each from the model itself (BOS, then
// temperature-1 sampling seeded by seed + i; a sample ending at EOS early is shorter), concatenated.
std::vector<int32_t> sample_training_tokens(const DecoderModel& model, int sequences, int length, uint64_t seed);
// Trains `model` (already hooked by `qat`) in place on `train`; opt.after_update also ends the W8A8 observation
// phase. CrossEntropy: train_lm, validation perplexity on `val` picks the weights kept. Kl: the teacher is an fp32 copy
// of the weights as they are when called, `val` is not used and the last weights are kept (perplexity is no measure
// of faithfulness to fp32; compare the KLD on held-out text instead).
LmReport qat_lm(TrainableDecoder& model, Qat& qat, const LmData& train, const LmData& val, LmTrainOptions opt,
                QatLoss loss, const std::function<void(const LmProgress&)>& progress = {});

// Predicted labels of an engine encoder on a classification source (batches of `batch` rows), for comparing the
// converted model with the training-time model on the same rows.
std::vector<int> engine_predict(const EncoderModel& model, const ClassifySource& d, int batch = 64);
double engine_accuracy(const EncoderModel& model, const ClassifySource& d, int batch = 64);

}  // namespace shrink::train
