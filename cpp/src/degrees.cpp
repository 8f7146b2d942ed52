// Degrees of the line graph (SPEC section 2) in the Keras kernel layout.
#include <algorithm>
#include <cmath>

#include "ncap/core.hpp"
#include "ncap/kernels.hpp"
#include "ncap/parallel.hpp"
#include "workspace.hpp"

namespace ncap {
namespace {

using detail::Loaded;

constexpr int64_t kRowBlock = 16;  // output rows per task: fixed, so that nothing depends on threads

// One output matrix: out[j, :] = 2^exponent sum_b x[b, j] * weights[b, :] over the nonzeros of x.
struct Job {
  const Loaded* x;
  std::vector<double> weights;  // B x n_out
  int64_t n_out;
  double* out;
  int exponent;
};

// weights[b, i] = y[b, i] * factor[b] / B: the weighted rows of s^l (delta_in) or g^l (delta_out).
Job make_job(const Loaded& x, const Loaded& y, const Loaded& factor, int64_t batch, double* out) {
  Job job{&x, std::vector<double>(static_cast<size_t>(batch * y.n)), y.n, out,
          x.exponent + y.exponent + factor.exponent};
  const double inv_b = 1.0 / static_cast<double>(batch);
  for (int64_t b = 0; b < batch; ++b) {
    const double f = factor.sum[b] * inv_b;
    for (int64_t i = 0; i < y.n; ++i) job.weights[b * y.n + i] = y.rows.data()[b * y.n + i] * f;
  }
  return job;
}

void degrees_unguarded(const Trace& t, const std::vector<int64_t>& widths, const detail::Needs& need,
                       const std::vector<double*>& delta_in, const std::vector<double*>& delta_out, int threads) {
  detail::Workspace w;
  detail::load(t, widths, need, threads, w);
  const int L = w.n_layers;
  const int64_t B = w.batch;
  std::vector<Job> jobs;
  for (int l = 1; l <= L; ++l) {
    const size_t size = static_cast<size_t>(w.widths[l] * w.widths[l - 1]);
    if (l <= L - 1) jobs.push_back(make_job(w.z[l - 1], w.s[l], w.g[l + 1], B, delta_in[l - 1]));
    else std::fill(delta_in[l - 1], delta_in[l - 1] + size, 0.0);
    if (l >= 2) jobs.push_back(make_job(w.s[l - 1], w.g[l], w.z[l - 2], B, delta_out[l - 1]));
    else std::fill(delta_out[l - 1], delta_out[l - 1] + size, 0.0);
  }
  struct Rows {
    size_t job;
    int64_t first, last;
  };
  std::vector<Rows> tasks;
  double work = 0;
  for (size_t k = 0; k < jobs.size(); ++k) {
    const int64_t n_in = jobs[k].x->n;
    for (int64_t j = 0; j < n_in; j += kRowBlock) tasks.push_back({k, j, std::min(n_in, j + kRowBlock)});
    work += static_cast<double>(B) * n_in * jobs[k].n_out;
  }
  const kernels::Table& k = kernels::table();
  parallel_for(static_cast<int64_t>(tasks.size()), pick_threads(threads, work), [&](int64_t t) {
    const Job& job = jobs[tasks[t].job];
    kernels::SparseOperand x;
    x.x = job.x->cols.data();
    x.ldx = B;
    x.mask = job.x->col_mask.data();
    x.ldm = kernels::mask_words(B);
    x.width = B;
    x.y = job.weights.data();
    x.ldy = job.n_out;
    double* out = job.out + tasks[t].first * job.n_out;
    k.sparse_times_dense(x, job.n_out, tasks[t].first, tasks[t].last, out, job.n_out);
    if (job.exponent != 0) {
      const int64_t count = (tasks[t].last - tasks[t].first) * job.n_out;
      for (int64_t e = 0; e < count; ++e) out[e] = std::ldexp(out[e], job.exponent);
    }
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

void degrees(const Trace& t, const std::vector<double*>& delta_in, const std::vector<double*>& delta_out,
             int threads) {
  const std::vector<int64_t> widths = check_trace(t, kMinDegreeLayers);
  const int64_t B = t.acts[0].rows;
  const double needed = workspace_bytes(widths, B, true);
  detail::check_available(needed, B);
  detail::with_memory_errors(needed, B, [&] {
    degrees_unguarded(t, widths, detail::degree_needs(static_cast<int>(widths.size()) - 1), delta_in, delta_out,
                      threads);
    return 0;
  });
}

}  // namespace ncap
