// Reading the captured arrays into the workspace (see workspace.hpp).
#include <algorithm>
#include <cmath>

#include "ncap/kernels.hpp"
#include "ncap/parallel.hpp"
#include "workspace.hpp"

namespace ncap::detail {
namespace {

// Rows per loading task: fixed, so that nothing depends on the thread count.
constexpr int64_t kLoadBlock = 16;

// An array whose largest row sum |x|_1 is below 2^-kSafeExponent is scaled up
// by a power of two (exact), so that the six-factor products of a numerator
// term cannot underflow; its exponent is given back in finish(). Large arrays
// are used as they are: scaling one down would flush its own small entries to
// zero, and a result that overflows float64 is refused anyway.
constexpr int kSafeExponent = 64;

// The first non-finite value of row b, or n when all are finite but |x| sums to infinity.
int64_t first_bad_column(const MatrixView& v, int64_t b) {
  for (int64_t j = 0; j < v.cols; ++j) {
    const int64_t at = b * v.row_stride + j * v.col_stride;
    const double x = v.dtype == DType::Float32 ? static_cast<const float*>(v.data)[at]
                                               : static_cast<const double*>(v.data)[at];
    if (!std::isfinite(x)) return j;
  }
  return v.cols;
}

void init(Loaded& a, const MatrixView& v, const char* argument, size_t index, unsigned layouts, int64_t batch) {
  a.view = &v;
  a.argument = argument;
  a.index = index;
  a.layouts = layouts;
  a.n = v.cols;
  const size_t elements = static_cast<size_t>(batch) * static_cast<size_t>(v.cols);
  if (layouts & kRows) a.rows.resize(elements);
  if (layouts & kCols) a.cols.resize(elements);
  if (layouts & kRowMask) a.row_mask.resize(static_cast<size_t>(batch) * a.row_words());
  if (layouts & kColMask) a.col_mask.resize(static_cast<size_t>(v.cols) * kernels::mask_words(batch));
  a.sum.resize(batch);
  a.abs_sum.resize(batch);
}

// Rows [first, last): sums, the row-major copy and mask, and the column-major
// copy (transposed from `staging`, kLoadBlock rows at a time, so that each
// column is written a cache line at a time).
void load_rows(const kernels::Table& k, Loaded& a, int64_t first, int64_t last, int64_t batch,
               double* staging, int64_t* bad_col) {
  const MatrixView& v = *a.view;
  const int64_t n = v.cols;
  const bool rows = a.layouts & kRows, cols = a.layouts & kCols;
  for (int64_t b = first; b < last; ++b) {
    double* dense = rows ? a.rows.data() + b * n : (cols ? staging + (b - first) * n : nullptr);
    uint64_t* mask = (a.layouts & kRowMask) ? a.row_mask.data() + b * a.row_words() : nullptr;
    double sums[2];
    if (v.dtype == DType::Float32)
      k.load_row_f32(static_cast<const float*>(v.data) + b * v.row_stride, v.col_stride, n, dense, mask, sums);
    else
      k.load_row_f64(static_cast<const double*>(v.data) + b * v.row_stride, v.col_stride, n, dense, mask, sums);
    a.sum[b] = sums[0];
    a.abs_sum[b] = sums[1];
    bad_col[b] = std::isfinite(sums[1]) ? -1 : first_bad_column(v, b);
  }
  if (cols) k.transpose(rows ? a.rows.data() + first * n : staging, n, last - first, n, a.cols.data() + first, batch);
}

int exponent_for(const Loaded& a) {
  double largest = 0;
  for (double x : a.abs_sum) largest = x > largest ? x : largest;
  if (largest == 0) return 0;
  int e = 0;
  std::frexp(largest, &e);  // largest = f 2^e, f in [0.5, 1)
  return e < -kSafeExponent ? e : 0;
}

void scale(Loaded& a, int64_t batch) {
  const int e = exponent_for(a);
  if (e == 0) return;
  a.exponent = e;
  const size_t elements = static_cast<size_t>(batch) * static_cast<size_t>(a.n);
  auto apply = [e](double* x, size_t count) {
    for (size_t k = 0; k < count; ++k) x[k] = std::ldexp(x[k], -e);
  };
  if (a.layouts & kRows) apply(a.rows.data(), elements);
  if (a.layouts & kCols) apply(a.cols.data(), elements);
  apply(a.sum.data(), a.sum.size());
  apply(a.abs_sum.data(), a.abs_sum.size());
}

}  // namespace

void load(const Trace& t, const std::vector<int64_t>& widths, const Needs& need, int threads, Workspace& w) {
  const int L = static_cast<int>(t.acts.size());
  const int64_t B = t.acts[0].rows;
  w.batch = B;
  w.n_layers = L;
  w.widths = widths;
  w.z.resize(L - 1);
  w.s.resize(L);
  w.g.resize(L + 1);
  std::vector<Loaded*> all;
  for (int l = 0; l <= L - 2; ++l) init(w.z[l], t.acts[l], "acts", l, need.z[l], B);
  for (int l = 1; l <= L - 1; ++l) init(w.s[l], t.derivs[l - 1], "derivs", l - 1, need.s[l], B);
  for (int l = 2; l <= L; ++l) init(w.g[l], t.grads[l - 1], "grads", l - 1, need.g[l], B);
  for (int l = 0; l <= L - 2; ++l) all.push_back(&w.z[l]);
  for (int l = 1; l <= L - 1; ++l) all.push_back(&w.s[l]);
  for (int l = 2; l <= L; ++l) all.push_back(&w.g[l]);

  for (Loaded* a : all)  // float16 / bfloat16 views are for the CUDA kernel; Python widens them here
    if (a->view->dtype != DType::Float32 && a->view->dtype != DType::Float64)
      throw ArgumentError(a->name(), "the CPU core reads float32 or float64 only");
  double total = 0;
  int64_t widest = 1;
  for (Loaded* a : all) {
    total += static_cast<double>(a->n);
    if ((a->layouts & kCols) && !(a->layouts & kRows) && a->n > widest) widest = a->n;
  }
  const int team = pick_threads(threads, kLoadWork * static_cast<double>(B) * total);
  // Everything is allocated here, outside the team.
  std::vector<int64_t> bad(static_cast<size_t>(B) * all.size());
  Buffer<double> staging;
  staging.resize(static_cast<size_t>(widest) * kLoadBlock * team);
  const kernels::Table& k = kernels::table();
  const int64_t n_tasks = (B + kLoadBlock - 1) / kLoadBlock;
  parallel_for(n_tasks, team, [&](int64_t task) {
    double* block = staging.data() + static_cast<size_t>(task_slot()) * widest * kLoadBlock;
    const int64_t first = task * kLoadBlock, last = std::min(B, first + kLoadBlock);
    for (size_t a = 0; a < all.size(); ++a) load_rows(k, *all[a], first, last, B, block, &bad[a * B]);
  });

  // Report the first problem in argument order, then sample order (deterministic).
  for (size_t a = 0; a < all.size(); ++a) {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t col = bad[a * B + b];
      if (col >= 0) throw non_finite_input_error(all[a]->name(), b, col, all[a]->n);
    }
  }
  for (Loaded* a : all) scale(*a, B);

  std::vector<Loaded*> masked;
  for (Loaded* a : all)
    if (a->layouts & kColMask) masked.push_back(a);
  const int64_t words = kernels::mask_words(B);
  parallel_for(static_cast<int64_t>(masked.size()), team, [&](int64_t m) {
    Loaded& a = *masked[m];
    k.nonzero_masks(a.cols.data(), a.n, B, B, a.col_mask.data(), words);
  });
}

}  // namespace ncap::detail
