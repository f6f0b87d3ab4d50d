// IDX image data (MNIST-format) readers, gzip through zlib, and patching (include/shrink/train/data.h).
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/train/data.h>

#include <zlib.h>

#include <cstring>

namespace shrink::train {

namespace {

uint32_t be32(const std::string& b, size_t off) {
  return (uint32_t(uint8_t(b[off])) << 24) | (uint32_t(uint8_t(b[off + 1])) << 16) |
         (uint32_t(uint8_t(b[off + 2])) << 8) | uint32_t(uint8_t(b[off + 3]));
}

}  // namespace

std::string read_maybe_gzip(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) fail("{}: no such file", path.string());
  const std::string raw = read_text_file(path);
  if (raw.size() < 2 || uint8_t(raw[0]) != 0x1f || uint8_t(raw[1]) != 0x8b) return raw;
  z_stream zs{};
  check(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, "{}: cannot initialise gzip decompression", path.string());
  std::string out;
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  zs.avail_in = static_cast<uInt>(raw.size());
  char buf[1 << 16];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      fail("{}: corrupt gzip data (zlib error {} after {} output bytes); re-download or reinstall the file",
           path.string(), rc, out.size());
    }
    out.append(buf, sizeof(buf) - zs.avail_out);
    if (rc != Z_STREAM_END && zs.avail_in == 0 && zs.avail_out != 0) {
      inflateEnd(&zs);
      fail("{}: gzip data ends early after {} output bytes; the file is truncated", path.string(), out.size());
    }
  }
  inflateEnd(&zs);
  return out;
}

ImageSet parse_idx(const std::string& img, const std::string& lab, const std::string& name) {
  check(img.size() >= 16, "{}: images file has {} bytes; an IDX3 header needs 16", name, img.size());
  check(lab.size() >= 8, "{}: labels file has {} bytes; an IDX1 header needs 8", name, lab.size());
  check(be32(img, 0) == 0x803, "{}: images magic 0x{:08x}; expected 0x00000803 (IDX3 unsigned bytes)", name,
        be32(img, 0));
  check(be32(lab, 0) == 0x801, "{}: labels magic 0x{:08x}; expected 0x00000801 (IDX1 unsigned bytes)", name,
        be32(lab, 0));
  ImageSet s;
  s.n = be32(img, 4);
  s.rows = be32(img, 8);
  s.cols = be32(img, 12);
  check(s.rows > 0 && s.cols > 0 && s.rows <= 4096 && s.cols <= 4096, "{}: image size {}x{}; expected 1..4096 each",
        name, s.rows, s.cols);
  const uint64_t need = 16 + uint64_t(s.n) * uint64_t(s.rows) * uint64_t(s.cols);
  check(img.size() == need, "{}: images file has {} bytes; the header ({} images of {}x{}) needs {}", name, img.size(),
        s.n, s.rows, s.cols, need);
  check(be32(lab, 4) == uint32_t(s.n), "{}: {} labels for {} images", name, be32(lab, 4), s.n);
  check(lab.size() == 8 + uint64_t(s.n), "{}: labels file has {} bytes; expected {}", name, lab.size(), 8 + s.n);
  s.pixels.assign(img.begin() + 16, img.end());
  s.labels.resize(s.n);
  for (int64_t i = 0; i < s.n; ++i) s.labels[i] = uint8_t(lab[8 + i]);
  return s;
}

ImageSet read_idx_images(const std::filesystem::path& images, const std::filesystem::path& labels) {
  return parse_idx(read_maybe_gzip(images), read_maybe_gzip(labels), images.string() + " + " + labels.filename().string());
}

std::filesystem::path fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

ImageSet load_fashion_mnist(const std::string& split, const std::filesystem::path& dir) {
  check(split == "train" || split == "test", "Fashion-MNIST split '{}'; expected train or test", split);
  const std::string stem = split == "train" ? "train" : "t10k";
  const auto img = dir / (stem + "-images-idx3-ubyte.gz"), lab = dir / (stem + "-labels-idx1-ubyte.gz");
  if (!std::filesystem::exists(img) || !std::filesystem::exists(lab))
    fail("{}: Fashion-MNIST {} files are missing (looked for {} and {}); install the Debian package: "
         "apt-get install dataset-fashion-mnist (scripts/install-deps.sh does)",
         dir.string(), split, img.filename().string(), lab.filename().string());
  return read_idx_images(img, lab);
}

void image_patches(const ImageSet& s, int64_t i, int p, float* out) {
  check(p > 0 && s.rows % p == 0 && s.cols % p == 0, "patch size {} does not divide the {}x{} images", p, s.rows,
        s.cols);
  check(i >= 0 && i < s.n, "image {} outside [0, {})", i, s.n);
  const uint8_t* img = s.pixels.data() + i * s.rows * s.cols;
  const int64_t pr = s.rows / p, pc = s.cols / p;
  for (int64_t a = 0; a < pr; ++a)
    for (int64_t b = 0; b < pc; ++b)
      for (int y = 0; y < p; ++y)
        for (int x = 0; x < p; ++x) *out++ = img[(a * p + y) * s.cols + b * p + x] / 255.f;
}

void patches_to_image(const float* patches, int64_t rows, int64_t cols, int p, float* pixels) {
  check(p > 0 && rows % p == 0 && cols % p == 0, "patch size {} does not divide the {}x{} images", p, rows, cols);
  for (int64_t a = 0; a < rows / p; ++a)
    for (int64_t b = 0; b < cols / p; ++b)
      for (int y = 0; y < p; ++y)
        for (int x = 0; x < p; ++x) pixels[(a * p + y) * cols + b * p + x] = *patches++;
}

}  // namespace shrink::train
