#include "ncap/parallel.hpp"

#include <atomic>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define NCAP_HAVE_ATFORK 1
#endif

namespace ncap {
namespace {

std::atomic<bool> forked{false};

#ifdef NCAP_HAVE_ATFORK
void on_fork_child() { forked.store(true, std::memory_order_relaxed); }

// Registered when the library is loaded, i.e. before any team can exist.
[[maybe_unused]] const bool registered = [] { return pthread_atfork(nullptr, nullptr, &on_fork_child) == 0; }();
#endif

}  // namespace

bool in_forked_child() { return forked.load(std::memory_order_relaxed); }

int available_threads() {
#ifdef _OPENMP
  if (in_forked_child()) return 1;
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace ncap
