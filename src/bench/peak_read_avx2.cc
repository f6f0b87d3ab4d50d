// Streaming-read loop with 256-bit loads for measure_stream_read_gbps (src/bench/peak.cc).
#include <immintrin.h>

#include <cstddef>

namespace shrink::detail {

// Sums n floats (n a multiple of 64, p 64-byte aligned) with eight independent accumulators.
float stream_read_sum_avx2(const float* p, size_t n) {
  __m256 a[8];
  for (auto& v : a) v = _mm256_setzero_ps();
  for (size_t i = 0; i < n; i += 64)
    for (int j = 0; j < 8; ++j) a[j] = _mm256_add_ps(a[j], _mm256_load_ps(p + i + 8 * j));
  for (int j = 1; j < 8; ++j) a[0] = _mm256_add_ps(a[0], a[j]);
  alignas(32) float out[8];
  _mm256_store_ps(out, a[0]);
  float s = 0;
  for (float f : out) s += f;
  return s;
}

}  // namespace shrink::detail
