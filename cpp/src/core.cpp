#include "ncap/core.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <memory>
#include <new>
#include <sstream>

#include "ncap/kernels.hpp"
#include "ncap/parallel.hpp"

namespace ncap {
namespace {

std::string shape_of(const MatrixView& v) {
  std::ostringstream os;
  os << "(" << v.rows << ", " << v.cols << ")";
  return os.str();
}

// Rows per parallel task: fixed, so that results never depend on the thread count.
constexpr int64_t kRowBlock = 16;

// Working memory that is always written before it is read: left uninitialised,
// since zero-filling it would cost as much as the maths on small batches.
class Buffer {
 public:
  void resize(size_t n) {
    if (n > size_) data_.reset(new double[n]);
    size_ = n;
  }
  double* data() { return data_.get(); }
  const double* data() const { return data_.get(); }
  double& operator[](size_t i) { return data_[i]; }
  const double& operator[](size_t i) const { return data_[i]; }

 private:
  std::unique_ptr<double[]> data_;
  size_t size_ = 0;
};

// Per-thread scratch memory, so that parallel tasks never share buffers.
class ThreadScratch {
 public:
  ThreadScratch(int threads, int64_t values, int64_t /*unused*/) : per_thread_(threads > 0 ? threads : 1) {
    for (Buffer& b : per_thread_) b.resize(static_cast<size_t>(values));
  }
  Buffer& mine() {
#ifdef _OPENMP
    if (per_thread_.size() > 1) return per_thread_[omp_get_thread_num()];
#endif
    return per_thread_[0];
  }

 private:
  std::vector<Buffer> per_thread_;
};

std::string indexed(const char* name, size_t i) { return std::string(name) + "[" + std::to_string(i) + "]"; }

// One captured array in float64: row-major (B x n) and column-major (n x B)
// copies when the maths needs the whole matrix, per-row sums always.
struct Loaded {
  const MatrixView* view = nullptr;
  std::string name;
  bool full = false;
  Buffer rows;                  // B x n (empty unless full)
  Buffer cols;                  // n x B (empty unless full and needed)
  std::vector<double> sum;      // per sample: sum_k x_k
  std::vector<double> abs_sum;  // per sample: sum_k |x_k|
  std::vector<int64_t> bad_col; // per sample: first non-finite column, or -1
};

// Which column-major copies a computation reads: the batch numerator reads
// s and g by columns, the degrees read z and s by columns.
enum class Transposed { None, SandG, ZandS };

// z[l] (l = 0..L-2), s[l] (l = 1..L-1), g[l] (l = 2..L), indexed by the SPEC's l.
struct Workspace {
  int64_t batch = 0;
  int n_layers = 0;  // L
  std::vector<int64_t> widths;
  std::vector<Loaded> z, s, g;
  std::vector<Loaded*> all;
};

void load_row(Loaded& a, int64_t b) {
  const MatrixView& v = *a.view;
  const int64_t n = v.cols;
  double* dst = a.full ? a.rows.data() + b * n : nullptr;
  double sums[2];
  if (v.dtype == DType::Float32)
    kernels::load_row(static_cast<const float*>(v.data) + b * v.row_stride, v.col_stride, n, dst, sums);
  else
    kernels::load_row(static_cast<const double*>(v.data) + b * v.row_stride, v.col_stride, n, dst, sums);
  a.sum[b] = sums[0];
  a.abs_sum[b] = sums[1];
  a.bad_col[b] = -1;
  if (!std::isfinite(sums[1])) {  // rare: locate the culprit
    for (int64_t k = 0; k < n; ++k) {
      const double x = v.dtype == DType::Float32
                           ? static_cast<const float*>(v.data)[b * v.row_stride + k * v.col_stride]
                           : static_cast<const double*>(v.data)[b * v.row_stride + k * v.col_stride];
      if (!std::isfinite(x)) { a.bad_col[b] = k; break; }
    }
    if (a.bad_col[b] < 0) a.bad_col[b] = n;  // all finite, but the sum overflows
  }
}

// Column-major copy (n x B) of a loaded row-major array, in cache-sized tiles.
void transpose_into(const Loaded& a, int64_t batch, Buffer& cols) {
  const int64_t n = a.view->cols;
  constexpr int64_t kTile = 16;
  for (int64_t b0 = 0; b0 < batch; b0 += kTile) {
    const int64_t b1 = std::min(b0 + kTile, batch);
    for (int64_t k0 = 0; k0 < n; k0 += kTile) {
      const int64_t k1 = std::min(k0 + kTile, n);
      for (int64_t k = k0; k < k1; ++k) {
        double* __restrict dst = cols.data() + k * batch;
        const double* __restrict src = a.rows.data() + k;
        for (int64_t b = b0; b < b1; ++b) dst[b] = src[b * n];
      }
    }
  }
}

void init_loaded(Loaded& a, const MatrixView& v, std::string name, bool full, int64_t batch) {
  a.view = &v;
  a.name = std::move(name);
  a.full = full;
  if (full) a.rows.resize(static_cast<size_t>(batch * v.cols));
  a.sum.resize(batch);
  a.abs_sum.resize(batch);
  a.bad_col.resize(batch);
}

// Reads every array the maths uses, once, in parallel over samples; checks finiteness.
void load(const Trace& t, bool everything_full, Transposed transposed, int threads, Workspace& w) {
  const int L = static_cast<int>(t.acts.size());
  const int64_t B = t.acts[0].rows;
  w.batch = B;
  w.n_layers = L;
  w.z.resize(L - 1);
  w.s.resize(L);
  w.g.resize(L + 1);
  int64_t total = 0;
  for (int l = 0; l <= L - 2; ++l)  // z^0 is only summed unless degrees need it
    init_loaded(w.z[l], t.acts[l], indexed("acts", l), everything_full || l > 0, B);
  for (int l = 1; l <= L - 1; ++l) init_loaded(w.s[l], t.derivs[l - 1], indexed("derivs", l - 1), true, B);
  for (int l = 2; l <= L; ++l)  // g^L is only summed unless degrees need it
    init_loaded(w.g[l], t.grads[l - 1], indexed("grads", l - 1), everything_full || l < L, B);
  for (int l = 0; l <= L - 2; ++l) w.all.push_back(&w.z[l]);
  for (int l = 1; l <= L - 1; ++l) w.all.push_back(&w.s[l]);
  for (int l = 2; l <= L; ++l) w.all.push_back(&w.g[l]);
  for (Loaded* a : w.all) total += a->view->cols;

  const int team = pick_threads(threads, static_cast<double>(B) * total);
  parallel_for(B, team, [&](int64_t b) {
    for (Loaded* a : w.all) load_row(*a, b);
  });

  // Report the first problem in argument order, then sample order (deterministic).
  for (Loaded* a : w.all) {
    for (int64_t b = 0; b < B; ++b) {
      if (a->bad_col[b] < 0) continue;
      std::ostringstream os;
      if (a->bad_col[b] == a->view->cols)
        os << "values too large: the sum of |x| over sample " << b
           << " overflows float64; rescale the inputs";
      else
        os << "contains NaN or Inf (first at sample " << b << ", unit " << a->bad_col[b]
           << "); beta_eff needs finite activations, derivatives and gradients";
      throw ArgumentError(a->name, os.str());
    }
  }
  std::vector<Loaded*> full;
  for (int l = 0; l <= L - 2; ++l)
    if (transposed == Transposed::ZandS && w.z[l].full) full.push_back(&w.z[l]);
  for (int l = 1; l <= L - 1; ++l)
    if (transposed != Transposed::None) full.push_back(&w.s[l]);
  for (int l = 2; l <= L; ++l)
    if (transposed == Transposed::SandG && w.g[l].full) full.push_back(&w.g[l]);
  for (Loaded* a : full) a->cols.resize(static_cast<size_t>(B * a->view->cols));  // outside the team
  parallel_for(static_cast<int64_t>(full.size()), team, [&](int64_t k) { transpose_into(*full[k], B, full[k]->cols); });
}

void check_view(const MatrixView& v, const std::string& name, int64_t batch) {
  if (v.rows != batch) {
    std::ostringstream os;
    os << "batch size " << v.rows << " (shape " << shape_of(v) << ") differs from acts[0]'s "
       << batch << "; every array must hold the same samples";
    throw ArgumentError(name, os.str());
  }
  if (v.cols <= 0) throw ArgumentError(name, "has zero width (shape " + shape_of(v) + ")");
  if (v.data == nullptr) throw ArgumentError(name, "has no data");
}

void check_width(const MatrixView& v, const std::string& name, int64_t expected,
                 const std::string& against) {
  if (v.cols != expected) {
    std::ostringstream os;
    os << "width " << v.cols << " (shape " << shape_of(v) << ") does not chain with " << against
       << " (width " << expected << ")";
    throw ArgumentError(name, os.str());
  }
}

std::string gib(double bytes) {
  std::ostringstream os;
  os.precision(3);
  os << bytes / (1024.0 * 1024.0 * 1024.0) << " GiB";
  return os.str();
}

// Memory the system can give without swapping (MemAvailable), or +inf when unknown.
double available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024.0;
  return std::numeric_limits<double>::infinity();
}

WorkspaceError out_of_memory(double needed, int64_t batch, const std::string& why) {
  return WorkspaceError("ncap needs about " + gib(needed) +
                        " of working memory for this batch (B = " + std::to_string(batch) + "); " + why +
                        "; split the batch into smaller ones");
}

// Runs a computation, turning a failed allocation into a WorkspaceError that
// states the memory needed. No allocation happens inside a parallel region,
// where an exception could not be caught.
template <typename Fn>
auto guard_memory(const Trace& t, bool for_degrees, Fn&& fn) {
  const std::vector<int64_t> widths = check_trace(t, for_degrees ? kMinDegreeLayers : kMinBetaLayers);
  const int64_t batch = t.acts[0].rows;
  const double needed = workspace_bytes(widths, batch, for_degrees);
  // Reading /proc/meminfo costs more than a small call: ask only for big work.
  constexpr double kCheckAbove = 256.0 * 1024 * 1024;
  if (needed > kCheckAbove) {
    const double available = available_memory_bytes();
    if (needed > available) throw out_of_memory(needed, batch, "only " + gib(available) + " is available");
  }
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    throw out_of_memory(needed, batch, "the allocation failed");
  } catch (const std::length_error&) {
    throw out_of_memory(needed, batch, "the allocation failed");
  }
}

Workspace make_workspace(const Trace& t, bool full, Transposed transposed, int threads) {
  Workspace w;
  w.widths = check_trace(t, kMinDegreeLayers);
  load(t, full, transposed, threads, w);
  return w;
}

}  // namespace

std::vector<int64_t> check_trace(const Trace& t, int min_layers) {
  const size_t L = t.acts.size();
  if (L == 0) throw ArgumentError("acts", "is empty; pass one array per weight layer");
  if (t.grads.size() != L) {
    std::ostringstream os;
    os << "expected len(grads) == len(acts) == " << L << ", got " << t.grads.size();
    throw ArgumentError("grads", os.str());
  }
  if (t.derivs.size() + 1 != L) {
    std::ostringstream os;
    os << "expected len(derivs) == len(acts) - 1 == " << L - 1 << ", got " << t.derivs.size();
    throw ArgumentError("derivs", os.str());
  }
  if (static_cast<int>(L) < min_layers) {
    std::ostringstream os;
    if (min_layers >= kMinBetaLayers)
      os << "a probe needs at least three hidden layers (L >= 4 weight layers), got L = " << L
         << "; with fewer, beta_eff is identically 0 under softmax cross-entropy";
    else
      os << "need at least " << min_layers << " weight layers, got " << L;
    throw ArgumentError("acts", os.str());
  }
  const int64_t B = t.acts[0].rows;
  if (B <= 0) throw ArgumentError("acts[0]", "empty batch (shape " + shape_of(t.acts[0]) + ")");
  for (size_t l = 0; l < L; ++l) check_view(t.acts[l], indexed("acts", l), B);
  for (size_t l = 0; l + 1 < L; ++l) check_view(t.derivs[l], indexed("derivs", l), B);
  for (size_t l = 0; l < L; ++l) check_view(t.grads[l], indexed("grads", l), B);

  std::vector<int64_t> widths(L + 1);
  widths[0] = t.acts[0].cols;
  for (size_t l = 1; l <= L; ++l) widths[l] = t.grads[l - 1].cols;  // n_l = width of g^l
  for (size_t l = 1; l < L; ++l) {
    check_width(t.acts[l], indexed("acts", l), widths[l], indexed("grads", l - 1));
    check_width(t.derivs[l - 1], indexed("derivs", l - 1), widths[l], indexed("grads", l - 1));
  }
  return widths;
}

double workspace_bytes(const std::vector<int64_t>& widths, int64_t batch, bool for_degrees) {
  // In double: the count must stay right (and positive) for absurd shapes.
  const int L = static_cast<int>(widths.size()) - 1;
  auto n = [&](int l) { return static_cast<double>(widths[l]); };
  double per_sample = 0;  // float64 values held per sample
  if (for_degrees) {
    for (int l = 0; l <= L - 2; ++l) per_sample += 2 * n(l);      // z: rows + columns
    for (int l = 1; l <= L - 1; ++l) per_sample += 2 * n(l);      // s: rows + columns
    for (int l = 2; l <= L; ++l) per_sample += n(l);              // g: rows
    for (int l = 1; l <= L; ++l) per_sample += 2 * n(l);          // degree weights
  } else {
    for (int l = 1; l <= L - 2; ++l) per_sample += n(l);          // z (z^0 is only summed)
    for (int l = 1; l <= L - 1; ++l) per_sample += 2 * n(l);      // s: rows + columns
    for (int l = 2; l <= L - 1; ++l) per_sample += 2 * n(l);      // g (g^L is only summed)
  }
  per_sample += 4.0 * 3 * L;  // per-row sums, |sums| and flags of every array
  return 8.0 * static_cast<double>(batch) * per_sample;
}

namespace {
BetaTerms beta_eff_unguarded(const Trace& t, Reduction reduction, int threads) {
  Workspace w = make_workspace(t, false, reduction == Reduction::Batch ? Transposed::SandG : Transposed::None, threads);
  const int L = w.n_layers;
  const int64_t B = w.batch;
  const bool per_sample = reduction == Reduction::Sample;

  RowSums sums(w.widths, B);
  for (int l = 0; l <= L - 2; ++l) { sums.z_sum[l] = w.z[l].sum; sums.z_abs[l] = w.z[l].abs_sum; }
  for (int l = 1; l <= L - 1; ++l) { sums.s_sum[l] = w.s[l].sum; sums.s_abs[l] = w.s[l].abs_sum; }
  for (int l = 2; l <= L; ++l) { sums.g_sum[l] = w.g[l].sum; sums.g_abs[l] = w.g[l].abs_sum; }

  std::vector<double> gram_sums(L, 0.0);
  if (per_sample) {
    sums.zs.assign(L, std::vector<double>(B, 0.0));
    sums.sg.assign(L, std::vector<double>(B, 0.0));
    for (int l = 2; l <= L - 1; ++l) {
      const int64_t n_prev = w.widths[l - 1], n = w.widths[l];
      for (int64_t b = 0; b < B; ++b) {
        sums.zs[l][b] = kernels::dot(&w.z[l - 1].rows[b * n_prev], &w.s[l - 1].rows[b * n_prev], n_prev);
        sums.sg[l][b] = kernels::dot(&w.s[l].rows[b * n], &w.g[l].rows[b * n], n);
      }
    }
  } else {
    // Batch numerator per layer l = 2..L-1: sum over the B x B Gram products
    // (cost B^2 (n_l + n_{l-1})) or, when cheaper, over blocks of rows of the
    // degree matrices (cost 2 B n_l n_{l-1}); neither stores an n_l x n_{l-1}
    // matrix. Tasks are fixed blocks of rows, so the sums do not depend on
    // the thread count.
    struct Task { int layer; int64_t first, last; bool gram; };
    std::vector<Task> tasks;
    double work = 0;
    for (int l = 2; l <= L - 1; ++l) {
      const double n = static_cast<double>(w.widths[l]), n_prev = static_cast<double>(w.widths[l - 1]);
      const bool gram = static_cast<double>(B) * (n + n_prev) <= 2.0 * n * n_prev;
      const int64_t count = gram ? B : w.widths[l];
      for (int64_t r = 0; r < count; r += kRowBlock) tasks.push_back({l, r, std::min(count, r + kRowBlock), gram});
      work += gram ? static_cast<double>(B) * B * (n + n_prev) : 2.0 * B * n * n_prev;
    }
    const int team = pick_threads(threads, work);
    int64_t scratch_len = 0;
    for (const Task& task : tasks)
      scratch_len = std::max(scratch_len, task.gram ? 2 * kRowBlock * B : kRowBlock * (B + 2 * w.widths[task.layer - 1]));
    ThreadScratch scratch(team, scratch_len, 0);
    std::vector<double> partial(tasks.size(), 0.0);

    parallel_for(static_cast<int64_t>(tasks.size()), team, [&](int64_t k) {
      double* buf = scratch.mine().data();
      const Task& task = tasks[k];
      const int l = task.layer;
      const int64_t n = w.widths[l], n_prev = w.widths[l - 1], rows = task.last - task.first;
      const double* u = w.g[l + 1].sum.data();  // S^{l+1}
      const double* v = w.z[l - 2].sum.data();  // Z^{l-2}
      double total = 0.0;
      if (task.gram) {
        double* a = buf;             // A[b, :] = s^l_b . g^l_:         for b in the block
        double* c = buf + rows * B;  // C[b, :] = z^{l-1}_b . s^{l-1}_:
        kernels::sparse_times_dense(&w.s[l].rows[task.first * n], rows, n, n, w.g[l].cols.data(), B, B, a, B);
        kernels::sparse_times_dense(&w.z[l - 1].rows[task.first * n_prev], rows, n_prev, n_prev,
                                    w.s[l - 1].cols.data(), B, B, c, B);
        for (int64_t r = 0; r < rows; ++r)
          total += u[task.first + r] * kernels::weighted_triple_dot(v, a + r * B, c + r * B, B);
      } else {
        double* weights = buf;                      // rows x B
        double* d_in = buf + rows * B;              // rows x n_prev: delta_in rows (times B)
        double* d_out = d_in + rows * n_prev;       // rows x n_prev: delta_out rows (times B)
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t b = 0; b < B; ++b) weights[r * B + b] = w.s[l].cols[(task.first + r) * B + b] * u[b];
        kernels::sparse_times_dense(weights, rows, B, B, w.z[l - 1].rows.data(), n_prev, n_prev, d_in, n_prev);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t b = 0; b < B; ++b) weights[r * B + b] = w.g[l].cols[(task.first + r) * B + b] * v[b];
        kernels::sparse_times_dense(weights, rows, B, B, w.s[l - 1].rows.data(), n_prev, n_prev, d_out, n_prev);
        for (int64_t r = 0; r < rows; ++r) total += kernels::dot(d_in + r * n_prev, d_out + r * n_prev, n_prev);
      }
      partial[k] = total;
    });
    for (size_t k = 0; k < tasks.size(); ++k) gram_sums[tasks[k].layer - 1] += partial[k];
  }
  return finish(sums, reduction, gram_sums);
}
}  // namespace

BetaTerms beta_eff(const Trace& t, Reduction reduction, int threads) {
  return guard_memory(t, false, [&] { return beta_eff_unguarded(t, reduction, threads); });
}

BetaTerms finish(const RowSums& r, Reduction reduction, const std::vector<double>& gram_sums) {
  const int L = static_cast<int>(r.widths.size()) - 1;
  const int64_t B = r.batch;
  const bool per_sample = reduction == Reduction::Sample;
  const int64_t cols = per_sample ? B : 1;
  BetaTerms out;
  out.batch = B;
  out.widths = r.widths;
  out.layer_numerator.assign(L * cols, 0.0);
  out.layer_denominator.assign(L * cols, 0.0);

  // Denominator and scale, per sample (SPEC section 3).
  std::vector<double> den_b(B, 0.0), scale_b(B, 0.0);
  for (int l = 1; l <= L - 1; ++l) {
    for (int64_t b = 0; b < B; ++b) {
      const double term = r.z_sum[l - 1][b] * r.s_sum[l][b] * r.g_sum[l + 1][b];
      den_b[b] += term;
      scale_b[b] += r.z_abs[l - 1][b] * r.s_abs[l][b] * r.g_abs[l + 1][b];
      if (per_sample) out.layer_denominator[(l - 1) * B + b] = term;
    }
  }
  if (per_sample) {
    out.numerator.assign(B, 0.0);
    for (int l = 2; l <= L - 1; ++l) {
      for (int64_t b = 0; b < B; ++b) {
        const double term = r.z_sum[l - 2][b] * r.zs[l][b] * r.sg[l][b] * r.g_sum[l + 1][b];
        out.layer_numerator[(l - 1) * B + b] = term;
        out.numerator[b] += term;
      }
    }
    out.denominator = den_b;
    out.scale = scale_b;
  } else {
    const double inv_b = 1.0 / static_cast<double>(B);
    double num = 0.0, den = 0.0, scale = 0.0;
    for (int l = 2; l <= L - 1; ++l) {
      out.layer_numerator[l - 1] = gram_sums[l - 1] * inv_b * inv_b;
      num += out.layer_numerator[l - 1];
    }
    for (int l = 1; l <= L - 1; ++l) {
      double acc = 0.0;
      for (int64_t b = 0; b < B; ++b) acc += r.z_sum[l - 1][b] * r.s_sum[l][b] * r.g_sum[l + 1][b];
      out.layer_denominator[l - 1] = acc * inv_b;
      den += out.layer_denominator[l - 1];
    }
    for (int64_t b = 0; b < B; ++b) scale += scale_b[b];
    out.numerator = {num};
    out.denominator = {den};
    out.scale = {scale * inv_b};
  }

  const size_t m = out.numerator.size();
  out.value.assign(m, 0.0);
  out.degenerate.assign(m, 0);
  for (size_t k = 0; k < m; ++k) {
    if (!std::isfinite(out.numerator[k]) || !std::isfinite(out.denominator[k]) ||
        !std::isfinite(out.scale[k]))
      throw ArgumentError("acts/derivs/grads",
                          "values too large: beta_eff's terms overflow float64; rescale the inputs");
    if (std::fabs(out.denominator[k]) <= kDegenerateRtol * out.scale[k]) {
      out.degenerate[k] = 1;  // SPEC: report 0 and say so; never add an epsilon
    } else {
      out.value[k] = out.numerator[k] / out.denominator[k];
    }
  }
  return out;
}

namespace {
void degrees_unguarded(const Trace& t, const std::vector<double*>& delta_in,
                       const std::vector<double*>& delta_out, int threads) {
  Workspace w = make_workspace(t, true, Transposed::ZandS, threads);
  const int L = w.n_layers;
  const int64_t B = w.batch;
  const double inv_b = 1.0 / static_cast<double>(B);
  // Weight layer l's degree rows: out[j, :] = sum_b x[b, j] * weights[b, :] with
  // x = z^{l-1}, weights = s^l * S^{l+1} / B (delta_in), or x = s^{l-1},
  // weights = g^l * Z^{l-2} / B (delta_out). Keras layout: j indexes inputs.
  struct Job { const Loaded* x; std::vector<double> weights; int64_t n_out; double* out; };
  std::vector<Job> jobs;
  for (int l = 1; l <= L; ++l) {
    const int64_t n = w.widths[l], n_prev = w.widths[l - 1];
    const size_t size = static_cast<size_t>(n * n_prev);
    if (l <= L - 1) {
      Job job{&w.z[l - 1], std::vector<double>(B * n), n, delta_in[l - 1]};
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < n; ++i) job.weights[b * n + i] = w.s[l].rows[b * n + i] * w.g[l + 1].sum[b] * inv_b;
      jobs.push_back(std::move(job));
    } else {
      std::fill(delta_in[l - 1], delta_in[l - 1] + size, 0.0);
    }
    if (l >= 2) {
      Job job{&w.s[l - 1], std::vector<double>(B * n), n, delta_out[l - 1]};
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < n; ++i) job.weights[b * n + i] = w.g[l].rows[b * n + i] * w.z[l - 2].sum[b] * inv_b;
      jobs.push_back(std::move(job));
    } else {
      std::fill(delta_out[l - 1], delta_out[l - 1] + size, 0.0);
    }
  }
  // Tasks are fixed blocks of output rows (job, j..): fixed summation order over b.
  struct Rows { size_t job; int64_t first, last; };
  std::vector<Rows> tasks;
  double work = 0;
  for (size_t k = 0; k < jobs.size(); ++k) {
    const int64_t n_in = jobs[k].x->view->cols;
    for (int64_t j = 0; j < n_in; j += kRowBlock) tasks.push_back({k, j, std::min(n_in, j + kRowBlock)});
    work += static_cast<double>(B) * n_in * jobs[k].n_out;
  }
  parallel_for(static_cast<int64_t>(tasks.size()), pick_threads(threads, work), [&](int64_t t) {
    const Job& job = jobs[tasks[t].job];
    const int64_t j = tasks[t].first;
    kernels::sparse_times_dense(&job.x->cols[j * B], tasks[t].last - j, B, B, job.weights.data(), job.n_out,
                                job.n_out, job.out + j * job.n_out, job.n_out);
  });
  check_degrees_finite(w.widths, delta_in, delta_out);
}
}  // namespace

void check_degrees_finite(const std::vector<int64_t>& widths, const std::vector<double*>& delta_in,
                          const std::vector<double*>& delta_out) {
  // Inputs were checked to be finite: anything else here is overflow.
  for (size_t l = 1; l < widths.size(); ++l) {
    const int64_t size = widths[l] * widths[l - 1];
    for (const double* out : {delta_in[l - 1], delta_out[l - 1]})
      for (int64_t k = 0; k < size; ++k)
        if (!std::isfinite(out[k]))
          throw ArgumentError("acts/derivs/grads", "values too large: the degrees overflow float64; rescale the inputs");
  }
}

void degrees(const Trace& t, const std::vector<double*>& delta_in,
             const std::vector<double*>& delta_out, int threads) {
  guard_memory(t, true, [&] { degrees_unguarded(t, delta_in, delta_out, threads); });
}

}  // namespace ncap
