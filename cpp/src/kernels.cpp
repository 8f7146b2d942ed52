#include "ncap/kernels.hpp"

#include <algorithm>
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
void sparse_times_dense(const double* __restrict x, int64_t rows, int64_t n, int64_t ldx,
                        const double* __restrict y, int64_t m, int64_t ldy, double* __restrict out,
                        int64_t ldo) {
  // A block of y's rows small enough to stay in L1 is applied to every output
  // row before moving on; zeros of x (ReLU masks, dropout) are skipped. Each
  // out[r, k] still accumulates over i in increasing order, so the blocking
  // changes no bits.
  constexpr int64_t kL1Bytes = 24 * 1024;
  const int64_t block = std::max<int64_t>(8, kL1Bytes / (8 * std::max<int64_t>(m, 1)));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < m; ++k) out[r * ldo + k] = 0.0;
  for (int64_t i0 = 0; i0 < n; i0 += block) {
    const int64_t i1 = std::min(n, i0 + block);
    for (int64_t r = 0; r < rows; ++r) {
      const double* __restrict xr = x + r * ldx;
      double* __restrict o = out + r * ldo;
      int64_t k0 = 0;
#if NCAP_HAVE_VECTOR_EXT
      for (; k0 + 32 <= m; k0 += 32) {  // eight accumulators hide the FMA latency
        v4d acc[8];
        for (int q = 0; q < 8; ++q) acc[q] = load4(o + k0 + 4 * q);
        for (int64_t i = i0; i < i1; ++i) {
          const double a = xr[i];
          if (a == 0.0) continue;
          const v4d av = {a, a, a, a};
          const double* yr = y + i * ldy + k0;
          for (int q = 0; q < 8; ++q) acc[q] += av * load4(yr + 4 * q);
        }
        for (int q = 0; q < 8; ++q) store4(o + k0 + 4 * q, acc[q]);
      }
      for (; k0 + 8 <= m; k0 += 8) {
        v4d acc0 = load4(o + k0), acc1 = load4(o + k0 + 4);
        for (int64_t i = i0; i < i1; ++i) {
          const double a = xr[i];
          if (a == 0.0) continue;
          const v4d av = {a, a, a, a};
          acc0 += av * load4(y + i * ldy + k0);
          acc1 += av * load4(y + i * ldy + k0 + 4);
        }
        store4(o + k0, acc0);
        store4(o + k0 + 4, acc1);
      }
#endif
      for (int64_t k = k0; k < m; ++k) {
        double acc = o[k];
        for (int64_t i = i0; i < i1; ++i)
          if (xr[i] != 0.0) acc += xr[i] * y[i * ldy + k];
        o[k] = acc;
      }
    }
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
