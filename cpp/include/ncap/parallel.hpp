// A deterministic parallel loop: task t always runs the same code and writes
// its own output slot, so results do not depend on the thread count.
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ncap {

inline int available_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Below this many multiply-adds a call runs on one thread: waking a team
// costs more than it saves, and an idle OpenMP team keeps spinning for a while
// on cores that the training step running beside ncap needs.
constexpr double kParallelWork = 4.0e6;

inline int pick_threads(int requested, double work) {
  if (work < kParallelWork) return 1;
  const int avail = available_threads();
  return requested <= 0 ? avail : (requested < avail ? requested : avail);
}

template <typename Fn>
void parallel_for(int64_t n_tasks, int threads, Fn&& fn) {
#ifdef _OPENMP
  if (threads > 1 && n_tasks > 1) {
    // Exceptions must not cross the OpenMP boundary; task bodies here do not throw.
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < n_tasks; ++t) fn(t);
    return;
  }
#endif
  (void)threads;
  for (int64_t t = 0; t < n_tasks; ++t) fn(t);
}

}  // namespace ncap
