// The inner loops of the core. Each is compiled once per instruction set
// (cpp/src/kernels_impl.hpp, included by kernels_{generic,avx2,avx512}.cpp with
// their own compiler flags) and picked at run time for the CPU at hand.
//
// No loop reorders a floating-point sum by data or thread count (no
// -ffast-math): every output is a sum in a fixed order, so a result depends
// only on the inputs and the instruction set, never on the number of threads.
#pragma once

#include <cstdint>

namespace ncap::kernels {

enum class Isa { Generic = 0, Avx2 = 1, Avx512 = 2 };

// Lanes of the sums taken while loading: element k of a row goes to lane
// k % kSumLanes, the lanes are folded in a fixed pairwise order.
constexpr int kSumLanes = 32;

// One matrix read through its nonzeros. Row r of x holds `width` values at
// x + r * ldx; bit k of the words at mask + r * ldm is set where x[r, k] != 0
// (bits at and beyond `width` are zero). Row k of the dense operand y is
// y + k * ldy. With `weight`, x[r, k] * weight[k] is used in place of x[r, k].
struct SparseOperand {
  const double* x = nullptr;
  int64_t ldx = 0;
  const uint64_t* mask = nullptr;
  int64_t ldm = 0;
  int64_t width = 0;
  const double* weight = nullptr;
  const double* y = nullptr;
  int64_t ldy = 0;
};

inline int64_t mask_words(int64_t width) { return (width + 63) / 64; }

struct Table {
  Isa isa;
  // Reads row b of a float32 / float64 matrix (n values, stride in elements):
  // sums[0] = sum of x, sums[1] = sum of |x| (kSumLanes lanes). Writes the
  // values as float64 to dense and their nonzero bits to mask where not null.
  void (*load_row_f32)(const float* src, int64_t stride, int64_t n, double* dense, uint64_t* mask,
                       double* sums);
  void (*load_row_f64)(const double* src, int64_t stride, int64_t n, double* dense, uint64_t* mask,
                       double* sums);
  // Nonzero bits of each of `rows` rows of x (n values each, leading dimension ldx).
  void (*nonzero_masks)(const double* x, int64_t rows, int64_t n, int64_t ldx, uint64_t* mask,
                        int64_t ldm);
  // For r in [r0, r1): out[r - r0] = sum_{c < m} w[c] * P[r, c] * Q[r, c] (w = 1 when null),
  // where P = p.x * p.y and Q = q.x * q.y, both over the nonzeros of x only.
  void (*fused_pair)(const SparseOperand& p, const SparseOperand& q, const double* w, int64_t m,
                     int64_t r0, int64_t r1, double* out);
  // For r in [r0, r1): out[(r - r0) * ldo + c] = (p.x * p.y)[r, c], c < m.
  void (*sparse_times_dense)(const SparseOperand& p, int64_t m, int64_t r0, int64_t r1,
                             double* out, int64_t ldo);
  // dst[j * ldd + r] = src[r * lds + j] for r < rows, j < cols.
  void (*transpose)(const double* src, int64_t lds, int64_t rows, int64_t cols, double* dst, int64_t ldd);
  // sum_k a[k] * c[k] (kSumLanes lanes).
  double (*dot)(const double* a, const double* c, int64_t n);
  // A register-bound loop of independent multiply-adds on the widest vectors:
  // returns a checksum; *fmas is set to the multiply-adds it performed.
  double (*fma_loop)(int64_t iterations, double seed, double* fmas);
};

// The table for the best instruction set this CPU and this build support, or
// the one chosen with force_isa (for tests and benchmarks).
const Table& table();
// The instruction sets this build can run on this CPU, best last.
int supported_isas(Isa* out, int capacity);
const char* isa_name(Isa isa);
// Selects an instruction set for every later call (not thread-safe; tests and
// benchmarks only). Returns false, changing nothing, when it is not supported.
bool force_isa(Isa isa);

}  // namespace ncap::kernels
