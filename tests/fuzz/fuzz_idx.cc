// libFuzzer target: arbitrary bytes as an IDX images + labels pair (the first 4 bytes give the images length, the
// rest after the images are the labels). Only shrink::Error may come out; what parses must be self-consistent.
#include <shrink/core/error.h>
#include <shrink/train/data.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t len;
  std::memcpy(&len, data, 4);
  const size_t n = size - 4;
  if (len > n) len = static_cast<uint32_t>(n);
  const std::string img(reinterpret_cast<const char*>(data) + 4, len);
  const std::string lab(reinterpret_cast<const char*>(data) + 4 + len, n - len);
  try {
    const shrink::train::ImageSet s = shrink::train::parse_idx(img, lab, "fuzz");
    if (static_cast<int64_t>(s.pixels.size()) != s.n * s.rows * s.cols ||
        static_cast<int64_t>(s.labels.size()) != s.n)
      std::abort();
    if (s.n > 0 && s.rows % 2 == 0 && s.cols % 2 == 0) {
      std::string buf(static_cast<size_t>(s.rows * s.cols) * sizeof(float), '\0');
      shrink::train::image_patches(s, s.n - 1, 2, reinterpret_cast<float*>(buf.data()));
    }
  } catch (const shrink::Error&) {
  }
  return 0;
}
