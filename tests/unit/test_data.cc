// IDX readers on hand-made files (raw and gzip'd), every header error, the Fashion-MNIST package files, patching.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/train/data.h>

#include <zlib.h>

#include "test_util.h"

namespace shrink::train {
namespace {

std::string be(uint32_t v) {
  return {char(v >> 24), char((v >> 16) & 255), char((v >> 8) & 255), char(v & 255)};
}

std::string idx3(uint32_t n, uint32_t r, uint32_t c) {
  std::string s = be(0x803) + be(n) + be(r) + be(c);
  for (uint32_t i = 0; i < n * r * c; ++i) s += char(i & 255);
  return s;
}

std::string idx1(uint32_t n) {
  std::string s = be(0x801) + be(n);
  for (uint32_t i = 0; i < n; ++i) s += char(i % 10);
  return s;
}

std::string gzip(const std::string& in) {
  z_stream zs{};
  deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(compressBound(in.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = in.size();
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = out.size();
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

TEST(Idx, RawAndGzipReadTheSame) {
  const auto dir = shrink::testing::temp_dir("idx");
  shrink::testing::write_bytes(dir / "i", idx3(3, 4, 4));
  shrink::testing::write_bytes(dir / "l", idx1(3));
  shrink::testing::write_bytes(dir / "i.gz", gzip(idx3(3, 4, 4)));
  shrink::testing::write_bytes(dir / "l.gz", gzip(idx1(3)));
  const ImageSet a = read_idx_images(dir / "i", dir / "l"), b = read_idx_images(dir / "i.gz", dir / "l.gz");
  EXPECT_EQ(a.n, 3);
  EXPECT_EQ(a.rows, 4);
  EXPECT_EQ(a.pixels, b.pixels);
  EXPECT_EQ(a.labels, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(a.pixels[17], 17);
  // 2x2 patches of image 1: the first patch holds pixels (0,0),(0,1),(1,0),(1,1) of that image.
  std::vector<float> p(16);
  image_patches(a, 1, 2, p.data());
  EXPECT_FLOAT_EQ(p[0], 16 / 255.f);
  EXPECT_FLOAT_EQ(p[1], 17 / 255.f);
  EXPECT_FLOAT_EQ(p[2], 20 / 255.f);
  EXPECT_FLOAT_EQ(p[4], 18 / 255.f);  // second patch starts at column 2
}

void expect_error(const std::string& img, const std::string& lab, const std::string& needle) {
  try {
    parse_idx(img, lab, "set");
    FAIL() << "no error for " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Idx, BadHeadersAreNamed) {
  expect_error("short", idx1(1), "16");
  expect_error(be(0x801) + idx3(1, 2, 2).substr(4), idx1(1), "magic");
  expect_error(idx3(2, 2, 2).substr(0, 20), idx1(2), "needs");
  expect_error(idx3(2, 2, 2), idx1(3), "labels for 2 images");
  const auto dir = shrink::testing::temp_dir("idx_bad");
  std::string gz = gzip(idx3(50, 8, 8));
  shrink::testing::write_bytes(dir / "t.gz", gz.substr(0, gz.size() / 2));
  EXPECT_THROW(read_maybe_gzip(dir / "t.gz"), Error);
  EXPECT_THROW(load_fashion_mnist("train", dir), Error);
  EXPECT_THROW(load_fashion_mnist("valid"), Error);
}

TEST(Idx, FashionMnistPackage) {
  // Installed by scripts/install-deps.sh (dataset-fashion-mnist); the test fails loudly when it is missing.
  const ImageSet t = load_fashion_mnist("test");
  EXPECT_EQ(t.n, 10000);
  EXPECT_EQ(t.rows, 28);
  EXPECT_EQ(t.cols, 28);
  std::vector<int> counts(10, 0);
  for (int32_t l : t.labels) ++counts.at(l);
  for (int c : counts) EXPECT_EQ(c, 1000);  // the test split is balanced
}

}  // namespace
}  // namespace shrink::train
