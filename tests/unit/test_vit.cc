// ViT image classifiers in the engine (src/models/vit.cc): config parsing and writing, and the forward equal to the
// trainable ViT (src/train/encoder.cc, an independent implementation on the autograd tape) on the same weights,
// also after a save / load round trip; text encoders and ViTs refuse the other kind of input by name.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/formats/config.h>
#include <shrink/models/model.h>
#include <shrink/models/synth.h>
#include <shrink/train/data.h>
#include <shrink/train/encoder.h>
#include <shrink/train/trainer.h>

#include <filesystem>
#include <random>

#include "test_util.h"

namespace shrink {
namespace {

nlohmann::json vit_json() {
  return {{"architectures", {"ViTForImageClassification"}},
          {"model_type", "vit"},
          {"hidden_size", 32},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"intermediate_size", 48},
          {"hidden_act", "gelu"},
          {"layer_norm_eps", 1e-12},
          {"image_size", 12},
          {"patch_size", 4},
          {"num_channels", 1},
          {"num_labels", 5}};
}

TEST(VitConfig, ParsesAndWritesBack) {
  const ModelConfig c = parse_config(vit_json(), "vit config");
  EXPECT_EQ(c.model_type, "vit");
  EXPECT_EQ(c.image_size, 12);
  EXPECT_EQ(c.patch_size, 4);
  EXPECT_EQ(c.max_position_embeddings, 10);  // 3 x 3 patches + [CLS]
  EXPECT_EQ(c.head_dim, 8);
  const ModelConfig back = parse_config(config_to_json(c), "written");
  EXPECT_EQ(back.image_size, 12);
  EXPECT_EQ(back.num_labels, 5);
  EXPECT_EQ(back.intermediate_size, 48);
  nlohmann::json bad = vit_json();
  bad["patch_size"] = 5;
  try {
    parse_config(bad, "bad.json");
    FAIL() << "a patch not dividing the image was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("patch_size 5"), std::string::npos) << e.what();
  }
}

TEST(Vit, EngineEqualsTrainableForward) {
  const ModelConfig cfg = parse_config(vit_json(), "vit config");
  train::TrainableEncoder enc(cfg, 3);
  std::mt19937 gen(9);
  std::normal_distribution<float> nd(0.f, 0.05f);
  for (auto& p : enc.parameters())
    for (int64_t i = 0; i < p.var.numel(); ++i) p.var.mutable_data()[i] += nd(gen);
  // Three 12x12 images; the trainer takes them as patch rows, the engine as pixels.
  train::ImageSet set;
  set.n = 3, set.rows = 12, set.cols = 12;
  std::uniform_int_distribution<int> px(0, 255);
  for (int i = 0; i < 3 * 144; ++i) set.pixels.push_back(static_cast<uint8_t>(px(gen)));
  set.labels = {0, 1, 2};
  train::ImageData data;
  data.set = &set;
  data.patch = 4;
  std::mt19937 rng(1);
  const train::EncoderForward f = enc.forward(data.batch({0, 1, 2}), false, rng);
  std::vector<float> pixels(set.pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = set.pixels[i] / 255.f;

  const auto dir = testing::temp_dir("vit_parity");
  enc.save(dir);
  for (int round = 0; round < 2; ++round) {
    auto model = round == 0 ? build_model(cfg, enc.state(), "in-memory") : load_model(dir);
    auto& m = dynamic_cast<EncoderModel&>(*model);
    ASSERT_TRUE(m.takes_images());
    const EncoderOutput out = m.forward_images(pixels.data(), 3);
    ASSERT_EQ(out.logits.numel(), 15);
    for (int i = 0; i < 15; ++i) EXPECT_NEAR(out.logits.data<float>()[i], f.logits.data()[i], 2e-5) << i;
  }
}

TEST(Vit, InputsOfTheWrongKindAreRefusedByName) {
  const ModelConfig cfg = parse_config(vit_json(), "vit config");
  train::TrainableEncoder enc(cfg, 3);
  auto vit = build_model(cfg, enc.state(), "vit-dir");
  BatchEncoding b;
  b.batch = 1, b.seq = 1, b.ids = {0}, b.attention_mask = {1};
  try {
    dynamic_cast<EncoderModel&>(*vit).forward(b);
    FAIL() << "text input to a ViT was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("image classifier"), std::string::npos) << e.what();
  }
  const auto bert_dir = testing::temp_dir("vit_bert");
  synth_model(find_synth_preset("bert-tiny"), bert_dir, 1);
  auto bert = load_model(bert_dir);
  float px[4] = {};
  try {
    dynamic_cast<EncoderModel&>(*bert).forward_images(px, 1);
    FAIL() << "images to a text encoder were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("text encoder"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace shrink
