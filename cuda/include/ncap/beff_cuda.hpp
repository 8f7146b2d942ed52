// CUDA version of the core: the same numbers as ncap::beta_eff / ncap::degrees
// for arrays that live in GPU memory (the MatrixViews hold device pointers,
// float16 allowed). Results come back to the host. Every call runs on ncap's
// own stream of `device`, restores the caller's current device, and returns
// once its work is done.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ncap/core.hpp"

namespace ncap::cuda {

struct Options {
  // Set when a producer refused DLPack's stream handshake: its stream is
  // unknown, so the call first waits for the whole device.
  bool synchronize_device_first = false;
  // The batch numerator's strategy: "auto" (the one with fewer operations, as
  // on the CPU), "gram" (B x B Gram products) or "rows" (degree-matrix rows).
  std::string strategy = "auto";
};

int device_count();

// ncap's stream on `device` (created on first use; `device` must be current).
cudaStream_t stream_for(int device);

BetaTerms beta_eff(const Trace& trace, Reduction reduction, int device, const Options& options = {});
void degrees(const Trace& trace, const std::vector<double*>& host_delta_in,
             const std::vector<double*>& host_delta_out, int device, const Options& options = {});

// The device memory a call needs ("batch", "sample" or "degrees"): the
// up-front estimate, exact for this implementation.
size_t workspace_bytes(const std::vector<int64_t>& widths, int64_t batch, const std::string& work,
                       const std::string& strategy = "auto");
// Per weight layer l = 2..L-1: "gram" or "rows", as the batch numerator picks.
std::vector<std::string> numerator_strategies(const std::vector<int64_t>& widths, int64_t batch);

size_t cached_workspace_bytes(int device);
void release_workspaces();

}  // namespace ncap::cuda
