// The machine's float64 multiply-add throughput, for benchmarks: a figure of
// the kernel means the same on any CPU once divided by it.
#pragma once

#include "ncap/kernels.hpp"

namespace ncap {

struct PeakRate {
  double fmas_per_second = 0;  // float64 multiply-adds per second, all threads together
  int threads = 0;
  kernels::Isa isa = kernels::Isa::Generic;
};

// Runs a register-bound multiply-add loop on `threads` threads (0 = all) for
// about `seconds` each, with the given instruction set's kernels; best of
// `repeats`. Each thread is timed on its own CPU clock (time descheduled on a
// busy machine does not count) and the team's rate is the sum of theirs.
PeakRate fma_peak(int threads, double seconds, kernels::Isa isa, int repeats);

}  // namespace ncap
