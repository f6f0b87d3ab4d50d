// The one thread pool of the process: OpenMP's, which oneDNN shares (libdnnl is built on OpenMP).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace shrink {

void set_num_threads(int n);  // n <= 0: all cores
int num_threads();

// Calls fn(begin, end) on disjoint chunks of [0, n) with at least `grain` items each, in parallel.
template <typename Fn>
void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  const int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), max_chunks));
  if (threads <= 1 || omp_in_parallel()) {
    fn(int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num();
    const int64_t nt = omp_get_num_threads();
    const int64_t begin = n * t / nt;
    const int64_t end = n * (t + 1) / nt;
    if (begin < end) fn(begin, end);
  }
}

}  // namespace shrink
