// Where everything lives in ncap's device workspace for one call, computed
// from the shapes alone. Its size is the up-front memory estimate: the call
// refuses (MemoryError) before allocating when it exceeds the device's free
// memory, as the CPU kernel does against the host's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ncap/core.hpp"

namespace ncap::cuda {

enum class Work { BatchBeta, SampleBeta, Degrees };

// One input array in the workspace. Offsets count doubles from the start.
struct PlannedArray {
  std::string name;   // the argument, e.g. "grads[2]"
  int64_t width = 0;
  bool full = false;  // float64 rows kept (otherwise sums only)
  size_t rows = 0;    // B x width row-major, when full
  size_t sums = 0;    // sum[B], then sum of |x| [B], then first non-finite column [B]
};

struct Plan {
  Work work = Work::BatchBeta;
  int layers = 0;  // L
  int64_t batch = 0;
  std::vector<int64_t> widths;  // n_0 .. n_L
  // Indexed by the SPEC's l: z[0..L-2], s[1..L-1], g[2..L] (others unused).
  std::vector<PlannedArray> z, s, g;
  std::vector<PlannedArray*> in_argument_order;  // acts, derivs, grads

  // SampleBeta: per-sample dots zs[l], sg[l] (B each), l = 2..L-1.
  std::vector<size_t> zs, sg;
  // BatchBeta: the layer sums (one double per weight layer, at layer_sums + l - 1)
  // and, per l = 2..L-1, whether the Gram products are used (else degree rows).
  size_t layer_sums = 0;
  std::vector<bool> gram;
  size_t partials = 0;  // shared by the layers, which run one after another
  // Degrees: delta_in / delta_out of weight layer l (n_{l-1} x n_l), where computed.
  std::vector<size_t> delta_in, delta_out;

  size_t results_doubles = 0;  // [0, results_doubles) is copied back, in one copy
  size_t total_doubles = 0;

  size_t total_bytes() const { return total_doubles * sizeof(double); }
  size_t result_bytes() const { return results_doubles * sizeof(double); }

  Plan() = default;
  Plan(const Plan&) = delete;  // in_argument_order points into z, s, g
  Plan& operator=(const Plan&) = delete;
};

// Checks the layer count for `work` (as check_trace does) and lays out the workspace.
// `strategy` is the batch numerator's (Auto: by operation count, as on the CPU).
void make_plan(const std::vector<int64_t>& widths, int64_t batch, Work work, Strategy strategy, Plan& plan);

}  // namespace ncap::cuda
