// Image classifiers (ViT) through every command: a tiny ViT trained by `shrink train --task image` on a few hundred
// Fashion-MNIST images (the Debian package dataset-fashion-mnist; the test fails when it is missing), then eval
// (checked against predictions computed here, by the engine and by the independent trainable ViT), compare, distill,
// structured prune (matrix shapes against the requested fractions; pruned engine == trainable ViT), quantize (w8a8,
// w8a16, w4a16-g32, w8a8-static calibrated on images), qat and lowrank, and the errors of mismatched data.
#include <gtest/gtest.h>
#include <shrink/formats/config.h>
#include <shrink/formats/safetensors.h>
#include <shrink/models/model.h>
#include <shrink/train/data.h>
#include <shrink/train/encoder.h>
#include <shrink/train/trainer.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace shrink {
namespace {

namespace fs = std::filesystem;

constexpr int kTrain = 400, kTest = 200;

// IDX bytes (big-endian header) of the first n images / labels of `s`.
std::string idx_images(const train::ImageSet& s, int64_t n, int64_t side) {
  auto be = [](uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                       static_cast<char>(v)};
  };
  std::string out =
      be(0x803) + be(static_cast<uint32_t>(n)) + be(static_cast<uint32_t>(side)) + be(static_cast<uint32_t>(side));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < side; ++y)
      for (int64_t x = 0; x < side; ++x)  // cropped or zero-padded to side x side
        out += static_cast<char>(y < s.rows && x < s.cols ? s.pixels[(i * s.rows + y) * s.cols + x] : 0);
  return out;
}

std::string idx_labels(const train::ImageSet& s, int64_t n) {
  std::string out = {0,
                     0,
                     8,
                     1,
                     static_cast<char>(n >> 24),
                     static_cast<char>(n >> 16),
                     static_cast<char>(n >> 8),
                     static_cast<char>(n)};
  for (int64_t i = 0; i < n; ++i) out += static_cast<char>(s.labels[i]);
  return out;
}

// A Fashion-MNIST-style directory holding the first images of the real set, `side` x `side` (uncompressed bytes
// under the .gz names: the reader gunzips only what starts with the gzip magic).
fs::path make_images_dir(const std::string& tag, int64_t side) {
  const train::ImageSet tr = train::load_fashion_mnist("train"), te = train::load_fashion_mnist("test");
  const fs::path dir = testing::temp_dir(tag);
  testing::write_bytes(dir / "train-images-idx3-ubyte.gz", idx_images(tr, kTrain, side));
  testing::write_bytes(dir / "train-labels-idx1-ubyte.gz", idx_labels(tr, kTrain));
  testing::write_bytes(dir / "t10k-images-idx3-ubyte.gz", idx_images(te, kTest, side));
  testing::write_bytes(dir / "t10k-labels-idx1-ubyte.gz", idx_labels(te, kTest));
  return dir;
}

nlohmann::json run_json(const std::string& args) {
  const testing::RunResult r = testing::run_cli(args + " --json");
  EXPECT_EQ(r.code, 0) << args << "\n" << r.err;
  if (r.code != 0) return nlohmann::json::object();
  return nlohmann::json::parse(r.out);
}

// The error of a command that must fail, with its exit code checked.
std::string run_error(const std::string& args) {
  const testing::RunResult r = testing::run_cli(args);
  EXPECT_NE(r.code, 0) << args << " succeeded:\n" << r.out;
  return r.err;
}

class ImagesCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(make_images_dir("images_cli", 28));
    teacher_ = new fs::path(testing::temp_dir("images_teacher") / "vit");
    const testing::RunResult r = testing::run_cli(
        "train --task image --data " + dir_->string() + " --patch 7 --hidden 32 --layers 2 --heads 4 --ff 64 " +
        "--epochs 20 --batch 32 --lr 3e-3 --seed 1 --quiet --out " + teacher_->string());
    ASSERT_EQ(r.code, 0) << r.err;
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete teacher_;
  }
  static std::string images() { return " --images " + dir_->string(); }
  static fs::path* dir_;
  static fs::path* teacher_;
};
fs::path* ImagesCli::dir_ = nullptr;
fs::path* ImagesCli::teacher_ = nullptr;

// Test-split predictions of the model in `dir`, by the engine (forward_images on whole images) and by the trainable
// ViT on patch rows (src/train/encoder.cc, an independent implementation of the same network).
struct Predictions {
  std::vector<int> engine, trainable, labels;
};
Predictions predict_test(const fs::path& model_dir, const fs::path& images) {
  const train::ImageSet set = train::load_fashion_mnist("test", images);
  Predictions p;
  p.labels.assign(set.labels.begin(), set.labels.end());
  auto m = load_model(model_dir);
  auto& enc = dynamic_cast<EncoderModel&>(*m);
  std::vector<float> px(set.pixels.size());
  for (size_t i = 0; i < px.size(); ++i) px[i] = set.pixels[i] / 255.f;
  const EncoderOutput out = enc.forward_images(px.data(), set.n);
  const int k = enc.config().num_labels;
  for (int64_t i = 0; i < set.n; ++i) {
    const float* row = out.logits.data<float>() + i * k;
    p.engine.push_back(static_cast<int>(std::max_element(row, row + k) - row));
  }
  const train::TrainableEncoder t(read_config(model_dir / "config.json"), read_safetensors_model(model_dir).tensors, 0);
  train::ImageData data;
  data.set = &set;
  data.patch = t.config().patch_size;
  p.trainable = train::predict(t, data);
  return p;
}

double accuracy_of(const std::vector<int>& pred, const std::vector<int>& labels) {
  int ok = 0;
  for (size_t i = 0; i < pred.size(); ++i) ok += pred[i] == labels[i];
  return static_cast<double>(ok) / static_cast<double>(pred.size());
}

TEST_F(ImagesCli, EvalEqualsAccuracyOfPredictionsComputedHere) {
  const Predictions p = predict_test(*teacher_, *dir_);
  ASSERT_EQ(p.engine.size(), static_cast<size_t>(kTest));
  EXPECT_EQ(p.engine, p.trainable);
  const double acc = accuracy_of(p.engine, p.labels);
  EXPECT_GT(acc, 0.4) << "the teacher learned nothing (10 classes: chance is 0.1)";
  const nlohmann::json j = run_json("eval " + teacher_->string() + images() + " --segment-by label");
  EXPECT_EQ(j["n"].get<int>(), kTest);
  EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), acc);
  // Macro-F1 by hand from the same predictions.
  double f1 = 0;
  for (int c = 0; c < 10; ++c) {
    int tp = 0, fp = 0, fn = 0;
    for (size_t i = 0; i < p.engine.size(); ++i) {
      tp += p.engine[i] == c && p.labels[i] == c;
      fp += p.engine[i] == c && p.labels[i] != c;
      fn += p.engine[i] != c && p.labels[i] == c;
    }
    f1 += tp == 0 ? 0.0 : 2.0 * tp / (2.0 * tp + fp + fn);
  }
  EXPECT_NEAR(j["macro_f1"].get<double>(), f1 / 10, 1e-12);
  ASSERT_EQ(j["segments"]["label"].size(), 10u);
  int seg_n = 0;
  for (const auto& s : j["segments"]["label"]) seg_n += s["n"].get<int>();
  EXPECT_EQ(seg_n, kTest);
  // --limit and --baseline: the model against itself agrees everywhere with zero KLD.
  const nlohmann::json b =
      run_json("eval " + teacher_->string() + images() + " --limit 50 --baseline " + teacher_->string());
  EXPECT_EQ(b["n"].get<int>(), 50);
  EXPECT_DOUBLE_EQ(b["top1_agreement"].get<double>(), 1.0);
  EXPECT_NEAR(b["kld"].get<double>(), 0.0, 1e-9);
  const nlohmann::json c = run_json("compare " + teacher_->string() + " " + teacher_->string() + images());
  EXPECT_DOUBLE_EQ(c["candidate"]["accuracy"].get<double>(), acc);
  EXPECT_DOUBLE_EQ(c["top1_agreement"].get<double>(), 1.0);
}

// Fine-tuning with --init reads the model's own 7x7 patches (the --patch default is 4: it used to cut the images
// into 4x4 rows without a word, and the accuracy fell): the test accuracy the command reports, computed on the
// patch rows it trained on, equals the engine's on whole images; a --patch that contradicts the model is refused.
TEST_F(ImagesCli, TrainInitKeepsTheModelsPatches) {
  const fs::path out = testing::temp_dir("images_ft") / "vit";
  const nlohmann::json j = run_json("train --task image --data " + dir_->string() + " --init " + teacher_->string() +
                                    " --epochs 1 --lr 1e-4 --seed 1 --json --out " + out.string());
  ASSERT_TRUE(j.contains("test_accuracy")) << j.dump();
  EXPECT_EQ(read_config(out / "config.json").patch_size, 7);
  const Predictions before = predict_test(*teacher_, *dir_), after = predict_test(out, *dir_);
  EXPECT_NEAR(j["test_accuracy"].get<double>(), accuracy_of(after.engine, after.labels), 1e-9);
  EXPECT_GE(accuracy_of(after.engine, after.labels), accuracy_of(before.engine, before.labels) - 0.05);
  EXPECT_HAS(run_error("train --task image --data " + dir_->string() + " --init " + teacher_->string() +
                       " --patch 4 --out " + (out.parent_path() / "x").string()),
             "reads 7x7 patches; drop --patch");
  EXPECT_FALSE(fs::exists(out.parent_path() / "x"));
}

TEST_F(ImagesCli, DistilledStudentKeepsTheTeachersEmbeddingsAndEvaluates) {
  const fs::path out = testing::temp_dir("images_distill") / "student";
  const nlohmann::json j = run_json("distill --teacher " + teacher_->string() + images() +
                                    " --student-layers 1 --epochs 1 --lr 1e-3 --out " + out.string());
  EXPECT_EQ(j["student_layers"].get<int>(), 1);
  const ModelConfig c = read_config(out / "config.json");
  EXPECT_EQ(c.num_layers, 1);
  EXPECT_EQ(c.image_size, 28);
  EXPECT_EQ(c.patch_size, 7);
  const TensorMap st = read_safetensors_model(out).tensors;
  EXPECT_TRUE(st.count("vit.encoder.layer.0.attention.attention.query.weight"));
  EXPECT_FALSE(st.count("vit.encoder.layer.1.attention.attention.query.weight"));
  EXPECT_EQ(st.at("vit.embeddings.patch_embeddings.projection.weight").shape(), (Shape{32, 1, 7, 7}));
  const Predictions p = predict_test(out, *dir_);
  EXPECT_EQ(p.engine, p.trainable);
  const nlohmann::json e = run_json("eval " + out.string() + images());
  EXPECT_DOUBLE_EQ(e["accuracy"].get<double>(), accuracy_of(p.engine, p.labels));
}

TEST_F(ImagesCli, StructuredPruningShrinksTheMatricesAndTheEngineRunsThem) {
  const fs::path out = testing::temp_dir("images_prune") / "pruned";
  const nlohmann::json j =
      run_json("prune " + teacher_->string() + images() +
               " --method structured --sparsity 0.5 --epochs 1 --max-drop 100 --out " + out.string());
  EXPECT_GE(j["dense_accuracy"].get<double>(), 0.0);
  // 4 heads of 8 -> 2 (attention width 16), FFN 64 -> 32, in both layers.
  const TensorMap t = read_safetensors_model(out).tensors;
  for (int l = 0; l < 2; ++l) {
    const std::string p = "vit.encoder.layer." + std::to_string(l) + ".";
    EXPECT_EQ(t.at(p + "attention.attention.query.weight").shape(), (Shape{16, 32}));
    EXPECT_EQ(t.at(p + "attention.attention.value.bias").shape(), (Shape{16}));
    EXPECT_EQ(t.at(p + "attention.output.dense.weight").shape(), (Shape{32, 16}));
    EXPECT_EQ(t.at(p + "intermediate.dense.weight").shape(), (Shape{32, 32}));
    EXPECT_EQ(t.at(p + "output.dense.weight").shape(), (Shape{32, 32}));
  }
  const nlohmann::json info = run_json("info " + out.string());
  ASSERT_EQ(info["pruned_layers"].size(), 2u);
  for (const auto& l : info["pruned_layers"]) {
    EXPECT_EQ(l["heads"].get<int>(), 2);
    EXPECT_EQ(l["ffn"].get<int>(), 32);
  }
  // The pruned engine equals the trainable ViT on the pruned shapes, and eval reports their accuracy.
  const Predictions p = predict_test(out, *dir_);
  EXPECT_EQ(p.engine, p.trainable);
  const nlohmann::json e = run_json("eval " + out.string() + images());
  EXPECT_DOUBLE_EQ(e["accuracy"].get<double>(), accuracy_of(p.engine, p.labels));
}

TEST_F(ImagesCli, QuantizedVitsSaveLoadAndAgreeWithTheFloatModel) {
  const fs::path root = testing::temp_dir("images_quant");
  struct Case {
    std::string scheme, extra;
    double min_agreement;
  };
  for (const Case& c : {Case{"w8a8", "", 0.95}, Case{"w8a16", "", 0.97}, Case{"w4a16-g32", "", 0.85},
                        Case{"w8a8-static", " --calib-images " + dir_->string() + " --calib-samples 32", 0.9}}) {
    const fs::path out = root / c.scheme;
    const nlohmann::json q =
        run_json("quantize " + teacher_->string() + " --scheme " + c.scheme + c.extra + " --out " + out.string());
    EXPECT_LT(q["size_bytes"].get<double>(), q["source_size_bytes"].get<double>()) << c.scheme;
    const nlohmann::json e = run_json("eval " + out.string() + images() + " --baseline " + teacher_->string());
    EXPECT_EQ(e["n"].get<int>(), kTest) << c.scheme;
    EXPECT_GE(e["top1_agreement"].get<double>(), c.min_agreement) << c.scheme;
  }
}

TEST_F(ImagesCli, QatAndLowrankTakeImages) {
  const fs::path root = testing::temp_dir("images_qat");
  const nlohmann::json q =
      run_json("qat " + teacher_->string() + images() + " --scheme w8a8 --epochs 1 --out " + (root / "qat").string());
  EXPECT_EQ(q["val_examples"].get<int>(), kTrain / 10);
  EXPECT_GE(q["engine_agreement"].get<double>(), 0.9);
  const nlohmann::json l = run_json("lowrank " + teacher_->string() + images() + " --rank 4 --epochs 1 --out " +
                                    (root / "lowrank").string());
  EXPECT_GT(l["factored"].get<int>(), 0);
  EXPECT_EQ(l["val_examples"].get<int>(), kTrain / 10);
  const nlohmann::json e = run_json("eval " + (root / "lowrank").string() + images());
  EXPECT_EQ(e["n"].get<int>(), kTest);
}

TEST_F(ImagesCli, MismatchedDataIsRefusedByName) {
  // An image model given text.
  const fs::path tsv = testing::temp_dir("images_tsv") / "x.tsv";
  testing::write_bytes(tsv, "sentence\tlabel\ngood\t1\nbad\t0\n");
  const std::string out_flag = " --out " + (testing::temp_dir("images_err") / "o").string();
  for (const std::string cmd : {"eval", "prune", "qat"}) {
    const std::string err =
        run_error(cmd + " " + teacher_->string() + " --data " + tsv.string() + (cmd == "eval" ? "" : out_flag));
    EXPECT_NE(err.find("image classifier"), std::string::npos) << cmd << err;
    EXPECT_NE(err.find("--images"), std::string::npos) << cmd << err;
  }
  // A text model given images.
  const fs::path bert = testing::temp_dir("images_bert") / "bert";
  ASSERT_EQ(testing::run_cli("synth --arch bert --preset bert-tiny --out " + bert.string()).code, 0);
  std::string err = run_error("eval " + bert.string() + images());
  EXPECT_NE(err.find("text model"), std::string::npos) << err;
  EXPECT_NE(err.find("--data FILE.tsv"), std::string::npos) << err;
  // A missing dataset names the Debian package.
  err = run_error("eval " + teacher_->string() + " --images /nonexistent/fmnist");
  EXPECT_NE(err.find("dataset-fashion-mnist"), std::string::npos) << err;
  // Images the patch does not divide (30 x 30, patch 7).
  const fs::path odd = make_images_dir("images_odd", 30);
  err = run_error("eval " + teacher_->string() + " --images " + odd.string());
  EXPECT_NE(err.find("does not divide"), std::string::npos) << err;
  // No partial output left by a failed command.
  const fs::path out = testing::temp_dir("images_err_out") / "p";
  run_error("prune " + teacher_->string() + " --images " + odd.string() + " --out " + out.string());
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace shrink
