// ncap's CUDA kernels. Loads: one block per sample row. Products: 16 x 16
// output tiles through shared memory, one thread per output, blocks looping
// over tiles. Every reduction is a fixed tree over a grid that depends only on
// the shapes: the same inputs give the same bits on a given GPU.
#include "kernels.hpp"

#include "runtime.hpp"

#ifdef NCAP_CUDA_EMULATION
#define NCAP_LAUNCH(kernel, grid, block, stream, ...) \
  ::ncap_emulation::launch((grid), (block), (stream), [&] { kernel(__VA_ARGS__); })
#else
#define NCAP_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

namespace ncap::cuda::kernels {
namespace {

constexpr unsigned kMaxThreads = 256;
constexpr int kTile = 16;  // kTile * kTile == kMaxThreads
constexpr int64_t kMaxRowBlocks = 65535;
constexpr int64_t kMaxTileBlocks = 2048;

__device__ __forceinline__ bool is_finite(double x) { return x - x == 0.0; }

// IEEE binary16 bits -> double; exact for every value.
__device__ __forceinline__ double widen(uint16_t h) {
  const int exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
  double magnitude;
  if (exponent == 0) {
    magnitude = ldexp(static_cast<double>(fraction), -24);  // zero and subnormals
  } else if (exponent == 31) {
    const double inf = ldexp(1.0, 2000);
    magnitude = fraction ? inf - inf : inf;
  } else {
    magnitude = ldexp(static_cast<double>(fraction + 1024), exponent - 25);
  }
  return (h & 0x8000) ? -magnitude : magnitude;
}
// bfloat16 bits (the high half of a float32), as a distinct type for the kernel template.
struct BFloat16 {
  uint16_t bits;
};
__device__ __forceinline__ double widen(BFloat16 x) {
  const int exponent = (x.bits >> 7) & 0xff, fraction = x.bits & 0x7f;
  double magnitude;
  if (exponent == 0) {
    magnitude = ldexp(static_cast<double>(fraction), -133);  // zero and subnormals
  } else if (exponent == 255) {
    const double inf = ldexp(1.0, 2000);
    magnitude = fraction ? inf - inf : inf;
  } else {
    magnitude = ldexp(static_cast<double>(fraction + 128), exponent - 134);
  }
  return (x.bits & 0x8000) ? -magnitude : magnitude;
}
__device__ __forceinline__ double widen(float x) { return static_cast<double>(x); }
__device__ __forceinline__ double widen(double x) { return x; }

// Fixed-shape tree over a power-of-two block; every thread gets the total.
__device__ double block_sum(double v, double* shared) {
  const unsigned t = threadIdx.x;
  shared[t] = v;
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (t < stride) shared[t] += shared[t + stride];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();
  return total;
}

template <typename T>
__global__ void load_rows_kernel(const T* src, int64_t row_stride, int64_t col_stride, int64_t batch, int64_t n,
                                 RowSink sink) {
  __shared__ double sums[kMaxThreads], abs_sums[kMaxThreads], bad[kMaxThreads];
  const unsigned t = threadIdx.x;
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const T* row = src + b * row_stride;
    double acc = 0.0, abs_acc = 0.0, first_bad = static_cast<double>(n);
    for (int64_t k = t; k < n; k += blockDim.x) {
      const double x = widen(row[k * col_stride]);
      if (sink.rows) sink.rows[b * n + k] = x;
      acc += x;
      abs_acc += fabs(x);
      if (!is_finite(x) && static_cast<double>(k) < first_bad) first_bad = static_cast<double>(k);
    }
    sums[t] = acc;
    abs_sums[t] = abs_acc;
    bad[t] = first_bad;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
      if (t < stride) {
        sums[t] += sums[t + stride];
        abs_sums[t] += abs_sums[t + stride];
        if (bad[t + stride] < bad[t]) bad[t] = bad[t + stride];
      }
      __syncthreads();
    }
    if (t == 0) {
      sink.sum[b] = sums[0];
      sink.abs_sum[b] = abs_sums[0];
      sink.first_bad[b] = bad[0];
    }
    __syncthreads();
  }
}

__global__ void row_dots_kernel(const double* x, const double* y, int64_t n, int64_t batch, double* out) {
  __shared__ double shared[kMaxThreads];
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    double acc = 0.0;
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) acc += x[b * n + k] * y[b * n + k];
    const double total = block_sum(acc, shared);
    if (threadIdx.x == 0) out[b] = total;
  }
}

__device__ __forceinline__ double element(const Operand& op, int64_t p, int64_t k) {
  double x = op.data[p * op.p_stride + k * op.k_stride];
  if (op.k_weight) x *= op.k_weight[k];
  return x * op.scale;
}

// Tile (r0.., k0..) of an operand with `rows` rows and inner length k; the
// thread-to-element map follows whichever index is contiguous in memory.
__device__ void load_tile(const Operand& op, int64_t rows, int64_t k, int64_t r0, int64_t k0,
                          double (*tile)[kTile + 1]) {
  const unsigned i = threadIdx.x;
  const unsigned r = op.k_stride == 1 ? i / kTile : i % kTile;
  const unsigned kk = op.k_stride == 1 ? i % kTile : i / kTile;
  tile[r][kk] = (r0 + r < rows && k0 + kk < k) ? element(op, r0 + r, k0 + kk) : 0.0;
}

// sum_k A(p0 + tp, k) B(q0 + tq, k) for this thread's (tp, tq); all threads take part.
__device__ double tile_dot(const Operand& a, const Operand& b, int64_t k, int64_t p, int64_t q, int64_t p0,
                           int64_t q0, double (*ta)[kTile + 1], double (*tb)[kTile + 1]) {
  const unsigned tp = threadIdx.x / kTile, tq = threadIdx.x % kTile;
  double acc = 0.0;
  for (int64_t k0 = 0; k0 < k; k0 += kTile) {
    load_tile(a, p, k, p0, k0, ta);
    load_tile(b, q, k, q0, k0, tb);
    __syncthreads();
    for (int kk = 0; kk < kTile; ++kk) acc += ta[tp][kk] * tb[tq][kk];
    __syncthreads();
  }
  return acc;
}

int64_t tiles(int64_t count) { return (count + kTile - 1) / kTile; }

__global__ void sum_of_products_kernel(ProductPair pp, double* partials) {
  __shared__ double ta[kTile][kTile + 1], tb[kTile][kTile + 1], shared[kMaxThreads];
  const int64_t tiles_q = (pp.q + kTile - 1) / kTile;
  const int64_t count = (pp.p + kTile - 1) / kTile * tiles_q;
  double local = 0.0;
  for (int64_t tile = blockIdx.x; tile < count; tile += gridDim.x) {
    const int64_t p0 = tile / tiles_q * kTile, q0 = tile % tiles_q * kTile;
    const double x = tile_dot(pp.a, pp.b, pp.k1, pp.p, pp.q, p0, q0, ta, tb);
    const double y = tile_dot(pp.c, pp.d, pp.k2, pp.p, pp.q, p0, q0, ta, tb);
    const int64_t p = p0 + threadIdx.x / kTile, q = q0 + threadIdx.x % kTile;
    if (p < pp.p && q < pp.q) {
      double term = x * y;
      if (pp.q_weight) term *= pp.q_weight[q];
      if (pp.p_weight) term *= pp.p_weight[p];
      local += term;
    }
  }
  const double total = block_sum(local, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void sum_partials_kernel(const double* partials, int64_t count, double* total) {
  __shared__ double shared[kMaxThreads];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  const double sum = block_sum(acc, shared);
  if (threadIdx.x == 0) *total = sum;
}

__global__ void product_matrix_kernel(Operand a, Operand b, int64_t k, int64_t p_count, int64_t q_count,
                                      double* out) {
  __shared__ double ta[kTile][kTile + 1], tb[kTile][kTile + 1];
  const int64_t tiles_q = (q_count + kTile - 1) / kTile;
  const int64_t count = (p_count + kTile - 1) / kTile * tiles_q;
  for (int64_t tile = blockIdx.x; tile < count; tile += gridDim.x) {
    const int64_t p0 = tile / tiles_q * kTile, q0 = tile % tiles_q * kTile;
    const double x = tile_dot(a, b, k, p_count, q_count, p0, q0, ta, tb);
    const int64_t p = p0 + threadIdx.x / kTile, q = q0 + threadIdx.x % kTile;
    if (p < p_count && q < q_count) out[p * q_count + q] = x;
  }
}

__global__ void spin_kernel(int64_t nanoseconds) {
#ifndef NCAP_CUDA_EMULATION  // the emulation runs everything in order anyway
  if (threadIdx.x == 0) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < static_cast<unsigned long long>(nanoseconds));
  }
#else
  (void)nanoseconds;
#endif
}

// A power of two in [32, 256] close to the row width: narrow rows waste no threads.
unsigned row_threads(int64_t n) {
  unsigned t = 32;
  while (t < kMaxThreads && t < n) t <<= 1;
  return t;
}

unsigned grid_for(int64_t work, int64_t cap) { return static_cast<unsigned>(work < cap ? (work > 0 ? work : 1) : cap); }

}  // namespace

void load_rows(const MatrixView& v, const RowSink& sink, cudaStream_t stream) {
  const dim3 grid(grid_for(v.rows, kMaxRowBlocks)), block(row_threads(v.cols));
  switch (v.dtype) {
    case DType::Float16:
      NCAP_LAUNCH(load_rows_kernel<uint16_t>, grid, block, stream, static_cast<const uint16_t*>(v.data),
                  v.row_stride, v.col_stride, v.rows, v.cols, sink);
      break;
    case DType::BFloat16:
      NCAP_LAUNCH(load_rows_kernel<BFloat16>, grid, block, stream, static_cast<const BFloat16*>(v.data),
                  v.row_stride, v.col_stride, v.rows, v.cols, sink);
      break;
    case DType::Float32:
      NCAP_LAUNCH(load_rows_kernel<float>, grid, block, stream, static_cast<const float*>(v.data), v.row_stride,
                  v.col_stride, v.rows, v.cols, sink);
      break;
    case DType::Float64:
      NCAP_LAUNCH(load_rows_kernel<double>, grid, block, stream, static_cast<const double*>(v.data), v.row_stride,
                  v.col_stride, v.rows, v.cols, sink);
      break;
  }
  check(cudaGetLastError(), "launching load_rows");
}

void row_dots(const double* x, const double* y, int64_t n, int64_t batch, double* out, cudaStream_t stream) {
  NCAP_LAUNCH(row_dots_kernel, dim3(grid_for(batch, kMaxRowBlocks)), dim3(row_threads(n)), stream, x, y, n, batch,
              out);
  check(cudaGetLastError(), "launching row_dots");
}

size_t partial_count(int64_t p, int64_t q) { return grid_for(tiles(p) * tiles(q), kMaxTileBlocks); }

void sum_of_products(const ProductPair& pair, double* partials, double* total, cudaStream_t stream) {
  const int64_t blocks = static_cast<int64_t>(partial_count(pair.p, pair.q));
  NCAP_LAUNCH(sum_of_products_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kMaxThreads), stream, pair,
              partials);
  check(cudaGetLastError(), "launching sum_of_products");
  NCAP_LAUNCH(sum_partials_kernel, dim3(1), dim3(kMaxThreads), stream, partials, blocks, total);
  check(cudaGetLastError(), "launching sum_partials");
}

void product_matrix(const Operand& a, const Operand& b, int64_t k, int64_t p, int64_t q, double* out,
                    cudaStream_t stream) {
  NCAP_LAUNCH(product_matrix_kernel, dim3(grid_for(tiles(p) * tiles(q), kMaxTileBlocks)), dim3(kMaxThreads),
              stream, a, b, k, p, q, out);
  check(cudaGetLastError(), "launching product_matrix");
}

void spin(int64_t nanoseconds, cudaStream_t stream) {
  NCAP_LAUNCH(spin_kernel, dim3(1), dim3(32), stream, nanoseconds);
  check(cudaGetLastError(), "launching spin");
}

}  // namespace ncap::cuda::kernels
