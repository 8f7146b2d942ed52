// The CUDA path of beta_eff and degrees: plan the workspace, refuse up front
// when it cannot fit, load every input once on ncap's stream, run the products,
// copy the results back in one copy, then finish on the host with the CPU
// core's own code (ncap::finish), so both paths share every rule after the sums.
#include "ncap/beff_cuda.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <sstream>

#include "context.hpp"
#include "kernels.hpp"
#include "plan.hpp"
#include "runtime.hpp"

namespace ncap::cuda {
namespace {

// Named in every GPU MemoryError: the usual reason a GPU has no memory left.
constexpr const char* kPreallocationHint =
    "TensorFlow and JAX reserve most of a GPU's memory when they start: if they run in this process, set "
    "TF_FORCE_GPU_ALLOW_GROWTH=true or XLA_PYTHON_CLIENT_PREALLOCATE=false before importing them";

Strategy parse_strategy(const std::string& name) {
  if (name == "auto") return Strategy::Auto;
  if (name == "gram") return Strategy::Gram;
  if (name == "rows") return Strategy::Rows;
  throw ArgumentError("strategy", "expected 'auto', 'gram' or 'rows', got '" + name + "'");
}

Work parse_work(const std::string& name) {
  if (name == "batch") return Work::BatchBeta;
  if (name == "sample") return Work::SampleBeta;
  if (name == "degrees") return Work::Degrees;
  throw ArgumentError("work", "expected 'batch', 'sample' or 'degrees', got '" + name + "'");
}

std::string gib(double bytes) {
  std::ostringstream os;
  os.precision(3);
  os << bytes / (1024.0 * 1024.0 * 1024.0) << " GiB";
  return os.str();
}

// The plan's device memory: refused before allocating when the device cannot
// hold it (the cached block counts as free: it is released first).
double* acquire_workspace(DeviceContext& ctx, const Plan& plan, int device) {
  const size_t needed = plan.total_bytes();
  if (needed > ctx.workspace_bytes()) {
    size_t free_bytes = 0, total_bytes = 0;
    check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    const double available = static_cast<double>(free_bytes) + static_cast<double>(ctx.workspace_bytes());
    if (static_cast<double>(needed) > available)
      throw workspace_error(static_cast<double>(needed), plan.batch,
                            "only " + gib(available) + " of the " + gib(static_cast<double>(total_bytes)) +
                                " on CUDA device " + std::to_string(device) + " is free; " + kPreallocationHint);
  }
  try {
    return reinterpret_cast<double*>(ctx.workspace(needed));
  } catch (const WorkspaceError& e) {
    throw workspace_error(static_cast<double>(needed), plan.batch, std::string(e.what()) + "; " + kPreallocationHint);
  }
}

// Waits for ncap's stream however the call ends, so that the producers'
// memory is handed back (DLPack deleters) only once no kernel reads it.
class StreamDrain {
 public:
  explicit StreamDrain(cudaStream_t stream) : stream_(stream) {}
  StreamDrain(const StreamDrain&) = delete;
  StreamDrain& operator=(const StreamDrain&) = delete;
  void now() {
    done_ = true;
    count_stream_synchronization();
    check(cudaStreamSynchronize(stream_), "waiting for ncap's kernels");
  }
  ~StreamDrain() {
    if (!done_ && cudaStreamSynchronize(stream_) != cudaSuccess) cudaGetLastError();
  }

 private:
  cudaStream_t stream_;
  bool done_ = false;
};

const MatrixView& view_of(const Trace& t, const Plan& plan, const PlannedArray* a) {
  const int L = plan.layers;
  for (int l = 0; l <= L - 2; ++l)
    if (a == &plan.z[l]) return t.acts[l];
  for (int l = 1; l <= L - 1; ++l)
    if (a == &plan.s[l]) return t.derivs[l - 1];
  return t.grads[(a - plan.g.data()) - 1];
}

// One call on one device: the caller's device restored, the device's context
// held, every input loaded (float64 rows where needed, sums always).
class CallScope {
 public:
  CallScope(const Plan& plan, const Trace& t, int device, const Options& options)
      : plan_(plan), guard_(device), ctx_(DeviceContext::of(device)), lock_(ctx_.mutex()), drain_(ctx_.stream()) {
    ws = acquire_workspace(ctx_, plan, device);
    host_ = reinterpret_cast<double*>(ctx_.staging(plan.result_bytes()));
    if (options.synchronize_device_first) synchronize_device();
    for (const PlannedArray* a : plan.in_argument_order) {
      kernels::RowSink sink;
      sink.rows = a->full ? ws + a->rows : nullptr;
      sink.sum = ws + a->sums;
      sink.abs_sum = sink.sum + plan.batch;
      sink.first_bad = sink.abs_sum + plan.batch;
      kernels::load_rows(view_of(t, plan, a), sink, stream());
    }
  }

  cudaStream_t stream() const { return ctx_.stream(); }
  const double* rows(const PlannedArray& a) const { return ws + a.rows; }
  const double* sums(const PlannedArray& a) const { return ws + a.sums; }

  // The results region, copied back in one copy; throws the CPU kernel's
  // error for the first non-finite input (argument order, then sample order).
  const double* collect() {
    copy_to_host_async(host_, ws, plan_.result_bytes(), stream());
    drain_.now();
    const int64_t B = plan_.batch;
    for (const PlannedArray* a : plan_.in_argument_order) {
      const double* abs_sum = host_ + a->sums + B;
      const double* first_bad = abs_sum + B;
      for (int64_t b = 0; b < B; ++b) {
        if (first_bad[b] < static_cast<double>(a->width))
          throw non_finite_input_error(a->name, b, static_cast<int64_t>(first_bad[b]), a->width);
        if (!std::isfinite(abs_sum[b])) throw non_finite_input_error(a->name, b, a->width, a->width);
      }
    }
    return host_;
  }

  double* ws = nullptr;

 private:
  const Plan& plan_;
  DeviceGuard guard_;
  DeviceContext& ctx_;
  std::lock_guard<std::mutex> lock_;
  StreamDrain drain_;  // declared last: drained before the lock and the device are let go
  double* host_ = nullptr;
};

std::vector<double> slice(const double* host, size_t offset, int64_t count) {
  return std::vector<double>(host + offset, host + offset + count);
}

}  // namespace

cudaStream_t stream_for(int device) {
  DeviceGuard guard(device);
  return DeviceContext::of(device).stream();
}

BetaTerms beta_eff(const Trace& t, Reduction reduction, int device, const Options& options) {
  const Work work = reduction == Reduction::Sample ? Work::SampleBeta : Work::BatchBeta;
  Plan plan;
  make_plan(check_trace(t, kMinBetaLayers), t.acts[0].rows, work, parse_strategy(options.strategy), plan);
  CallScope call(plan, t, device, options);
  const int L = plan.layers;
  const int64_t B = plan.batch;
  for (int l = 2; l <= L - 1; ++l) {
    const int64_t n = plan.widths[l], n_prev = plan.widths[l - 1];
    if (work == Work::SampleBeta) {
      kernels::row_dots(call.rows(plan.z[l - 1]), call.rows(plan.s[l - 1]), n_prev, B, call.ws + plan.zs[l],
                        call.stream());
      kernels::row_dots(call.rows(plan.s[l]), call.rows(plan.g[l]), n, B, call.ws + plan.sg[l], call.stream());
      continue;
    }
    // sum_{b,b'} S^{l+1}_b Z^{l-2}_b' (s^l_b . g^l_b') (z^{l-1}_b . s^{l-1}_b'), either as
    // B x B products or as sum_{i,j} Din_ij Dout_ij over the degree rows.
    kernels::ProductPair pp;
    if (plan.gram[l]) {
      pp.a = {call.rows(plan.s[l]), n, 1, nullptr, 1.0};
      pp.b = {call.rows(plan.g[l]), n, 1, nullptr, 1.0};
      pp.c = {call.rows(plan.z[l - 1]), n_prev, 1, nullptr, 1.0};
      pp.d = {call.rows(plan.s[l - 1]), n_prev, 1, nullptr, 1.0};
      pp.k1 = n;
      pp.k2 = n_prev;
      pp.p = pp.q = B;
      pp.p_weight = call.sums(plan.g[l + 1]);
      pp.q_weight = call.sums(plan.z[l - 2]);
    } else {
      pp.a = {call.rows(plan.s[l]), 1, n, call.sums(plan.g[l + 1]), 1.0};
      pp.b = {call.rows(plan.z[l - 1]), 1, n_prev, nullptr, 1.0};
      pp.c = {call.rows(plan.g[l]), 1, n, call.sums(plan.z[l - 2]), 1.0};
      pp.d = {call.rows(plan.s[l - 1]), 1, n_prev, nullptr, 1.0};
      pp.k1 = pp.k2 = B;
      pp.p = n;
      pp.q = n_prev;
    }
    kernels::sum_of_products(pp, call.ws + plan.partials, call.ws + plan.layer_sums + (l - 1), call.stream());
  }
  const double* host = call.collect();

  RowSums sums(plan.widths, B);
  for (int l = 0; l <= L - 2; ++l) {
    sums.z_sum[l] = slice(host, plan.z[l].sums, B);
    sums.z_abs[l] = slice(host, plan.z[l].sums + B, B);
  }
  for (int l = 1; l <= L - 1; ++l) {
    sums.s_sum[l] = slice(host, plan.s[l].sums, B);
    sums.s_abs[l] = slice(host, plan.s[l].sums + B, B);
  }
  for (int l = 2; l <= L; ++l) {
    sums.g_sum[l] = slice(host, plan.g[l].sums, B);
    sums.g_abs[l] = slice(host, plan.g[l].sums + B, B);
  }
  std::vector<double> gram_sums(L, 0.0);
  if (work == Work::SampleBeta) {
    sums.zs.assign(L, {});
    sums.sg.assign(L, {});
    for (int l = 2; l <= L - 1; ++l) {
      sums.zs[l] = slice(host, plan.zs[l], B);
      sums.sg[l] = slice(host, plan.sg[l], B);
    }
  } else {
    for (int l = 2; l <= L - 1; ++l) gram_sums[l - 1] = host[plan.layer_sums + l - 1];
  }
  return finish(sums, reduction, gram_sums);
}

void degrees(const Trace& t, const std::vector<double*>& delta_in, const std::vector<double*>& delta_out, int device,
             const Options& options) {
  Plan plan;
  make_plan(check_trace(t, kMinDegreeLayers), t.acts[0].rows, Work::Degrees, Strategy::Auto, plan);
  CallScope call(plan, t, device, options);
  const int L = plan.layers;
  const int64_t B = plan.batch;
  const double inv_b = 1.0 / static_cast<double>(B);
  // Keras layout (n_{l-1} x n_l): out[j, i] = sum_b x[b, j] * (y[b, i] * coef[b] * inv_b).
  for (int l = 1; l <= L; ++l) {
    const int64_t n = plan.widths[l], n_prev = plan.widths[l - 1];
    if (l <= L - 1) {
      const kernels::Operand x{call.rows(plan.z[l - 1]), 1, n_prev, nullptr, 1.0};
      const kernels::Operand y{call.rows(plan.s[l]), 1, n, call.sums(plan.g[l + 1]), inv_b};
      kernels::product_matrix(x, y, B, n_prev, n, call.ws + plan.delta_in[l], call.stream());
    }
    if (l >= 2) {
      const kernels::Operand x{call.rows(plan.s[l - 1]), 1, n_prev, nullptr, 1.0};
      const kernels::Operand y{call.rows(plan.g[l]), 1, n, call.sums(plan.z[l - 2]), inv_b};
      kernels::product_matrix(x, y, B, n_prev, n, call.ws + plan.delta_out[l], call.stream());
    }
  }
  const double* host = call.collect();
  for (int l = 1; l <= L; ++l) {
    const size_t size = static_cast<size_t>(plan.widths[l - 1] * plan.widths[l]);
    if (l <= L - 1) std::memcpy(delta_in[l - 1], host + plan.delta_in[l], size * sizeof(double));
    else std::fill(delta_in[l - 1], delta_in[l - 1] + size, 0.0);
    if (l >= 2) std::memcpy(delta_out[l - 1], host + plan.delta_out[l], size * sizeof(double));
    else std::fill(delta_out[l - 1], delta_out[l - 1] + size, 0.0);
  }
  check_degrees_finite(plan.widths, delta_in, delta_out);
}

size_t workspace_bytes(const std::vector<int64_t>& widths, int64_t batch, const std::string& work,
                       const std::string& strategy) {
  Plan plan;
  make_plan(widths, batch, parse_work(work), parse_strategy(strategy), plan);
  return plan.total_bytes();
}

std::vector<std::string> numerator_strategies(const std::vector<int64_t>& widths, int64_t batch) {
  Plan plan;
  make_plan(widths, batch, Work::BatchBeta, Strategy::Auto, plan);
  std::vector<std::string> out;
  for (int l = 2; l <= plan.layers - 1; ++l) out.push_back(plan.gram[l] ? "gram" : "rows");
  return out;
}

size_t cached_workspace_bytes(int device) { return DeviceContext::cached_bytes_of(device); }

void release_workspaces() { DeviceContext::release_all(); }

}  // namespace ncap::cuda
