#include "ncap/peak.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <vector>

#include "ncap/parallel.hpp"

namespace ncap {
namespace {

// CPU time of the calling thread (wall time where there is no such clock).
double thread_seconds() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
  timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) return ts.tv_sec + 1e-9 * ts.tv_nsec;
#endif
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace
PeakRate fma_peak(int threads, double seconds, kernels::Isa isa, int repeats) {
  const kernels::Isa before = kernels::table().isa;
  if (!kernels::force_isa(isa)) isa = before;
  const kernels::Table k = kernels::table();
  const int team = std::min(threads <= 0 ? available_threads() : threads, 256);
  // Calibrate the iterations on one thread so that a run lasts about `seconds`.
  int64_t iterations = 1 << 16;
  double fmas = 0, sink = 0;
  for (;;) {
    const double t0 = thread_seconds();
    sink += k.fma_loop(iterations, 1.0, &fmas);
    const double dt = thread_seconds() - t0;
    if (dt > seconds / 4 || iterations > (int64_t{1} << 40)) {
      iterations = static_cast<int64_t>(iterations * (seconds / (dt > 0 ? dt : 1e-9)));
      break;
    }
    iterations *= 4;
  }
  if (iterations < 1) iterations = 1;
  PeakRate best;
  best.threads = team;
  best.isa = isa;
  // Each thread's rate is timed on its own CPU clock, so that time spent
  // descheduled on a shared machine does not count; the team's is their sum.
  std::vector<double> rate(team, 0.0), sinks(team, 0.0);
  for (int rep = 0; rep < (repeats > 0 ? repeats : 1); ++rep) {
    parallel_for(team, team, [&](int64_t t) {
      double done = 0;
      const double t0 = thread_seconds();
      sinks[t] += k.fma_loop(iterations, 1.0 + t, &done);
      rate[t] = done / (thread_seconds() - t0);
    });
    double total = 0;
    for (double r : rate) total += r;
    if (total > best.fmas_per_second) best.fmas_per_second = total;
  }
  for (double s : sinks) sink += s;
  if (sink == 0.12345) best.threads = -1;  // keeps the loops from being optimised away
  kernels::force_isa(before);
  return best;
}

}  // namespace ncap
