// The kernels of ncap/kernels.hpp, written once for a vector of NCAP_ISA_WIDTH
// doubles. Included by kernels_generic.cpp, kernels_avx2.cpp and
// kernels_avx512.cpp, each compiled with its own instruction-set flags and its
// own NCAP_ISA_NS namespace.
//
// Nothing here may instantiate a template from the standard library: such an
// instantiation is shared between translation units, and the linker could
// keep the AVX-512 copy for a caller running on a CPU without AVX-512.
#include <cstdint>
#include <cstring>

#include "ncap/kernels.hpp"

#if NCAP_ISA_LEVEL > 0
#include <immintrin.h>
#endif

#if !defined(NCAP_ISA_NS) || !defined(NCAP_ISA_WIDTH) || !defined(NCAP_ISA_LEVEL)
#error "define NCAP_ISA_NS, NCAP_ISA_WIDTH and NCAP_ISA_LEVEL before including kernels_impl.hpp"
#endif

namespace ncap::kernels::NCAP_ISA_NS {
namespace {

constexpr int W = NCAP_ISA_WIDTH;  // doubles per vector
constexpr int kAccumulators = 8;   // vectors per panel: enough independent sums to hide FMA latency
constexpr int kPanel = kAccumulators * W;
constexpr int kMaxRows = 16;       // rows per fused_pair chunk (lane sums kept on the stack)

#if defined(__GNUC__) || defined(__clang__)
#define NCAP_INLINE inline __attribute__((always_inline))
#if NCAP_ISA_WIDTH > 1
typedef double V __attribute__((vector_size(8 * NCAP_ISA_WIDTH)));
typedef float VF __attribute__((vector_size(4 * NCAP_ISA_WIDTH)));
typedef long long VI __attribute__((vector_size(8 * NCAP_ISA_WIDTH)));
#define NCAP_VECTOR 1
#endif
NCAP_INLINE int ctz64(uint64_t x) { return __builtin_ctzll(x); }
#else
#define NCAP_INLINE inline
NCAP_INLINE int ctz64(uint64_t x) {
  int n = 0;
  while (!(x & 1)) { x >>= 1; ++n; }
  return n;
}
#endif

#ifndef NCAP_VECTOR
static_assert(W == 1, "vector widths above 1 need the GNU vector extension");
typedef double V;
NCAP_INLINE V load(const double* p) { return *p; }
NCAP_INLINE void store(double* p, V v) { *p = v; }
NCAP_INLINE V load_as_double(const double* p) { return *p; }
NCAP_INLINE V load_as_double(const float* p) { return static_cast<double>(*p); }
NCAP_INLINE V abs_of(V v) { return v < 0 ? -v : v; }
NCAP_INLINE V zero() { return 0.0; }
#else
NCAP_INLINE V load(const double* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
NCAP_INLINE void store(double* p, V v) { std::memcpy(p, &v, sizeof v); }
NCAP_INLINE V load_as_double(const double* p) { return load(p); }
NCAP_INLINE V load_as_double(const float* p) {
#if NCAP_ISA_LEVEL == 2  // one vcvtps2pd (GCC 12 splits the generic conversion in two)
  return reinterpret_cast<V>(_mm512_cvtps_pd(_mm256_loadu_ps(p)));
#elif NCAP_ISA_LEVEL == 1
  return reinterpret_cast<V>(_mm256_cvtps_pd(_mm_loadu_ps(p)));
#else
  VF f;
  std::memcpy(&f, p, sizeof f);
  return __builtin_convertvector(f, V);
#endif
}
NCAP_INLINE V abs_of(V v) {
  const VI mask = VI{} + 0x7fffffffffffffffLL;
  return reinterpret_cast<V>(reinterpret_cast<VI>(v) & mask);
}
NCAP_INLINE V zero() { return V{}; }
#endif

// Bit k set where lane k of x is nonzero (NaN counts as nonzero).
NCAP_INLINE uint64_t nonzero_bits(V x) {
#if NCAP_ISA_LEVEL == 2
  return _mm512_cmp_pd_mask(reinterpret_cast<__m512d>(x), _mm512_setzero_pd(), _CMP_NEQ_UQ);
#elif NCAP_ISA_LEVEL == 1
  return static_cast<uint64_t>(
      _mm256_movemask_pd(_mm256_cmp_pd(reinterpret_cast<__m256d>(x), _mm256_setzero_pd(), _CMP_NEQ_UQ)));
#else
  double lanes[W];
  std::memcpy(lanes, &x, sizeof lanes);
  uint64_t bits = 0;
  for (int k = 0; k < W; ++k) bits |= static_cast<uint64_t>(lanes[k] != 0.0) << k;
  return bits;
#endif
}

// Pairwise fold of n (a power of two) lanes in a fixed order.
NCAP_INLINE double fold(double* lanes, int n) {
  for (int h = n / 2; h >= 1; h /= 2)
    for (int k = 0; k < h; ++k) lanes[k] = lanes[k] + lanes[k + h];
  return lanes[0];
}

// ------------------------------------------------------------------ loading

// The same pairwise fold as fold(lanes, kSumLanes), on the vectors that hold the lanes.
NCAP_INLINE double fold_vectors(V* acc) {
  constexpr int kVectors = kSumLanes / W;
  for (int half = kVectors / 2; half >= 1; half /= 2)
    for (int q = 0; q < half; ++q) acc[q] = acc[q] + acc[q + half];
  double lanes[W];
  std::memcpy(lanes, acc, sizeof lanes);
  return fold(lanes, W);
}

// The sums of x and of |x| need 2 * kSumLanes / W accumulators: with 16 vector
// registers (AVX2) they do not fit together, and spilling them cost more than the
// conversion itself. Then each block of kLoadChunk values is converted once (into
// dense, or a chunk in L1) and read twice, once per sum; the lanes and the order of
// the additions are the same.
constexpr bool kSumsApart = NCAP_ISA_LEVEL == 1;
constexpr int64_t kLoadChunk = 512;

template <typename T, bool kDense, bool kMask>
NCAP_INLINE void load_contiguous(const T* __restrict src, int64_t n, double* __restrict dense,
                                 uint64_t* __restrict mask, double* sums) {
  constexpr int kVectors = kSumLanes / W;
  V acc[kVectors], abs_acc[kVectors];
  for (int q = 0; q < kVectors; ++q) acc[q] = abs_acc[q] = zero();
  uint64_t word = 0;
  int64_t i = 0;
  if constexpr (kSumsApart) {
    double chunk[kDense ? 1 : kLoadChunk];  // the converted values, when not kept in dense
    while (i + kSumLanes <= n) {
      const int64_t end = i + kLoadChunk <= n ? i + kLoadChunk : n - (n - i) % kSumLanes;
      double* converted = kDense ? dense + i : chunk;  // value j at converted[j - i]
      V a[kVectors];  // register copies: the arrays themselves live in memory
      for (int q = 0; q < kVectors; ++q) a[q] = acc[q];
      for (int64_t j = i; j < end; j += kSumLanes) {
        for (int q = 0; q < kVectors; ++q) {
          const V x = load_as_double(src + j + q * W);  // each value converted once
          store(converted + (j - i) + q * W, x);
          if constexpr (kMask) word |= nonzero_bits(x) << ((j + q * W) & 63);
          a[q] += x;
        }
        if constexpr (kMask) {
          if (((j + kSumLanes) & 63) == 0) {
            mask[j >> 6] = word;
            word = 0;
          }
        }
      }
      for (int q = 0; q < kVectors; ++q) acc[q] = a[q];
      for (int q = 0; q < kVectors; ++q) a[q] = abs_acc[q];
      for (int64_t j = i; j < end; j += kSumLanes)
        for (int q = 0; q < kVectors; ++q) a[q] += abs_of(load(converted + (j - i) + q * W));
      for (int q = 0; q < kVectors; ++q) abs_acc[q] = a[q];
      i = end;
    }
  } else {
    for (; i + kSumLanes <= n; i += kSumLanes) {
      for (int q = 0; q < kVectors; ++q) {
        const V x = load_as_double(src + i + q * W);
        if constexpr (kDense) store(dense + i + q * W, x);
        if constexpr (kMask) word |= nonzero_bits(x) << ((i + q * W) & 63);
        acc[q] += x;
        abs_acc[q] += abs_of(x);
      }
      if constexpr (kMask) {
        if (((i + kSumLanes) & 63) == 0) {
          mask[i >> 6] = word;
          word = 0;
        }
      }
    }
  }
  if (i < n) {  // element i always goes to lane i % kSumLanes
    double lanes[kSumLanes], abs_lanes[kSumLanes];
    std::memcpy(lanes, acc, sizeof lanes);
    std::memcpy(abs_lanes, abs_acc, sizeof abs_lanes);
    for (; i < n; ++i) {
      const double x = static_cast<double>(src[i]);
      if constexpr (kDense) dense[i] = x;
      if constexpr (kMask) word |= static_cast<uint64_t>(x != 0.0) << (i & 63);
      lanes[i % kSumLanes] += x;
      abs_lanes[i % kSumLanes] += x < 0 ? -x : x;
    }
    std::memcpy(acc, lanes, sizeof lanes);
    std::memcpy(abs_acc, abs_lanes, sizeof abs_lanes);
  }
  if constexpr (kMask) {
    if (n & 63) mask[(n - 1) >> 6] = word;
  }
  sums[0] = fold_vectors(acc);
  sums[1] = fold_vectors(abs_acc);
}

// Strided rows: the same lanes as the contiguous path, so every layout gives the same bits.
template <typename T>
NCAP_INLINE void load_strided(const T* src, int64_t stride, int64_t n, double* dense, uint64_t* mask,
                              double* sums) {
  double lanes[kSumLanes] = {}, abs_lanes[kSumLanes] = {};
  uint64_t word = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(src[i * stride]);
    if (dense) dense[i] = x;
    if (mask) {
      word |= static_cast<uint64_t>(x != 0.0) << (i & 63);
      if (((i + 1) & 63) == 0) {
        mask[i >> 6] = word;
        word = 0;
      }
    }
    lanes[i % kSumLanes] += x;
    abs_lanes[i % kSumLanes] += x < 0 ? -x : x;
  }
  if (mask && (n & 63)) mask[n >> 6] = word;
  V acc[kSumLanes / W], abs_acc[kSumLanes / W];  // the same fold, on vectors
  std::memcpy(acc, lanes, sizeof lanes);
  std::memcpy(abs_acc, abs_lanes, sizeof abs_lanes);
  sums[0] = fold_vectors(acc);
  sums[1] = fold_vectors(abs_acc);
}

// fold(lanes, kSumLanes) when only lanes [0, n) can be nonzero (n <= kSumLanes): the
// same tree, without adding the zeros (x + 0 == x: the lanes never hold -0).
NCAP_INLINE double fold_first(double* lanes, int n) {
  for (int h = kSumLanes / 2; h >= 1; h /= 2) {
    for (int k = 0; k < h && k + h < n; ++k) lanes[k] = lanes[k] + lanes[k + h];
    if (n > h) n = h;
  }
  return n > 0 ? lanes[0] : 0.0;
}

// Rows shorter than kSumLanes (e.g. the output layer's g^L): one value per lane.
template <typename T>
NCAP_INLINE void load_short(const T* src, int64_t stride, int64_t n, double* dense, uint64_t* mask,
                            double* sums) {
  double lanes[kSumLanes], abs_lanes[kSumLanes];
  uint64_t word = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(src[i * stride]);
    if (dense) dense[i] = x;
    word |= static_cast<uint64_t>(x != 0.0) << i;
    lanes[i] = 0.0 + x;  // as the other paths' lanes, which start at +0
    abs_lanes[i] = x < 0 ? -x : 0.0 + x;
  }
  if (mask) mask[0] = word;
  sums[0] = fold_first(lanes, static_cast<int>(n));
  sums[1] = fold_first(abs_lanes, static_cast<int>(n));
}

template <typename T>
NCAP_INLINE void load_row(const T* src, int64_t stride, int64_t n, double* dense, uint64_t* mask,
                          double* sums) {
  if (n < kSumLanes) return load_short(src, stride, n, dense, mask, sums);
  if (stride != 1) return load_strided(src, stride, n, dense, mask, sums);
  if (dense && mask) return load_contiguous<T, true, true>(src, n, dense, mask, sums);
  if (dense) return load_contiguous<T, true, false>(src, n, dense, mask, sums);
  if (mask) return load_contiguous<T, false, true>(src, n, dense, mask, sums);
  load_contiguous<T, false, false>(src, n, dense, mask, sums);
}

void load_row_f32(const float* src, int64_t stride, int64_t n, double* dense, uint64_t* mask, double* sums) {
  load_row(src, stride, n, dense, mask, sums);
}

void load_row_f64(const double* src, int64_t stride, int64_t n, double* dense, uint64_t* mask, double* sums) {
  load_row(src, stride, n, dense, mask, sums);
}

void nonzero_masks(const double* x, int64_t rows, int64_t n, int64_t ldx, uint64_t* mask, int64_t ldm) {
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x + r * ldx;
    uint64_t* mr = mask + r * ldm;
    for (int64_t w = 0; w < ldm; ++w) mr[w] = 0;
    int64_t i = 0;
    for (; i + W <= n; i += W) mr[i >> 6] |= nonzero_bits(load(xr + i)) << (i & 63);
    for (; i < n; ++i) mr[i >> 6] |= static_cast<uint64_t>(xr[i] != 0.0) << (i & 63);
  }
}

void transpose(const double* __restrict src, int64_t lds, int64_t rows, int64_t cols, double* __restrict dst,
               int64_t ldd) {
  int64_t r0 = 0;
#if NCAP_ISA_LEVEL == 2
  for (; r0 + 8 <= rows; r0 += 8) {  // 8 x 8 blocks in registers
    int64_t j0 = 0;
    for (; j0 + 8 <= cols; j0 += 8) {
      __m512d a[8];
      for (int i = 0; i < 8; ++i) a[i] = _mm512_loadu_pd(src + (r0 + i) * lds + j0);
      __m512d t[8], u[8];
      for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm512_unpacklo_pd(a[2 * i], a[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_pd(a[2 * i], a[2 * i + 1]);
      }
      for (int h = 0; h < 2; ++h) {  // rows 0-3 (h = 0) and 4-7 (h = 1)
        u[4 * h + 0] = _mm512_shuffle_f64x2(t[4 * h + 0], t[4 * h + 2], 0x88);
        u[4 * h + 1] = _mm512_shuffle_f64x2(t[4 * h + 1], t[4 * h + 3], 0x88);
        u[4 * h + 2] = _mm512_shuffle_f64x2(t[4 * h + 0], t[4 * h + 2], 0xdd);
        u[4 * h + 3] = _mm512_shuffle_f64x2(t[4 * h + 1], t[4 * h + 3], 0xdd);
      }
      for (int i = 0; i < 4; ++i) {
        _mm512_storeu_pd(dst + (j0 + i) * ldd + r0, _mm512_shuffle_f64x2(u[i], u[4 + i], 0x88));
        _mm512_storeu_pd(dst + (j0 + 4 + i) * ldd + r0, _mm512_shuffle_f64x2(u[i], u[4 + i], 0xdd));
      }
    }
    for (; j0 < cols; ++j0)
      for (int i = 0; i < 8; ++i) dst[j0 * ldd + r0 + i] = src[(r0 + i) * lds + j0];
  }
#elif NCAP_ISA_LEVEL == 1
  for (; r0 + 4 <= rows; r0 += 4) {  // 4 x 4 blocks in registers
    int64_t j0 = 0;
    for (; j0 + 4 <= cols; j0 += 4) {
      __m256d a[4];
      for (int i = 0; i < 4; ++i) a[i] = _mm256_loadu_pd(src + (r0 + i) * lds + j0);
      const __m256d t0 = _mm256_unpacklo_pd(a[0], a[1]), t1 = _mm256_unpackhi_pd(a[0], a[1]);
      const __m256d t2 = _mm256_unpacklo_pd(a[2], a[3]), t3 = _mm256_unpackhi_pd(a[2], a[3]);
      _mm256_storeu_pd(dst + (j0 + 0) * ldd + r0, _mm256_permute2f128_pd(t0, t2, 0x20));
      _mm256_storeu_pd(dst + (j0 + 1) * ldd + r0, _mm256_permute2f128_pd(t1, t3, 0x20));
      _mm256_storeu_pd(dst + (j0 + 2) * ldd + r0, _mm256_permute2f128_pd(t0, t2, 0x31));
      _mm256_storeu_pd(dst + (j0 + 3) * ldd + r0, _mm256_permute2f128_pd(t1, t3, 0x31));
    }
    for (; j0 < cols; ++j0)
      for (int i = 0; i < 4; ++i) dst[j0 * ldd + r0 + i] = src[(r0 + i) * lds + j0];
  }
#endif
  for (int64_t j0 = 0; j0 < cols; j0 += 8) {  // the remaining rows, eight columns at a time
    const int64_t j1 = j0 + 8 < cols ? j0 + 8 : cols;
    for (int64_t r = r0; r < rows; ++r)
      for (int64_t j = j0; j < j1; ++j) dst[j * ldd + r] = src[r * lds + j];
  }
}

// ------------------------------------------------------------ sparse x dense

// acc[0..NV) += sum over the nonzeros k of row r of p.x in mask words [wd0, wd1) of
// x[r, k] (* weight[k]) * y[k, c0 ..]. Sums over k in increasing order, one
// accumulator per column: splitting the words into blocks gives the same bits.
template <int NV, bool kWeighted>
NCAP_INLINE void panel_words(const SparseOperand& p, int64_t r, int64_t c0, int64_t wd0, int64_t wd1,
                             V* acc) {
  const double* __restrict x = p.x + r * p.ldx;
  const uint64_t* __restrict m = p.mask + r * p.ldm;
  const double* __restrict y = p.y + c0;
  for (int64_t wd = wd0; wd < wd1; ++wd) {
    uint64_t bits = m[wd];
    while (bits) {
      const int64_t k = (wd << 6) + ctz64(bits);
      bits &= bits - 1;
      double a = x[k];
      if constexpr (kWeighted) a *= p.weight[k];
      const double* __restrict yk = y + k * p.ldy;
      for (int q = 0; q < NV; ++q) acc[q] += a * load(yk + q * W);
    }
  }
}

template <int NV, bool kWeighted>
NCAP_INLINE void panel(const SparseOperand& p, int64_t r, int64_t c0, V* acc) {
  for (int q = 0; q < NV; ++q) acc[q] = zero();
  panel_words<NV, kWeighted>(p, r, c0, 0, mask_words(p.width), acc);
}

// Columns that do not fill a vector: one at a time.
template <bool kWeighted>
NCAP_INLINE double panel_column(const SparseOperand& p, int64_t r, int64_t c) {
  double acc = 0.0;
  const double* x = p.x + r * p.ldx;
  const uint64_t* m = p.mask + r * p.ldm;
  const int64_t words = mask_words(p.width);
  for (int64_t wd = 0; wd < words; ++wd) {
    uint64_t bits = m[wd];
    while (bits) {
      const int64_t k = (wd << 6) + ctz64(bits);
      bits &= bits - 1;
      double a = x[k];
      if constexpr (kWeighted) a *= p.weight[k];
      acc += a * p.y[k * p.ldy + c];
    }
  }
  return acc;
}

template <int NV>
NCAP_INLINE void any_panel(const SparseOperand& p, int64_t r, int64_t c0, V* acc) {
  if (p.weight) panel<NV, true>(p, r, c0, acc);
  else panel<NV, false>(p, r, c0, acc);
}

// panel() for rows r and r + 1 at once, over the union of their nonzeros: each
// strip of y is read once for both (a zero of one row adds an exact 0 to its
// sums). Halves the cache traffic of the dense operand where rows overlap.
template <int NV, bool kWeighted>
NCAP_INLINE void panel_pair_words(const SparseOperand& p, int64_t r, int64_t c0, int64_t wd0, int64_t wd1,
                                  V* acc0, V* acc1) {
  const double* __restrict x0 = p.x + r * p.ldx;
  const double* __restrict x1 = x0 + p.ldx;
  const uint64_t* __restrict m0 = p.mask + r * p.ldm;
  const uint64_t* __restrict m1 = m0 + p.ldm;
  const double* __restrict y = p.y + c0;
  for (int64_t wd = wd0; wd < wd1; ++wd) {
    uint64_t bits = m0[wd] | m1[wd];
    while (bits) {
      const int64_t k = (wd << 6) + ctz64(bits);
      bits &= bits - 1;
      double a0 = x0[k], a1 = x1[k];
      if constexpr (kWeighted) {
        a0 *= p.weight[k];
        a1 *= p.weight[k];
      }
      const double* __restrict yk = y + k * p.ldy;
      for (int q = 0; q < NV; ++q) {
        V yv = load(yk + q * W);
#if NCAP_ISA_LEVEL > 0 && defined(__GNUC__)
        // One load for both rows: GCC folds the load into each of the two FMAs (two loads
        // per vector; with one, AVX-512 on a Sapphire-Rapids-class Xeon: ref -14%, B=256 -22%).
        __asm__("" : "+v"(yv));
#endif
        acc0[q] += a0 * yv;
        acc1[q] += a1 * yv;
      }
    }
  }
}

// Two rows of a chunk share each load of y only where their nonzeros mostly coincide
// (checked per block: the union at most 3/4 of the two counts; dense rows): on sparse
// (ReLU, dropout) rows the union wastes more multiply-adds than the shared loads save
// (AVX-512 pairing every row, measured on a Sapphire-Rapids-class Xeon: 1-10% slower on
// every bench row). In halves of kPairVectors vectors, so that both rows' sums fit the
// registers (16 of AVX-512's 32, 8 of AVX2's 16). Generic code never pairs.
constexpr bool kPairOverlapping = NCAP_ISA_LEVEL >= 1;
constexpr int kPairVectors = NCAP_ISA_LEVEL == 2 ? 8 : 4;

NCAP_INLINE double any_column(const SparseOperand& p, int64_t r, int64_t c) {
  return p.weight ? panel_column<true>(p, r, c) : panel_column<false>(p, r, c);
}

// Mask words per block of the reduction index k: a block of a strip of y (64 k x NV
// vectors, at most 16 KiB) stays in L1 while every row of a chunk reads it. Without
// blocks each row streamed the whole strip (up to 2048 k x 32 columns, 512 KiB) from L2.
template <int NV>
constexpr int64_t kBlockWords = (16384 / (64 * NV * W * 8)) > 1 ? 16384 / (64 * NV * W * 8) : 1;

// part[r][0 .. NV * W) = row r0 + r of P = p.x * p.y on columns c0 .., for r < rows;
// block by block of k, each row's sums carried in part between blocks (the order of
// the additions, k increasing, is the unblocked one: the same bits).
template <int NV, bool kWeighted>
NCAP_INLINE void strip_rows(const SparseOperand& p, int64_t c0, int64_t r0, int64_t rows,
                            double (*part)[NV * W]) {
  for (int64_t r = 0; r < rows; ++r)
    for (int k = 0; k < NV * W; ++k) part[r][k] = 0.0;
  const int64_t words = mask_words(p.width);
  for (int64_t wd0 = 0; wd0 < words; wd0 += kBlockWords<NV>) {
    const int64_t wd1 = wd0 + kBlockWords<NV> < words ? wd0 + kBlockWords<NV> : words;
    int64_t r = 0;
    if constexpr (kPairOverlapping) {
      constexpr int H = NV < kPairVectors ? NV : kPairVectors;
      for (; r + 2 <= rows; r += 2) {
        const uint64_t* m0 = p.mask + (r0 + r) * p.ldm;
        const uint64_t* m1 = m0 + p.ldm;
        int64_t both = 0, each = 0;
        for (int64_t wd = wd0; wd < wd1; ++wd) {
          both += __builtin_popcountll(m0[wd] | m1[wd]);
          each += __builtin_popcountll(m0[wd]) + __builtin_popcountll(m1[wd]);
        }
        if (4 * both > 3 * each) break;  // little overlap: one row at a time (below)
        for (int h = 0; h < NV; h += H) {
          V acc0[H], acc1[H];
          std::memcpy(acc0, part[r] + h * W, sizeof acc0);
          std::memcpy(acc1, part[r + 1] + h * W, sizeof acc1);
          panel_pair_words<H, kWeighted>(p, r0 + r, c0 + h * W, wd0, wd1, acc0, acc1);
          std::memcpy(part[r] + h * W, acc0, sizeof acc0);
          std::memcpy(part[r + 1] + h * W, acc1, sizeof acc1);
        }
      }
    }
    for (; r < rows; ++r) {
      V acc[NV];
      std::memcpy(acc, part[r], sizeof acc);
      panel_words<NV, kWeighted>(p, r0 + r, c0, wd0, wd1, acc);
      std::memcpy(part[r], acc, sizeof acc);
    }
  }
}

template <int NV>
NCAP_INLINE void any_strip_rows(const SparseOperand& p, int64_t c0, int64_t r0, int64_t rows,
                                double (*part)[NV * W]) {
  if (p.weight) strip_rows<NV, true>(p, c0, r0, rows, part);
  else strip_rows<NV, false>(p, c0, r0, rows, part);
}

// lanes[r][..] += w * P * Q on the NV vectors of columns c0 .. c0 + NV * W.
template <int NV>
NCAP_INLINE void fused_panel(const SparseOperand& p, const SparseOperand& q, const double* w, int64_t c0,
                             int64_t r0, int64_t rows, double (*lanes)[kPanel]) {
  double p_part[kMaxRows][NV * W], q_part[kMaxRows][NV * W];
  any_strip_rows<NV>(p, c0, r0, rows, p_part);  // p's strip of y is reused by every row
  any_strip_rows<NV>(q, c0, r0, rows, q_part);  // then q's
  for (int64_t r = 0; r < rows; ++r)
    for (int v = 0; v < NV; ++v) {
      V pw = load(p_part[r] + v * W);
      if (w) pw = pw * load(w + c0 + v * W);
      store(lanes[r] + v * W, load(lanes[r] + v * W) + pw * load(q_part[r] + v * W));
    }
}

void fused_pair(const SparseOperand& p, const SparseOperand& q, const double* w, int64_t m, int64_t r0,
                int64_t r1, double* out) {
  for (int64_t first = r0; first < r1; first += kMaxRows) {
    const int64_t rows = r1 - first < kMaxRows ? r1 - first : kMaxRows;
    double lanes[kMaxRows][kPanel];
    for (int64_t r = 0; r < rows; ++r)
      for (int k = 0; k < kPanel; ++k) lanes[r][k] = 0.0;
    int64_t c = 0;
    for (; c + kPanel <= m; c += kPanel) fused_panel<kAccumulators>(p, q, w, c, first, rows, lanes);
    if (c + 4 * W <= m) {
      fused_panel<4>(p, q, w, c, first, rows, lanes);
      c += 4 * W;
    }
    if (c + 2 * W <= m) {
      fused_panel<2>(p, q, w, c, first, rows, lanes);
      c += 2 * W;
    }
    if (c + W <= m) {
      fused_panel<1>(p, q, w, c, first, rows, lanes);
      c += W;
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t k = c; k < m; ++k) {  // fewer than W columns left
        const double pk = any_column(p, first + r, k) * (w ? w[k] : 1.0);
        lanes[r][k - c] += pk * any_column(q, first + r, k);
      }
      out[first - r0 + r] = fold(lanes[r], kPanel);
    }
  }
}

void sparse_times_dense(const SparseOperand& p, int64_t m, int64_t r0, int64_t r1, double* out, int64_t ldo) {
  V acc[kAccumulators];
  int64_t c = 0;
  // Panel by panel, so that a strip of y stays in cache for every row.
  for (; c + kPanel <= m; c += kPanel)
    for (int64_t r = r0; r < r1; ++r) {
      any_panel<kAccumulators>(p, r, c, acc);
      std::memcpy(out + (r - r0) * ldo + c, acc, sizeof acc);
    }
  for (; c + W <= m; c += W)
    for (int64_t r = r0; r < r1; ++r) {
      any_panel<1>(p, r, c, acc);
      std::memcpy(out + (r - r0) * ldo + c, acc, sizeof(V));
    }
  for (; c < m; ++c)
    for (int64_t r = r0; r < r1; ++r) out[(r - r0) * ldo + c] = any_column(p, r, c);
}

double dot(const double* __restrict a, const double* __restrict c, int64_t n) {
  constexpr int kVectors = kSumLanes / W;
  V acc[kVectors];
  for (int q = 0; q < kVectors; ++q) acc[q] = zero();
  int64_t i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes)
    for (int q = 0; q < kVectors; ++q) acc[q] += load(a + i + q * W) * load(c + i + q * W);
  if (i < n) {  // element i goes to lane i % kSumLanes
    double lanes[kSumLanes];
    std::memcpy(lanes, acc, sizeof lanes);
    for (; i < n; ++i) lanes[i % kSumLanes] += a[i] * c[i];
    std::memcpy(acc, lanes, sizeof lanes);
  }
  return fold_vectors(acc);
}

// ------------------------------------------------------------------- peak

double fma_loop(int64_t iterations, double seed, double* fmas) {
  // Independent chains, more than FMA latency x FMA units on any current core.
  constexpr int K = NCAP_ISA_LEVEL == 2 ? 24 : (NCAP_ISA_LEVEL == 1 ? 12 : 8);
  V acc[K];
  for (int k = 0; k < K; ++k) acc[k] = zero() + (seed + 1e-3 * k);
  const V mul = zero() + (1.0 - 1e-12);
  const V add = zero() + 1e-9;
  for (int64_t it = 0; it < iterations; ++it) {
#if defined(__GNUC__)
#pragma GCC unroll 32
#endif
    for (int k = 0; k < K; ++k) acc[k] = acc[k] * mul + add;  // contracted to one FMA
  }
  V total = zero();
  for (int k = 0; k < K; ++k) total += acc[k];
  double lanes[W];
  std::memcpy(lanes, &total, sizeof lanes);
  double sum = 0.0;
  for (int k = 0; k < W; ++k) sum += lanes[k];
  *fmas = static_cast<double>(iterations) * K * W;
  return sum;
}

}  // namespace

Table make_table() {
  Table t;
  t.isa = static_cast<Isa>(NCAP_ISA_LEVEL);
  t.load_row_f32 = &load_row_f32;
  t.load_row_f64 = &load_row_f64;
  t.nonzero_masks = &nonzero_masks;
  t.fused_pair = &fused_pair;
  t.sparse_times_dense = &sparse_times_dense;
  t.transpose = &transpose;
  t.dot = &dot;
  t.fma_loop = &fma_loop;
  return t;
}

}  // namespace ncap::kernels::NCAP_ISA_NS
