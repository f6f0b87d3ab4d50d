// The machine's measured peaks that kernel and model benchmarks state their results against.
#pragma once

#include <cstddef>

namespace shrink {

// Sums n floats (p 64-byte aligned) on the process pool with the loads measure_stream_read_gbps uses; benchmarks
// time it over the same bytes as a kernel, interleaved, for a paired bandwidth reference.
float stream_read_sum(const float* p, size_t n);

// Streaming-read bandwidth in GB/s (1e9 bytes/s): `threads` threads sum 16 MiB parts of a 512 MiB buffer in turn
// (far larger than L3) with the widest vector loads active_isa() allows; best of many passes. ~1-2 s, most of it
// mapping the buffer (freed again on return).
double measure_stream_read_gbps(int threads);

// Both read figures of one measurement (GB/s, 1e9 bytes/s):
// - burst: what measure_stream_read_gbps returns, the best 16 MiB pass (an upper bound: the best moment of ~1 s);
// - sustained: STREAM's rule, the best of 10 passes over the whole 512 MiB buffer (16x a 32 MiB L3), each ~15 ms.
// A decoder streams all its weights (GBs) per token, so its weight bandwidth is compared with both.
struct StreamRead {
  double burst_gbps = 0;
  double sustained_gbps = 0;
};
StreamRead measure_stream_read(int threads);

// fp32 GEMM peak in GFLOP/s: the best oneDNN sgemm rate over a few large square and rectangular shapes
// (m 256..1024, n and k 1024..2048) on `threads` threads, best of many runs. ~1.5 s.
double measure_fp32_peak_gflops(int threads);

}  // namespace shrink
