// Knowledge distillation (Hinton et al.): a student with fewer and/or narrower layers learns from a teacher's
// temperature-softened distribution, loss = alpha * CE(hard) + (1 - alpha) * T^2 * KL(teacher_T || student_T), plus
// optional hidden-state matching along a layer map. For classifiers (TrainableEncoder) and LMs (TrainableDecoder).
#pragma once

#include <shrink/formats/config.h>
#include <shrink/train/decoder.h>
#include <shrink/train/encoder.h>
#include <shrink/train/lm_trainer.h>
#include <shrink/train/trainer.h>

#include <string>
#include <vector>

namespace shrink::train {

struct KdOptions {
  float temperature = 4.f;
  float alpha = 0.4f;          // weight of the hard-label cross-entropy
  float hidden_weight = 0.f;   // weight of the hidden-state MSE (0: off)
  std::vector<int> layer_map;  // student layer i matches teacher layer layer_map[i]
};

// Student layer i <- teacher layer map[i]: evenly spaced over the teacher, including its first and last layers
// (one student layer: the last).
std::vector<int> default_layer_map(int teacher_layers, int student_layers);
// "0,2,4": strictly increasing teacher layer indices, one per student layer; throws naming the bad entry.
std::vector<int> parse_layer_map(const std::string& text, int teacher_layers, int student_layers);

// The teacher's config with `layers` layers and, when > 0, another hidden size (heads kept, head_dim follows) and
// feed-forward size.
ModelConfig student_config(const ModelConfig& teacher, int layers, int hidden, int ff);
// The teacher's tensors with teacher layer map[i] renamed to layer i (BERT "encoder.layer.N.", DistilBERT
// "transformer.layer.N.", LLaMA "model.layers.N."); other layers dropped, non-layer tensors kept.
TensorMap select_layers(const TensorMap& teacher, const std::vector<int>& map);

// alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)).
Var kd_loss(const Var& student_logits, const Tensor& teacher_logits, const std::vector<int32_t>& labels, float T,
            float alpha);
// Mean over i of MSE(proj[i](student[i + 1]), teacher[map[i] + 1]) (hidden[0] is the embeddings output);
// proj[i] undefined means identity (equal widths).
Var hidden_loss(const std::vector<Var>& student, const std::vector<Var>& teacher, const std::vector<int>& map,
                const std::vector<Var>& proj);
// Learned projections student width -> teacher width for hidden matching (empty when the widths are equal),
// registered in `extra` so the optimizer trains them (they are not saved with the student).
std::vector<Var> make_projections(int student_layers, int64_t student_width, int64_t teacher_width, uint64_t seed,
                                  std::vector<NamedParam>& extra);

// Trains `student` on `train` with the teacher's soft targets (teacher in evaluation mode: no dropout). Without
// hidden matching the teacher's logits are computed once up front. kd.alpha = 1 and hidden_weight = 0 is plain
// training.
TrainReport distill_classifier(TrainableEncoder& student, const TrainableEncoder& teacher, const ClassifySource& train,
                               const ClassifySource& val, TrainOptions opt, const KdOptions& kd,
                               const std::function<void(const TrainProgress&)>& progress = {});
LmReport distill_lm(TrainableDecoder& student, const TrainableDecoder& teacher, const LmData& train, const LmData& val,
                    LmTrainOptions opt, const KdOptions& kd,
                    const std::function<void(const LmProgress&)>& progress = {});

}  // namespace shrink::train
