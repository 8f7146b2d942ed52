// A deterministic parallel loop: task t always runs the same code and writes
// its own output slot, so results depend neither on the thread count nor on
// which thread runs which task.
//
// The threads are ncap's own (cpp/src/parallel.cpp), not OpenMP's: the caller
// works through the tasks itself and never waits for a helper that has not
// started one. On a busy machine (a training step, TensorFlow's thread pools,
// other jobs on the same cores) a helper that is not scheduled therefore costs
// nothing; with an OpenMP team it stalled the call at the barrier (measured on
// two shared cores: 20-40 ms instead of 0.1-8 ms). Idle helpers sleep.
#pragma once

#include <cstdint>
#include <type_traits>

namespace ncap {

// Threads used when all are asked for: OMP_NUM_THREADS if set, else the CPUs
// this process may run on; 1 in a process forked from one that had loaded
// ncap (the helpers are not copied by fork).
int available_threads();

// True in a child forked after this library was loaded.
bool in_forked_child();

// Below this many multiply-adds (dense count) a call runs on one thread: waking a
// helper takes longer than the work. 1e6 made the reference trace (2.36e6, ~0.2 ms
// on a 2.1 GHz Xeon) slower on two threads than on one; at 3e6 no bench row is.
constexpr double kParallelWork = 3.0e6;
// Reading one input value costs about as much as this many multiply-adds.
constexpr double kLoadWork = 8.0;

inline int pick_threads(int requested, double work) {
  if (work < kParallelWork) return 1;
  const int avail = available_threads();
  return requested <= 0 ? avail : (requested < avail ? requested : avail);
}

namespace detail {
// A non-owning reference to a callable void(int64_t).
struct TaskRef {
  void* object;
  void (*call)(void*, int64_t);
  void operator()(int64_t t) const { call(object, t); }
};
void run_parallel(int64_t n_tasks, int threads, TaskRef task);
}  // namespace detail

// Inside a parallel_for task: 0 .. threads-1, distinct among the threads working
// on that call (for per-thread scratch memory); 0 outside.
int task_slot();

// fn(t) for t in [0, n_tasks), on up to `threads` threads (the caller is one of
// them). fn must not throw.
template <typename Fn>
void parallel_for(int64_t n_tasks, int threads, Fn&& fn) {
  if (threads <= 1 || n_tasks <= 1) {
    for (int64_t t = 0; t < n_tasks; ++t) fn(t);
    return;
  }
  using F = typename std::remove_reference<Fn>::type;
  detail::TaskRef ref{const_cast<void*>(static_cast<const void*>(&fn)),
                      [](void* f, int64_t t) { (*static_cast<F*>(f))(t); }};
  detail::run_parallel(n_tasks, threads, ref);
}

}  // namespace ncap
