// `shrink train --images [DIR]`: the spelling every other command uses for images trains the same ViT as
// `--task image --data DIR` (byte-identical weights, same test accuracy, which `shrink eval --images` confirms on the
// engine), and its mismatches (--task lm, --data with --images) are errors. Fashion-MNIST comes from the Debian
// package dataset-fashion-mnist; the test fails when it is missing.
#include <gtest/gtest.h>
#include <shrink/core/mmap.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "unit/test_util.h"

namespace shrink {
namespace {

namespace fs = std::filesystem;

const std::string kPackageDir = "/usr/share/datasets/fashion-mnist";
// A tiny ViT on 300 images, one epoch: seconds, and deterministic for a seed.
const std::string kVit =
    " --patch 7 --hidden 16 --layers 1 --heads 2 --ff 32 --epochs 1 --batch 32 --limit 300 --seed 3 --json --out ";

nlohmann::json run_json(const std::string& args) {
  const testing::RunResult r = testing::run_cli(args);
  EXPECT_EQ(r.code, 0) << args << "\n" << r.err;
  return r.code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json::object();
}

TEST(TrainCli, ImagesFlagTrainsTheSameVitAsTaskImage) {
  ASSERT_TRUE(fs::exists(kPackageDir + "/train-images-idx3-ubyte.gz"))
      << "Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (scripts/install-deps.sh)";
  const fs::path dir = testing::temp_dir("train_images");
  const nlohmann::json a = run_json("train --images" + kVit + (dir / "a").string());
  const nlohmann::json b = run_json("train --task image --data " + kPackageDir + kVit + (dir / "b").string());
  const nlohmann::json c = run_json("train --images " + kPackageDir + kVit + (dir / "c").string());
  ASSERT_TRUE(a.contains("test_accuracy") && b.contains("test_accuracy") && c.contains("test_accuracy"));
  EXPECT_EQ(a["test_examples"], 10000);
  EXPECT_EQ(a["train_examples"].get<int>() + a["val_examples"].get<int>(), 300);
  const std::string wa = read_text_file(dir / "a" / "model.safetensors");
  EXPECT_EQ(wa, read_text_file(dir / "b" / "model.safetensors"));
  EXPECT_EQ(wa, read_text_file(dir / "c" / "model.safetensors"));
  EXPECT_DOUBLE_EQ(a["test_accuracy"].get<double>(), b["test_accuracy"].get<double>());
  // The engine (shrink eval) scores the saved model as the trainer did, within a few of 10,000 images.
  const nlohmann::json e = run_json("eval " + (dir / "a").string() + " --images --json");
  EXPECT_EQ(e["n"], 10000);
  EXPECT_NEAR(e["accuracy"].get<double>(), a["test_accuracy"].get<double>(), 5e-4);
}

TEST(TrainCli, ImagesFlagMismatches) {
  const fs::path dir = testing::temp_dir("train_images_err");
  const testing::RunResult lm = testing::run_cli("train --task lm --images --out " + (dir / "x").string());
  EXPECT_NE(lm.code, 0);
  EXPECT_HAS(lm.err, "--images trains an image classifier");
  EXPECT_HAS(lm.err, "--task lm");
  const testing::RunResult both =
      testing::run_cli("train --images --data " + kPackageDir + " --out " + (dir / "y").string());
  EXPECT_NE(both.code, 0);
  EXPECT_HAS(both.err, "excludes");
  EXPECT_FALSE(fs::exists(dir / "x"));
  EXPECT_FALSE(fs::exists(dir / "y"));
}

}  // namespace
}  // namespace shrink
