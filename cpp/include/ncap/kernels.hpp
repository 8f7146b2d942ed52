// The inner loops of the core, written so that compilers vectorise them
// without reordering any floating-point sum (no -ffast-math): every loop is
// either an axpy (no reduction) or a sum over a fixed number of lanes.
#pragma once

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(NCAP_NO_MULTIVERSION)
// One build runs everywhere and uses AVX2/FMA where the CPU has it.
#define NCAP_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define NCAP_MULTIVERSION
#endif

namespace ncap::kernels {

// Reads one row (n elements, stride in elements) as float64 into dst (skipped
// when dst is null); sums[0] = sum of the row, sums[1] = sum of |x|.
void load_row(const float* src, int64_t stride, int64_t n, double* dst, double* sums);
void load_row(const double* src, int64_t stride, int64_t n, double* dst, double* sums);

// out[r, :] = sum_i x[r, i] * y[i, :] for r < rows (x: rows x n, y: n x m,
// row-major with leading dimensions ldx, ldy, ldo). Skips x[r, i] == 0 (ReLU
// sparsity). Every output sums over i in increasing order.
void sparse_times_dense(const double* x, int64_t rows, int64_t n, int64_t ldx, const double* y,
                        int64_t m, int64_t ldy, double* out, int64_t ldo);

// sum_k w[k] * a[k] * c[k] with 8 fixed lanes.
double weighted_triple_dot(const double* w, const double* a, const double* c, int64_t m);

// sum_k a[k] * c[k] with 8 fixed lanes.
double dot(const double* a, const double* c, int64_t m);

}  // namespace ncap::kernels
