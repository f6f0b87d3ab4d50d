// TrainableEncoder: its forward equals the inference engine's on the same weights (BERT and DistilBERT, padded
// batches), a saved checkpoint loads through load_model, and a small classifier learns a rule it must discover.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/formats/config.h>
#include <shrink/models/model.h>
#include <shrink/train/encoder.h>

#include <cmath>
#include <random>

#include "test_util.h"

namespace shrink::train {
namespace {

ModelConfig tiny_config(const std::string& type, int labels) {
  nlohmann::json j = {{"model_type", type}, {"vocab_size", 40}, {"max_position_embeddings", 16}, {"num_labels", labels}};
  if (type == "bert") {
    j.update({{"architectures", {"BertForSequenceClassification"}}, {"hidden_size", 32}, {"num_hidden_layers", 2},
              {"num_attention_heads", 4}, {"intermediate_size", 48}, {"type_vocab_size", 2},
              {"layer_norm_eps", 1e-12}, {"hidden_act", "gelu"}});
  } else {
    j.update({{"architectures", {"DistilBertForSequenceClassification"}}, {"dim", 32}, {"n_layers", 2},
              {"n_heads", 4}, {"hidden_dim", 48}, {"activation", "gelu"}});
  }
  return parse_config(j, "test config");
}

EncoderBatch random_batch(int64_t B, int64_t T, uint32_t seed) {
  std::mt19937 gen(seed);
  EncoderBatch b;
  b.batch = B;
  b.seq = T;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t len = T - (i % 3);  // padded rows
    for (int64_t t = 0; t < T; ++t) {
      b.ids.push_back(t < len ? static_cast<int32_t>(gen() % 40) : 0);
      b.type_ids.push_back(t >= len / 2 && t < len ? 1 : 0);
      b.mask.push_back(t < len ? 1 : 0);
    }
  }
  return b;
}

class EncoderParity : public ::testing::TestWithParam<std::string> {};

TEST_P(EncoderParity, ForwardEqualsInferenceEngine) {
  const ModelConfig cfg = tiny_config(GetParam(), 3);
  TrainableEncoder enc(cfg, 11);
  // Move weights off their initial values so biases and norms are not trivially 0 / 1.
  std::mt19937 gen(5);
  std::normal_distribution<float> nd(0.f, 0.05f);
  for (auto& p : enc.parameters())
    for (int64_t i = 0; i < p.var.numel(); ++i) p.var.mutable_data()[i] += nd(gen);
  const EncoderBatch b = random_batch(3, 9, 3);
  std::mt19937 rng(1);
  EncoderForward f = enc.forward(b, false, rng);

  auto model = build_model(cfg, enc.state(), "in-memory");
  auto* em = dynamic_cast<EncoderModel*>(model.get());
  ASSERT_NE(em, nullptr);
  BatchEncoding be;
  be.batch = b.batch;
  be.seq = b.seq;
  be.ids = b.ids;
  be.type_ids = b.type_ids;
  be.attention_mask = b.mask;
  for (int64_t i = 0; i < b.batch; ++i) be.lengths.push_back(static_cast<int32_t>(b.seq - i % 3));
  const EncoderOutput out = em->forward(be);
  ASSERT_EQ(out.logits.numel(), f.logits.numel());
  for (int64_t i = 0; i < f.logits.numel(); ++i)
    EXPECT_NEAR(f.logits.data()[i], out.logits.data<float>()[i], 2e-5) << i;
}

INSTANTIATE_TEST_SUITE_P(Families, EncoderParity, ::testing::Values("bert", "distilbert"));

TEST(TrainableEncoder, SavedCheckpointLoadsEverywhere) {
  const ModelConfig cfg = tiny_config("bert", 2);
  TrainableEncoder enc(cfg, 1);
  const auto dir = shrink::testing::temp_dir("train_encoder_save");
  enc.save(dir);
  auto model = load_model(dir);
  EXPECT_EQ(model->config().architecture, "BertForSequenceClassification");
  // Reloaded into training: identical state.
  auto st = read_config(dir / "config.json");
  TrainableEncoder again(st, model->tensors(), 2);
  const TensorMap a = enc.state(), b = again.state();
  ASSERT_EQ(a.size(), b.size());
  for (auto& [name, t] : a)
    for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t.data<float>()[i], b.at(name).data<float>()[i]) << name;
}

TEST(TrainableEncoder, MissingTensorIsNamed) {
  const ModelConfig cfg = tiny_config("bert", 2);
  TrainableEncoder enc(cfg, 1);
  TensorMap st = enc.state();
  st.erase("bert.encoder.layer.1.output.dense.weight");
  try {
    TrainableEncoder broken(cfg, st, 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bert.encoder.layer.1.output.dense.weight"), std::string::npos);
  }
}

// Label = 1 when token 7 occurs anywhere in the sequence: needs attention to aggregate over positions.
TEST(TrainableEncoder, LearnsAContainsRule) {
  const ModelConfig cfg = tiny_config("bert", 2);
  TrainableEncoder enc(cfg, 3);
  enc.dropout = 0.f;
  AdamW opt(enc.parameters(), AdamWOptions{0.9f, 0.999f, 1e-8f, 0.01f});
  std::mt19937 gen(9), rng(2);
  auto make = [&](int64_t B, std::vector<int32_t>& labels) {
    EncoderBatch b;
    b.batch = B;
    b.seq = 8;
    labels.clear();
    for (int64_t i = 0; i < B; ++i) {
      const bool pos = gen() % 2;
      labels.push_back(pos);
      b.ids.push_back(1);  // [CLS]-like
      for (int t = 1; t < 8; ++t) {
        int32_t id = 8 + static_cast<int32_t>(gen() % 32);
        b.ids.push_back(id);
      }
      if (pos) b.ids[i * 8 + 1 + gen() % 7] = 7;
      for (int t = 0; t < 8; ++t) b.mask.push_back(1);
    }
    return b;
  };
  const LrSchedule sched{3e-3f, 20, 300, Decay::Linear};
  std::vector<int32_t> labels;
  for (int step = 0; step < 300; ++step) {
    const EncoderBatch b = make(32, labels);
    opt.zero_grad();
    backward(cross_entropy(enc.forward(b, true, rng).logits, labels));
    clip_grad_norm(opt.params(), 1.0);
    opt.step(sched.at(step));
  }
  NoGradGuard ng;
  const EncoderBatch test = make(256, labels);
  Var logits = enc.forward(test, false, rng).logits;
  int correct = 0;
  for (int64_t i = 0; i < 256; ++i) correct += (logits.data()[i * 2 + 1] > logits.data()[i * 2]) == (labels[i] == 1);
  EXPECT_GE(correct, 240) << "accuracy " << correct / 256.0;  // chance is 50%
}

// ViT on 8x8 one-channel images: class = which quadrant holds a bright square. Needs patches + attention.
TEST(TrainableEncoder, VitLearnsQuadrants) {
  ModelConfig c;
  c.architecture = "ViTForImageClassification";
  c.model_type = "vit";
  c.hidden_size = 32;
  c.num_layers = 1;
  c.num_heads = c.num_kv_heads = 2;
  c.intermediate_size = 64;
  c.norm_eps = 1e-12f;
  c.image_size = 8;
  c.patch_size = 2;
  c.num_channels = 1;
  c.num_labels = 4;
  c.raw = {{"model_type", "vit"}};
  TrainableEncoder enc(c, 3);
  enc.dropout = 0.f;
  EXPECT_EQ(enc.state().at("vit.embeddings.patch_embeddings.projection.weight").shape(), (Shape{32, 1, 2, 2}));
  std::mt19937 gen(4), rng(1);
  auto make = [&](int64_t B, std::vector<int32_t>& labels) {
    EncoderBatch b;
    b.batch = B;
    b.seq = 17;
    labels.clear();
    for (int64_t i = 0; i < B; ++i) {
      const int q = gen() % 4;
      labels.push_back(q);
      // 16 patches of 4 pixels in row-major patch order; quadrant q covers a 2x2 block of patches.
      for (int pr = 0; pr < 4; ++pr)
        for (int pc = 0; pc < 4; ++pc)
          for (int k = 0; k < 4; ++k) {
            const bool in = (pr / 2) * 2 + (pc / 2) == q && (gen() % 4 != 0);
            b.patches.push_back(in ? 0.8f + 0.2f * (gen() % 2) : 0.1f * (gen() % 3));
          }
    }
    return b;
  };
  AdamW opt(enc.parameters());
  std::vector<int32_t> labels;
  for (int step = 0; step < 150; ++step) {
    const EncoderBatch b = make(32, labels);
    opt.zero_grad();
    backward(cross_entropy(enc.forward(b, true, rng).logits, labels));
    opt.step(3e-3f);
  }
  NoGradGuard ng;
  const EncoderBatch t = make(200, labels);
  Var logits = enc.forward(t, false, rng).logits;
  int ok = 0;
  for (int64_t i = 0; i < 200; ++i) {
    const float* l = logits.data() + i * 4;
    ok += std::max_element(l, l + 4) - l == labels[i];
  }
  EXPECT_GE(ok, 190) << "accuracy " << ok / 200.0;  // chance is 25%
}

}  // namespace
}  // namespace shrink::train
