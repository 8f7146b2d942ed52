// CUDA version of the core: the same numbers as ncap::beta_eff / ncap::degrees
// for arrays that live in GPU memory. The MatrixViews hold device pointers.
#pragma once

#include <vector>

#include "ncap/core.hpp"

namespace ncap::cuda {

int device_count();

// All arrays must live on `device`. Results come back to the host.
BetaTerms beta_eff(const Trace& trace, Reduction reduction, int device);
void degrees(const Trace& trace, const std::vector<double*>& host_delta_in,
             const std::vector<double*>& host_delta_out, int device);

}  // namespace ncap::cuda
