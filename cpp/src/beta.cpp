// beta_eff on the CPU: the numerators of SPEC section 3 (the only part that is
// not a per-sample sum), then finish() for the ratio.
#include <algorithm>
#include <utility>

#include "ncap/core.hpp"
#include "ncap/kernels.hpp"
#include "ncap/parallel.hpp"
#include "workspace.hpp"

namespace ncap {
namespace {

using detail::Loaded;
using detail::Workspace;

// Rows (samples for Gram, units for Rows) per parallel task: fixed, so that
// the sums never depend on the thread count.
constexpr int64_t kRowBlock = 16;

kernels::SparseOperand sparse_rows(const Loaded& x, const double* y, int64_t ldy) {
  kernels::SparseOperand op;
  op.x = x.rows.data();
  op.ldx = x.n;
  op.mask = x.row_mask.data();
  op.ldm = x.row_words();
  op.width = x.n;
  op.y = y;
  op.ldy = ldy;
  return op;
}

kernels::SparseOperand sparse_cols(const Loaded& x, int64_t batch, const double* weight, const double* y,
                                   int64_t ldy) {
  kernels::SparseOperand op;
  op.x = x.cols.data();
  op.ldx = batch;
  op.mask = x.col_mask.data();
  op.ldm = kernels::mask_words(batch);
  op.width = batch;
  op.weight = weight;
  op.y = y;
  op.ldy = ldy;
  return op;
}

RowSums row_sums(Workspace& w) {  // moves the sums out of w
  const int L = w.n_layers;
  RowSums sums(w.widths, w.batch);
  sums.z_exp.assign(L - 1, 0);
  sums.s_exp.assign(L, 0);
  sums.g_exp.assign(L + 1, 0);
  for (int l = 0; l <= L - 2; ++l) {
    sums.z_sum[l] = std::move(w.z[l].sum);
    sums.z_abs[l] = std::move(w.z[l].abs_sum);
    sums.z_exp[l] = w.z[l].exponent;
  }
  for (int l = 1; l <= L - 1; ++l) {
    sums.s_sum[l] = std::move(w.s[l].sum);
    sums.s_abs[l] = std::move(w.s[l].abs_sum);
    sums.s_exp[l] = w.s[l].exponent;
  }
  for (int l = 2; l <= L; ++l) {
    sums.g_sum[l] = std::move(w.g[l].sum);
    sums.g_abs[l] = std::move(w.g[l].abs_sum);
    sums.g_exp[l] = w.g[l].exponent;
  }
  return sums;
}

// SPEC section 3, sample reduction: zs[l][b] = z^{l-1}_b . s^{l-1}_b, sg[l][b] = s^l_b . g^l_b.
struct SampleDots {
  std::vector<std::vector<double>> zs, sg;
};

SampleDots sample_dots(const Workspace& w, int threads) {
  const int L = w.n_layers;
  const int64_t B = w.batch;
  SampleDots sums;
  sums.zs.assign(L, std::vector<double>(B, 0.0));
  sums.sg.assign(L, std::vector<double>(B, 0.0));
  double work = 0;
  for (int l = 2; l <= L - 1; ++l) work += static_cast<double>(B) * (w.widths[l] + w.widths[l - 1]);
  const kernels::Table& k = kernels::table();
  parallel_for((B + kRowBlock - 1) / kRowBlock, pick_threads(threads, work), [&](int64_t task) {
    const int64_t last = std::min(B, (task + 1) * kRowBlock);
    for (int l = 2; l <= L - 1; ++l) {
      const int64_t n_prev = w.widths[l - 1], n = w.widths[l];
      for (int64_t b = task * kRowBlock; b < last; ++b) {
        sums.zs[l][b] = k.dot(w.z[l - 1].rows.data() + b * n_prev, w.s[l - 1].rows.data() + b * n_prev, n_prev);
        sums.sg[l][b] = k.dot(w.s[l].rows.data() + b * n, w.g[l].rows.data() + b * n, n);
      }
    }
  });
  return sums;
}

// sum_{b,b'} S^{l+1}_b Z^{l-2}_b' A_bb' C_bb' for each weight layer l (index l-1), by
// the planned strategy per layer. Neither strategy stores an n_l x n_{l-1} matrix.
std::vector<double> gram_sums(const Workspace& w, const std::vector<Strategy>& plan, int threads) {
  const int L = w.n_layers;
  const int64_t B = w.batch;
  struct Task {
    int layer;
    int64_t first, last;
  };
  std::vector<Task> tasks;
  double work = 0;
  for (int l = 2; l <= L - 1; ++l) {
    const double n = static_cast<double>(w.widths[l]), n_prev = static_cast<double>(w.widths[l - 1]);
    const bool gram = plan[l] == Strategy::Gram;
    const int64_t count = gram ? B : w.widths[l];
    for (int64_t r = 0; r < count; r += kRowBlock) tasks.push_back({l, r, std::min(count, r + kRowBlock)});
    work += gram ? static_cast<double>(B) * B * (n + n_prev) : 2.0 * B * n * n_prev;
  }
  std::vector<double> partial(tasks.size(), 0.0);
  const kernels::Table& k = kernels::table();
  parallel_for(static_cast<int64_t>(tasks.size()), pick_threads(threads, work), [&](int64_t t) {
    const Task& task = tasks[t];
    const int l = task.layer;
    const int64_t n_prev = w.widths[l - 1];
    const double* u = w.g[l + 1].sum.data();  // S^{l+1}
    const double* v = w.z[l - 2].sum.data();  // Z^{l-2}
    double out[kRowBlock];
    double total = 0.0;
    if (plan[l] == Strategy::Gram) {
      // Row b: A[b, :] = s^l_b . g^l_:, C[b, :] = z^{l-1}_b . s^{l-1}_:, summed against Z^{l-2}.
      const kernels::SparseOperand a = sparse_rows(w.s[l], w.g[l].cols.data(), B);
      const kernels::SparseOperand c = sparse_rows(w.z[l - 1], w.s[l - 1].cols.data(), B);
      k.fused_pair(a, c, v, B, task.first, task.last, out);
      for (int64_t r = 0; r < task.last - task.first; ++r) total += u[task.first + r] * out[r];
    } else {
      // Row i: delta_in[i, :] B = sum_b s^l_bi S^{l+1}_b z^{l-1}_b, delta_out[i, :] B likewise.
      const kernels::SparseOperand d_in = sparse_cols(w.s[l], B, u, w.z[l - 1].rows.data(), n_prev);
      const kernels::SparseOperand d_out = sparse_cols(w.g[l], B, v, w.s[l - 1].rows.data(), n_prev);
      k.fused_pair(d_in, d_out, nullptr, n_prev, task.first, task.last, out);
      for (int64_t r = 0; r < task.last - task.first; ++r) total += out[r];
    }
    partial[t] = total;
  });
  std::vector<double> sums(L, 0.0);
  for (size_t t = 0; t < tasks.size(); ++t) sums[tasks[t].layer - 1] += partial[t];
  return sums;
}

}  // namespace

BetaTerms beta_eff(const Trace& t, Reduction reduction, int threads, Strategy strategy) {
  const std::vector<int64_t> widths = check_trace(t, kMinBetaLayers);
  const int L = static_cast<int>(widths.size()) - 1;
  const int64_t B = t.acts[0].rows;
  const std::vector<Strategy> plan = detail::plan_strategies(widths, B, strategy);
  const detail::Needs need = detail::beta_needs(L, reduction, plan);
  const double needed = detail::load_bytes(widths, B, need);
  detail::check_available(needed, B);
  return detail::with_memory_errors(needed, B, [&] {
    Workspace w;
    detail::load(t, widths, need, threads, w);
    if (reduction == Reduction::Sample) {
      SampleDots dots = sample_dots(w, threads);
      RowSums sums = row_sums(w);
      sums.zs = std::move(dots.zs);
      sums.sg = std::move(dots.sg);
      return finish(sums, reduction, std::vector<double>(L, 0.0));
    }
    const std::vector<double> grams = gram_sums(w, plan, threads);
    return finish(row_sums(w), reduction, grams);
  });
}

}  // namespace ncap
