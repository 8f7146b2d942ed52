// Host-callable launchers of ncap's CUDA kernels (kernels.cu). Every launcher
// enqueues on `stream`, checks the launch and clears the runtime's error on
// failure. All sums run in an order fixed by the shapes alone, so a given GPU
// returns the same bits on every call.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "ncap/core.hpp"

namespace ncap::cuda::kernels {

// Where load_rows writes sample b's values (float64, row-major; rows may be
// null: sums only), its sum and sum of |x|, and its first non-finite column
// (or the width when there is none).
struct RowSink {
  double* rows = nullptr;
  double* sum = nullptr;
  double* abs_sum = nullptr;
  double* first_bad = nullptr;
};

// Reads a strided device view (float16, float32 or float64) once.
void load_rows(const MatrixView& view, const RowSink& sink, cudaStream_t stream);

// out[b] = x_b . y_b for row-major (batch x n) float64 rows.
void row_dots(const double* x, const double* y, int64_t n, int64_t batch, double* out, cudaStream_t stream);

// Element (p, k) of an operand: data[p * p_stride + k * k_stride] * k_weight[k]
// * scale (k_weight may be null).
struct Operand {
  const double* data = nullptr;
  int64_t p_stride = 0, k_stride = 0;
  const double* k_weight = nullptr;
  double scale = 1.0;
};

// X = A B^T (inner length k1) and Y = C D^T (inner length k2), both P x Q;
// the sum over (p, q) of X_pq Y_pq p_weight[p] q_weight[q] (weights may be null).
struct ProductPair {
  Operand a, b, c, d;
  int64_t k1 = 0, k2 = 0, p = 0, q = 0;
  const double* p_weight = nullptr;
  const double* q_weight = nullptr;
};

// The partial sums sum_of_products needs room for.
size_t partial_count(int64_t p, int64_t q);
void sum_of_products(const ProductPair& pair, double* partials, double* total, cudaStream_t stream);

// out (P x Q, row-major) = A B^T with inner length k.
void product_matrix(const Operand& a, const Operand& b, int64_t k, int64_t p, int64_t q, double* out,
                    cudaStream_t stream);

// Keeps `stream` busy for about `nanoseconds` (a test producer's slow write).
void spin(int64_t nanoseconds, cudaStream_t stream);

}  // namespace ncap::cuda::kernels
