#include "ncap/kernels.hpp"

#include <cmath>
#include <cstring>

namespace ncap::kernels {

namespace {
constexpr int kLanes = 8;

#if defined(__GNUC__) || defined(__clang__)
#define NCAP_HAVE_VECTOR_EXT 1
#define NCAP_INLINE inline __attribute__((always_inline))
// Four doubles; compiles to one AVX register in the x86-64-v3 clone, two SSE
// registers otherwise.
typedef double v4d __attribute__((vector_size(32)));
NCAP_INLINE v4d load4(const double* p) {
  v4d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
NCAP_INLINE void store4(double* p, v4d v) { std::memcpy(p, &v, sizeof v); }
NCAP_INLINE v4d load4_as_double(const double* p) { return load4(p); }
NCAP_INLINE v4d load4_as_double(const float* p) {
  typedef float v4f __attribute__((vector_size(16)));
  v4f v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_convertvector(v, v4d);
}
NCAP_INLINE v4d abs4(v4d v) {
  typedef long long v4i __attribute__((vector_size(32)));
  const v4i mask = {0x7fffffffffffffffLL, 0x7fffffffffffffffLL, 0x7fffffffffffffffLL, 0x7fffffffffffffffLL};
  return reinterpret_cast<v4d>(reinterpret_cast<v4i>(v) & mask);
}
#else
#define NCAP_HAVE_VECTOR_EXT 0
#define NCAP_INLINE inline
#endif

NCAP_INLINE double fold(const double (&acc)[kLanes]) {
  // Fixed pairwise order: the same bits on every run.
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}
}  // namespace

namespace {
template <typename T, bool kStore>
NCAP_INLINE void load_contiguous(const T* __restrict src, int64_t n, double* __restrict dst, double* sums) {
  double acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  double abs_acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
#if NCAP_HAVE_VECTOR_EXT
  // Lanes 0-3 and 4-7 of the scalar version, held in two vectors each.
  v4d lo = {0, 0, 0, 0}, hi = lo, abs_lo = lo, abs_hi = lo;
  for (; i + kLanes <= n; i += kLanes) {
    const v4d x_lo = load4_as_double(src + i), x_hi = load4_as_double(src + i + 4);
    if constexpr (kStore) {
      store4(dst + i, x_lo);
      store4(dst + i + 4, x_hi);
    }
    lo += x_lo;
    hi += x_hi;
    abs_lo += abs4(x_lo);
    abs_hi += abs4(x_hi);
  }
  for (int k = 0; k < 4; ++k) {
    acc[k] = lo[k];
    acc[k + 4] = hi[k];
    abs_acc[k] = abs_lo[k];
    abs_acc[k + 4] = abs_hi[k];
  }
#endif
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const double x = static_cast<double>(src[i + k]);
      if constexpr (kStore) dst[i + k] = x;
      acc[k] += x;
      abs_acc[k] += std::fabs(x);
    }
  }
  for (int k = 0; i < n; ++i, ++k) {
    const double x = static_cast<double>(src[i]);
    if constexpr (kStore) dst[i] = x;
    acc[k] += x;
    abs_acc[k] += std::fabs(x);
  }
  sums[0] = fold(acc);
  sums[1] = fold(abs_acc);
}

template <typename T>
NCAP_INLINE void load_row_impl(const T* src, int64_t stride, int64_t n, double* dst, double* sums) {
  if (stride == 1) {
    if (dst) load_contiguous<T, true>(src, n, dst, sums);
    else load_contiguous<T, false>(src, n, dst, sums);
    return;
  }
  // Strided rows: same lane order as the contiguous path, so results match bit for bit.
  double acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  double abs_acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(src[i * stride]);
    if (dst) dst[i] = x;
    acc[i % kLanes] += x;
    abs_acc[i % kLanes] += std::fabs(x);
  }
  sums[0] = fold(acc);
  sums[1] = fold(abs_acc);
}
}  // namespace

NCAP_MULTIVERSION
void load_row(const float* src, int64_t stride, int64_t n, double* dst, double* sums) {
  load_row_impl(src, stride, n, dst, sums);
}

NCAP_MULTIVERSION
void load_row(const double* src, int64_t stride, int64_t n, double* dst, double* sums) {
  load_row_impl(src, stride, n, dst, sums);
}

NCAP_MULTIVERSION
double lane_sum(const double* __restrict x, int64_t n) {
  double acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += x[i + k];
  for (int k = 0; i < n; ++i, ++k) acc[k] += x[i];
  return fold(acc);
}

NCAP_MULTIVERSION
void row_times_matrix(const double* __restrict x, int64_t n, const double* __restrict yt,
                      int64_t ld, int64_t m, double* __restrict out, int64_t* __restrict scratch) {
  // Gather the non-zero entries of x once (ReLU masks and dropout make many
  // of them zero), then sweep the output in blocks of 16 whose accumulators
  // stay in registers. Each out[k] sums over i in increasing order.
  int64_t* nz = scratch;
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i)
    if (x[i] != 0.0) nz[count++] = i;
  int64_t k0 = 0;
#if NCAP_HAVE_VECTOR_EXT
  // Eight independent accumulators hide the FMA latency.
  for (; k0 + 32 <= m; k0 += 32) {
    v4d acc[8] = {};
    for (int64_t t = 0; t < count; ++t) {
      const double a = x[nz[t]];
      const v4d av = {a, a, a, a};
      const double* y = yt + nz[t] * ld + k0;
      for (int r = 0; r < 8; ++r) acc[r] += av * load4(y + 4 * r);
    }
    for (int r = 0; r < 8; ++r) store4(out + k0 + 4 * r, acc[r]);
  }
  for (; k0 + 16 <= m; k0 += 16) {
    v4d acc0 = {0, 0, 0, 0}, acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int64_t t = 0; t < count; ++t) {
      const double a = x[nz[t]];
      const v4d av = {a, a, a, a};
      const double* y = yt + nz[t] * ld + k0;
      acc0 += av * load4(y);
      acc1 += av * load4(y + 4);
      acc2 += av * load4(y + 8);
      acc3 += av * load4(y + 12);
    }
    store4(out + k0, acc0);
    store4(out + k0 + 4, acc1);
    store4(out + k0 + 8, acc2);
    store4(out + k0 + 12, acc3);
  }
#endif
  for (int64_t k = k0; k < m; ++k) {
    double acc = 0.0;
    for (int64_t t = 0; t < count; ++t) acc += x[nz[t]] * yt[nz[t] * ld + k];
    out[k] = acc;
  }
}

NCAP_MULTIVERSION
double weighted_triple_dot(const double* __restrict w, const double* __restrict a,
                           const double* __restrict c, int64_t m) {
  double acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + kLanes <= m; k += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += w[k + j] * a[k + j] * c[k + j];
  for (int j = 0; k < m; ++k, ++j) acc[j] += w[k] * a[k] * c[k];
  return fold(acc);
}

NCAP_MULTIVERSION
double dot(const double* __restrict a, const double* __restrict c, int64_t m) {
  double acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + kLanes <= m; k += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += a[k + j] * c[k + j];
  for (int j = 0; k < m; ++k, ++j) acc[j] += a[k] * c[k];
  return fold(acc);
}

}  // namespace ncap::kernels
