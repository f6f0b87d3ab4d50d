// The one thread pool of the process: OpenMP's, which oneDNN shares (libdnnl is built on OpenMP).
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
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

// Like parallel_for, but threads take chunks of `chunk` items from a shared counter until none are left, so a
// thread that runs slower (a busy sibling core, a noisy VM neighbour) takes fewer chunks instead of holding up the
// others at the closing barrier. For loops of equal-cost items where a static split measured imbalance.
template <typename Fn>
void parallel_for_dynamic(int64_t n, int64_t chunk, Fn&& fn) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(1, chunk);
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), (n + chunk - 1) / chunk));
  if (threads <= 1 || omp_in_parallel()) {
    fn(int64_t{0}, n);
    return;
  }
  std::atomic<int64_t> next{0};
#pragma omp parallel num_threads(threads)
  {
    for (int64_t b = next.fetch_add(chunk, std::memory_order_relaxed); b < n;
         b = next.fetch_add(chunk, std::memory_order_relaxed))
      fn(b, std::min(n, b + chunk));
  }
}

}  // namespace shrink
