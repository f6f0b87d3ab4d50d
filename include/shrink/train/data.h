// Training data beyond TSV text: IDX image files (MNIST / Fashion-MNIST, raw or gzip'd) and their labels, the
// Debian dataset-fashion-mnist location, and ViT-style patching of images into token rows.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace shrink::train {

struct ImageSet {
  int64_t n = 0, rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // [n][rows][cols]
  std::vector<int32_t> labels;  // [n]
};

// An IDX3 images file and its IDX1 labels file (big-endian headers, magic 0x00000803 / 0x00000801), either raw or
// .gz. Errors name the file, what the header says and what was expected.
ImageSet read_idx_images(const std::filesystem::path& images, const std::filesystem::path& labels);
// Parses IDX bytes already in memory (the fuzzer's entry); `name` is used in error messages.
ImageSet parse_idx(const std::string& image_bytes, const std::string& label_bytes, const std::string& name);

// Where Debian's dataset-fashion-mnist installs the files.
std::filesystem::path fashion_mnist_dir();
// split: "train" (60,000) or "test" (10,000); a clear error naming the package when missing.
ImageSet load_fashion_mnist(const std::string& split, const std::filesystem::path& dir = fashion_mnist_dir());

// Image i as (rows/p)*(cols/p) patches of p*p pixels scaled to [0, 1] (row-major patches, row-major pixels inside):
// out gets patches * p * p floats.
void image_patches(const ImageSet& s, int64_t i, int p, float* out);
// The inverse for one image: `patches` as image_patches lays them out -> rows x cols pixels, row-major.
void patches_to_image(const float* patches, int64_t rows, int64_t cols, int p, float* pixels);

// Whole file (gunzipped when it starts with the gzip magic).
std::string read_maybe_gzip(const std::filesystem::path& path);

}  // namespace shrink::train
