// A deterministic parallel loop: task t always runs the same code and writes
// its own output slot, so results do not depend on the thread count (nor on
// which thread takes which task: they are handed out dynamically, for balance).
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ncap {

// Threads the kernel uses when asked for all of them; 1 in a process forked
// from one that had started an OpenMP team (that runtime is not fork-safe: a
// team in the child would wait forever for threads that were not copied).
int available_threads();

// True in a child forked after this library was loaded.
bool in_forked_child();

// Below this many multiply-adds (about 30 us of one core) a call runs on one
// thread: waking a team costs more than it saves. (An idle OpenMP team keeps
// spinning for a while after a call; OMP_WAIT_POLICY=passive stops that where
// the cores are needed by other work.)
constexpr double kParallelWork = 1.0e6;
// Reading one input value costs about as much as this many multiply-adds.
constexpr double kLoadWork = 8.0;

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
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t t = 0; t < n_tasks; ++t) fn(t);
    return;
  }
#endif
  (void)threads;
  for (int64_t t = 0; t < n_tasks; ++t) fn(t);
}

}  // namespace ncap
