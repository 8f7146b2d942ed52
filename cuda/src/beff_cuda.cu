// CUDA kernels for ncap: one thread block per sample row to load and sum, one
// thread per (b, b') pair for the Gram products. Every sum runs in a fixed
// order, so a given GPU returns the same bits on every call.
#include <cuda_runtime.h>

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

#include "ncap/beff_cuda.hpp"

namespace ncap::cuda {
namespace {

constexpr int kThreads = 256;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("ncap CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

// Device memory that frees itself.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t count) : count_(count) {
    if (count_ == 0) return;
    const cudaError_t err = cudaMalloc(&ptr_, count_ * sizeof(double));
    if (err != cudaSuccess) {
      std::ostringstream os;
      os << "could not allocate " << count_ * sizeof(double) / (1024.0 * 1024.0)
         << " MiB on the GPU for ncap's working memory (" << cudaGetErrorString(err) << "); split the batch";
      throw WorkspaceError(os.str());
    }
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : ptr_(o.ptr_), count_(o.count_) { o.ptr_ = nullptr; o.count_ = 0; }
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(count_, o.count_);
    return *this;
  }
  ~Buffer() {
    if (ptr_) cudaFree(ptr_);
  }
  double* get() const { return ptr_; }
  std::vector<double> to_host() const {
    std::vector<double> out(count_);
    if (count_) check(cudaMemcpy(out.data(), ptr_, count_ * sizeof(double), cudaMemcpyDeviceToHost), "copy to host");
    return out;
  }

 private:
  double* ptr_ = nullptr;
  size_t count_ = 0;
};

// Fixed-shape tree: deterministic for a given block size.
__device__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();
  return total;
}

template <typename T>
__global__ void load_rows(const T* src, int64_t row_stride, int64_t col_stride, int64_t n, double* rows,
                          double* sum, double* abs_sum) {
  __shared__ double shared[kThreads];
  const int64_t b = blockIdx.x;
  const T* row = src + b * row_stride;
  double acc = 0.0, abs_acc = 0.0;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
    const double x = static_cast<double>(row[k * col_stride]);
    if (rows) rows[b * n + k] = x;
    acc += x;
    abs_acc += fabs(x);
  }
  const double total = block_sum(acc, shared);
  const double abs_total = block_sum(abs_acc, shared);
  if (threadIdx.x == 0) {
    sum[b] = total;
    abs_sum[b] = abs_total;
  }
}

// prod[b * B + b'] = v[b'] * (s_b . g_b') * (z_b . sp_b')   (rows are float64, row-major)
__global__ void gram_products(const double* s, const double* g, int64_t n, const double* z, const double* sp,
                              int64_t n_prev, const double* v, int64_t batch, double* prod) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= batch * batch) return;
  const int64_t b = idx / batch, bp = idx % batch;
  double a = 0.0, c = 0.0;
  for (int64_t i = 0; i < n; ++i) a += s[b * n + i] * g[bp * n + i];
  for (int64_t j = 0; j < n_prev; ++j) c += z[b * n_prev + j] * sp[bp * n_prev + j];
  prod[idx] = v[bp] * a * c;
}

__global__ void weighted_row_sums(const double* prod, const double* u, int64_t batch, double* partial) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= batch) return;
  double acc = 0.0;
  for (int64_t bp = 0; bp < batch; ++bp) acc += prod[b * batch + bp];
  partial[b] = u[b] * acc;
}

// Per-sample dots for the sample reduction: out[b] = x_b . y_b.
__global__ void row_dots(const double* x, const double* y, int64_t n, int64_t batch, double* out) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= batch) return;
  double acc = 0.0;
  for (int64_t k = 0; k < n; ++k) acc += x[b * n + k] * y[b * n + k];
  out[b] = acc;
}

// Keras-layout degrees: out[j * n + i] = inv_b * sum_b x[b, j] * y[b, i] * coef[b].
__global__ void degree_rows(const double* x, int64_t n_prev, const double* y, int64_t n, const double* coef,
                            int64_t batch, double inv_b, double* out) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= n_prev * n) return;
  const int64_t j = idx / n, i = idx % n;
  double acc = 0.0;
  for (int64_t b = 0; b < batch; ++b) acc += x[b * n_prev + j] * (y[b * n + i] * coef[b] * inv_b);
  out[idx] = acc;
}

unsigned blocks_for(int64_t count) { return static_cast<unsigned>((count + kThreads - 1) / kThreads); }

struct DeviceArray {
  const MatrixView* view = nullptr;
  std::string name;
  Buffer rows, sum, abs_sum;
};

void load(DeviceArray& a, const MatrixView& v, std::string name, bool full) {
  a.view = &v;
  a.name = std::move(name);
  a.rows = Buffer(full ? static_cast<size_t>(v.rows * v.cols) : 0);
  a.sum = Buffer(v.rows);
  a.abs_sum = Buffer(v.rows);
  const unsigned grid = static_cast<unsigned>(v.rows);
  if (v.dtype == DType::Float32)
    load_rows<float><<<grid, kThreads>>>(static_cast<const float*>(v.data), v.row_stride, v.col_stride, v.cols,
                                         a.rows.get(), a.sum.get(), a.abs_sum.get());
  else
    load_rows<double><<<grid, kThreads>>>(static_cast<const double*>(v.data), v.row_stride, v.col_stride, v.cols,
                                          a.rows.get(), a.sum.get(), a.abs_sum.get());
  check(cudaGetLastError(), "load_rows");
}

struct DeviceWorkspace {
  int L = 0;
  int64_t batch = 0;
  std::vector<int64_t> widths;
  std::vector<DeviceArray> z, s, g;  // indexed by the SPEC's l
};

std::string indexed(const char* name, int i) { return std::string(name) + "[" + std::to_string(i) + "]"; }

DeviceWorkspace load_all(const Trace& t, int min_layers, bool everything_full, int device) {
  DeviceWorkspace w;
  w.widths = check_trace(t, min_layers);
  check(cudaSetDevice(device), "cudaSetDevice");
  w.L = static_cast<int>(t.acts.size());
  w.batch = t.acts[0].rows;
  w.z.resize(w.L - 1);
  w.s.resize(w.L);
  w.g.resize(w.L + 1);
  for (int l = 0; l <= w.L - 2; ++l) load(w.z[l], t.acts[l], indexed("acts", l), everything_full || l > 0);
  for (int l = 1; l <= w.L - 1; ++l) load(w.s[l], t.derivs[l - 1], indexed("derivs", l - 1), true);
  for (int l = 2; l <= w.L; ++l) load(w.g[l], t.grads[l - 1], indexed("grads", l - 1), everything_full || l < w.L);
  check(cudaDeviceSynchronize(), "loading the trace");
  return w;
}

void check_finite(const std::vector<double>& abs_sum, const std::string& name) {
  for (size_t b = 0; b < abs_sum.size(); ++b) {
    if (!std::isfinite(abs_sum[b])) {
      std::ostringstream os;
      os << "contains NaN or Inf, or values whose sum overflows float64 (at sample " << b
         << "); beta_eff needs finite activations, derivatives and gradients";
      throw ArgumentError(name, os.str());
    }
  }
}

}  // namespace

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
}

BetaTerms beta_eff(const Trace& t, Reduction reduction, int device) {
  check_trace(t, kMinBetaLayers);
  DeviceWorkspace w = load_all(t, kMinBetaLayers, false, device);
  const int L = w.L;
  const int64_t B = w.batch;

  RowSums sums(w.widths, B);
  auto fetch = [](const DeviceArray& a, std::vector<double>& sum, std::vector<double>& abs_sum) {
    sum = a.sum.to_host();
    abs_sum = a.abs_sum.to_host();
    check_finite(abs_sum, a.name);
  };
  for (int l = 0; l <= L - 2; ++l) fetch(w.z[l], sums.z_sum[l], sums.z_abs[l]);
  for (int l = 1; l <= L - 1; ++l) fetch(w.s[l], sums.s_sum[l], sums.s_abs[l]);
  for (int l = 2; l <= L; ++l) fetch(w.g[l], sums.g_sum[l], sums.g_abs[l]);

  std::vector<double> gram_sums(L, 0.0);
  if (reduction == Reduction::Sample) {
    sums.zs.assign(L, {});
    sums.sg.assign(L, {});
    Buffer out(B);
    for (int l = 2; l <= L - 1; ++l) {
      row_dots<<<blocks_for(B), kThreads>>>(w.z[l - 1].rows.get(), w.s[l - 1].rows.get(), w.widths[l - 1], B, out.get());
      check(cudaGetLastError(), "row_dots");
      sums.zs[l] = out.to_host();
      row_dots<<<blocks_for(B), kThreads>>>(w.s[l].rows.get(), w.g[l].rows.get(), w.widths[l], B, out.get());
      check(cudaGetLastError(), "row_dots");
      sums.sg[l] = out.to_host();
    }
  } else {
    Buffer prod(static_cast<size_t>(B * B)), partial(B);
    for (int l = 2; l <= L - 1; ++l) {
      gram_products<<<blocks_for(B * B), kThreads>>>(w.s[l].rows.get(), w.g[l].rows.get(), w.widths[l],
                                                     w.z[l - 1].rows.get(), w.s[l - 1].rows.get(), w.widths[l - 1],
                                                     w.z[l - 2].sum.get(), B, prod.get());
      check(cudaGetLastError(), "gram_products");
      weighted_row_sums<<<blocks_for(B), kThreads>>>(prod.get(), w.g[l + 1].sum.get(), B, partial.get());
      check(cudaGetLastError(), "weighted_row_sums");
      const std::vector<double> host = partial.to_host();
      for (double p : host) gram_sums[l - 1] += p;  // fixed order on the host
    }
  }
  return finish(sums, reduction, gram_sums);
}

void degrees(const Trace& t, const std::vector<double*>& delta_in, const std::vector<double*>& delta_out, int device) {
  DeviceWorkspace w = load_all(t, kMinDegreeLayers, true, device);
  const int L = w.L;
  const int64_t B = w.batch;
  for (int l = 0; l <= L - 2; ++l) check_finite(w.z[l].abs_sum.to_host(), w.z[l].name);
  for (int l = 1; l <= L - 1; ++l) check_finite(w.s[l].abs_sum.to_host(), w.s[l].name);
  for (int l = 2; l <= L; ++l) check_finite(w.g[l].abs_sum.to_host(), w.g[l].name);
  const double inv_b = 1.0 / static_cast<double>(B);
  for (int l = 1; l <= L; ++l) {
    const int64_t n = w.widths[l], n_prev = w.widths[l - 1];
    const size_t size = static_cast<size_t>(n * n_prev);
    Buffer out(size);
    if (l <= L - 1) {
      degree_rows<<<blocks_for(n * n_prev), kThreads>>>(w.z[l - 1].rows.get(), n_prev, w.s[l].rows.get(), n,
                                                         w.g[l + 1].sum.get(), B, inv_b, out.get());
      check(cudaGetLastError(), "degree_rows");
      check(cudaMemcpy(delta_in[l - 1], out.get(), size * sizeof(double), cudaMemcpyDeviceToHost), "copy delta_in");
    } else {
      std::fill(delta_in[l - 1], delta_in[l - 1] + size, 0.0);
    }
    if (l >= 2) {
      degree_rows<<<blocks_for(n * n_prev), kThreads>>>(w.s[l - 1].rows.get(), n_prev, w.g[l].rows.get(), n,
                                                         w.z[l - 2].sum.get(), B, inv_b, out.get());
      check(cudaGetLastError(), "degree_rows");
      check(cudaMemcpy(delta_out[l - 1], out.get(), size * sizeof(double), cudaMemcpyDeviceToHost), "copy delta_out");
    } else {
      std::fill(delta_out[l - 1], delta_out[l - 1] + size, 0.0);
    }
  }
  check_degrees_finite(w.widths, delta_in, delta_out);
}

}  // namespace ncap::cuda
