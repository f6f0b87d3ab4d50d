// Streaming-read loop with 512-bit loads for measure_stream_read_gbps (src/bench/peak.cc).
#include <immintrin.h>

#include <cstddef>

namespace shrink::detail {

// Sums n floats (n a multiple of 64, p 64-byte aligned) with eight independent accumulators.
float stream_read_sum_avx512(const float* p, size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  alignas(64) float out[16];
  _mm512_store_ps(out, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  float s = 0;
  for (float f : out) s += f;
  return s;
}

}  // namespace shrink::detail
