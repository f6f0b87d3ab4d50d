// Knowledge distillation: layer maps, student configs and initialisation, the KD and hidden-state losses, and the
// classifier / LM drivers on top of train_classifier / train_lm (train/distill.h).
#include <shrink/core/error.h>
#include <shrink/train/distill.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <regex>
#include <set>
#include <sstream>

namespace shrink::train {

std::vector<int> default_layer_map(int teacher_layers, int student_layers) {
  check(student_layers >= 1 && student_layers <= teacher_layers,
        "distill: {} student layers from a teacher of {}; expected 1..{}", student_layers, teacher_layers,
        teacher_layers);
  std::vector<int> m;
  if (student_layers == 1) return {teacher_layers - 1};
  for (int i = 0; i < student_layers; ++i)
    m.push_back(static_cast<int>(std::lround(double(i) * (teacher_layers - 1) / (student_layers - 1))));
  return m;
}

std::vector<int> parse_layer_map(const std::string& text, int teacher_layers, int student_layers) {
  std::vector<int> m;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int v = -1;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    check(used > 0 && used == item.size() && v >= 0 && v < teacher_layers,
          "--layer-map entry '{}': expected a teacher layer index 0..{}", item, teacher_layers - 1);
    check(m.empty() || v > m.back(), "--layer-map {}: layer {} after {}; expected increasing teacher layers", text, v,
          m.empty() ? -1 : m.back());
    m.push_back(v);
  }
  check(static_cast<int>(m.size()) == student_layers,
        "--layer-map {} names {} teacher layers; expected one per student layer ({})", text, m.size(), student_layers);
  return m;
}

ModelConfig student_config(const ModelConfig& teacher, int layers, int hidden, int ff) {
  ModelConfig c = teacher;
  check(layers >= 1, "distill: --student-layers {}; expected >= 1", layers);
  c.num_layers = layers;
  if (hidden > 0) {
    check(hidden % c.num_heads == 0, "distill: --student-hidden {} is not a multiple of the teacher's {} heads", hidden,
          c.num_heads);
    c.hidden_size = hidden;
    c.head_dim = hidden / c.num_heads;
    check(c.head_dim % 2 == 0 || c.model_type != "llama",
          "distill: --student-hidden {} gives head_dim {}; RoPE needs an even head_dim", hidden, c.head_dim);
  }
  if (ff > 0) c.intermediate_size = ff;
  // A ViT is saved from its raw config.json fields (TrainableEncoder::save): they must describe the student.
  if (c.image_size > 0) c.raw = config_to_json(c);
  return c;
}

TensorMap select_layers(const TensorMap& teacher, const std::vector<int>& map) {
  static const std::regex kLayer(R"((^|\.)(layers?)\.(\d+)\.)");
  TensorMap out;
  for (const auto& [name, t] : teacher) {
    std::smatch m;
    if (!std::regex_search(name, m, kLayer)) {
      out.emplace(name, t);
      continue;
    }
    const int layer = std::stoi(m[3].str());
    auto it = std::find(map.begin(), map.end(), layer);
    if (it == map.end()) continue;
    const std::string renamed =
        m.prefix().str() + m[1].str() + m[2].str() + "." + std::to_string(it - map.begin()) + "." + m.suffix().str();
    out.emplace(renamed, t);
  }
  return out;
}

Var kd_loss(const Var& student_logits, const Tensor& teacher_logits, const std::vector<int32_t>& labels, float T,
            float alpha) {
  check(alpha >= 0.f && alpha <= 1.f, "distill: alpha {}; expected 0..1", alpha);
  check(T > 0.f, "distill: temperature {}; expected > 0", T);
  Var soft, hard;
  if (alpha < 1.f) soft = scale(kl_div(student_logits, teacher_logits, T), (1.f - alpha) * T * T);
  if (alpha > 0.f) hard = scale(cross_entropy(student_logits, labels), alpha);
  if (!soft.defined()) return hard;
  if (!hard.defined()) return soft;
  return add(hard, soft);
}

Var hidden_loss(const std::vector<Var>& student, const std::vector<Var>& teacher, const std::vector<int>& map,
                const std::vector<Var>& proj) {
  check(!map.empty() && student.size() >= map.size() + 1,
        "distill: hidden matching needs {} student hidden states; got {}", map.size() + 1, student.size());
  Var total;
  for (size_t i = 0; i < map.size(); ++i) {
    const size_t t = static_cast<size_t>(map[i]) + 1;
    check(t < teacher.size(), "distill: layer map names teacher layer {}; the teacher has {} layers", map[i],
          teacher.size() - 1);
    const Var s = i < proj.size() && proj[i].defined() ? linear(student[i + 1], proj[i], Var()) : student[i + 1];
    Var l = mse(s, teacher[t].value());
    total = total.defined() ? add(total, l) : l;
  }
  return scale(total, 1.f / static_cast<float>(map.size()));
}

std::vector<Var> make_projections(int student_layers, int64_t student_width, int64_t teacher_width, uint64_t seed,
                                  std::vector<NamedParam>& extra) {
  std::vector<Var> p;
  if (student_width == teacher_width) return p;
  std::mt19937 gen(static_cast<uint32_t>(seed + 77));
  std::normal_distribution<float> nd(0.f, 1.f / std::sqrt(static_cast<float>(student_width)));
  for (int i = 0; i < student_layers; ++i) {
    Tensor w = Tensor::empty(DType::F32, {teacher_width, student_width});
    for (int64_t k = 0; k < w.numel(); ++k) w.data<float>()[k] = nd(gen);
    p.push_back(parameter(std::move(w)));
    extra.push_back({"distill.hidden_projection." + std::to_string(i), p.back(), false});
  }
  return p;
}

TrainReport distill_classifier(TrainableEncoder& student, const TrainableEncoder& teacher, const ClassifySource& train,
                               const ClassifySource& val, TrainOptions opt, const KdOptions& kd,
                               const std::function<void(const TrainProgress&)>& progress) {
  check(student.config().num_labels == teacher.config().num_labels,
        "distill: student has {} labels, teacher {}; expected the same label set", student.config().num_labels,
        teacher.config().num_labels);
  const bool hidden = kd.hidden_weight > 0.f;
  const std::vector<int> map =
      kd.layer_map.empty() ? default_layer_map(teacher.config().num_layers, student.config().num_layers) : kd.layer_map;
  std::vector<Var> proj;
  if (hidden)
    proj = make_projections(student.config().num_layers, student.config().hidden_size, teacher.config().hidden_size,
                            opt.seed, student.extra_parameters);
  // Soft targets once: the teacher runs without dropout, so its logits are the same every epoch.
  const int C = teacher.config().num_labels;
  std::vector<float> cached;
  if (!hidden && kd.alpha < 1.f) {
    NoGradGuard ng;
    std::mt19937 rng(0);
    cached.resize(train.size() * C);
    for (size_t s = 0; s < train.size(); s += 64) {
      std::vector<int64_t> idx;
      for (size_t i = s; i < std::min(train.size(), s + 64); ++i) idx.push_back(static_cast<int64_t>(i));
      Var l = teacher.forward(train.batch(idx), false, rng).logits;
      std::copy(l.data(), l.data() + l.numel(), cached.begin() + static_cast<int64_t>(s) * C);
    }
  }
  opt.loss = [&](const EncoderForward& out, const EncoderBatch& b, const std::vector<int64_t>& idx,
                 const std::vector<int32_t>& labels) {
    Tensor tl;
    EncoderForward tf;
    if (hidden) {
      NoGradGuard ng;
      std::mt19937 rng(0);
      tf = teacher.forward(b, false, rng);
      tl = tf.logits.value();
    } else if (kd.alpha < 1.f) {
      tl = Tensor::empty(DType::F32, {static_cast<int64_t>(idx.size()), C});
      for (size_t r = 0; r < idx.size(); ++r)
        std::copy(cached.begin() + idx[r] * C, cached.begin() + (idx[r] + 1) * C, tl.data<float>() + r * C);
    }
    Var loss =
        kd.alpha < 1.f ? kd_loss(out.logits, tl, labels, kd.temperature, kd.alpha) : cross_entropy(out.logits, labels);
    if (hidden) loss = add(loss, scale(hidden_loss(out.hidden, tf.hidden, map, proj), kd.hidden_weight));
    return loss;
  };
  TrainReport rep = train_classifier(student, train, val, opt, progress);
  // The projections served training only; the student keeps its own parameters.
  student.extra_parameters.clear();
  return rep;
}

LmReport distill_lm(TrainableDecoder& student, const TrainableDecoder& teacher, const LmData& train, const LmData& val,
                    LmTrainOptions opt, const KdOptions& kd, const std::function<void(const LmProgress&)>& progress) {
  check(student.config().vocab_size == teacher.config().vocab_size,
        "distill: student vocabulary {} differs from the teacher's {}; they must share the tokenizer",
        student.config().vocab_size, teacher.config().vocab_size);
  const bool hidden = kd.hidden_weight > 0.f;
  const std::vector<int> map =
      kd.layer_map.empty() ? default_layer_map(teacher.config().num_layers, student.config().num_layers) : kd.layer_map;
  std::vector<Var> proj;
  if (hidden)
    proj = make_projections(student.config().num_layers, student.config().hidden_size, teacher.config().hidden_size,
                            opt.seed, student.extra_parameters);
  if (kd.alpha < 1.f || hidden)
    opt.loss = [&](const DecoderForward& out, const LmBatch& b, const std::vector<int64_t>&) {
      DecoderForward tf;
      {
        NoGradGuard ng;
        tf = teacher.forward(b.ids, b.batch, b.seq);
      }
      Var loss = kd_loss(out.logits, tf.logits.value(), b.targets, kd.temperature, kd.alpha);
      if (hidden) loss = add(loss, scale(hidden_loss(out.hidden, tf.hidden, map, proj), kd.hidden_weight));
      return loss;
    };
  LmReport rep = train_lm(student, train, val, opt, progress);
  student.extra_parameters.clear();
  return rep;
}

}  // namespace shrink::train
