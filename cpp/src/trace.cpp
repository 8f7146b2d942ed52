// Checking a trace, planning the work and sizing its memory.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#if defined(__linux__)
#include <sys/resource.h>
#include <unistd.h>
#endif

#include "ncap/core.hpp"
#include "ncap/parallel.hpp"
#include "workspace.hpp"

namespace ncap {
namespace detail {
namespace {

std::string shape_of(const MatrixView& v) {
  std::ostringstream os;
  os << "(" << v.rows << ", " << v.cols << ")";
  return os.str();
}

void check_view(const MatrixView& v, const std::string& name, int64_t batch) {
  if (v.rows != batch) {
    std::ostringstream os;
    os << "batch size " << v.rows << " (shape " << shape_of(v) << ") differs from acts[0]'s " << batch
       << "; every array must hold the same samples";
    throw ArgumentError(name, os.str());
  }
  if (v.cols <= 0) throw ArgumentError(name, "has zero width (shape " + shape_of(v) + ")");
  if (v.data == nullptr) throw ArgumentError(name, "has no data");
}

void check_width(const MatrixView& v, const std::string& name, int64_t expected, const std::string& against) {
  if (v.cols != expected) {
    std::ostringstream os;
    os << "width " << v.cols << " (shape " << shape_of(v) << ") does not chain with " << against << " (width "
       << expected << ")";
    throw ArgumentError(name, os.str());
  }
}

std::string gib(double bytes) {
  std::ostringstream os;
  os.precision(3);
  os << bytes / (1024.0 * 1024.0 * 1024.0) << " GiB";
  return os.str();
}

// Memory this process can still get: the system's MemAvailable, and under an
// address-space limit (ulimit -v, RLIMIT_AS) what is left of it; +inf when unknown.
double available_memory_bytes() {
  double available = std::numeric_limits<double>::infinity();
  std::ifstream meminfo("/proc/meminfo");
  std::string key, unit;
  double kib = 0;
  while (meminfo >> key >> kib >> unit)
    if (key == "MemAvailable:") {
      available = kib * 1024.0;
      break;
    }
#if defined(__linux__)
  struct rlimit limit;
  if (getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    std::ifstream statm("/proc/self/statm");
    double pages = 0;
    if (statm >> pages) {
      const double left = static_cast<double>(limit.rlim_cur) - pages * static_cast<double>(sysconf(_SC_PAGESIZE));
      available = std::min(available, std::max(left, 0.0));
    }
  }
#endif
  return available;
}

}  // namespace

std::string indexed(const char* name, size_t i) { return std::string(name) + "[" + std::to_string(i) + "]"; }

void throw_out_of_memory(double needed, int64_t batch, const std::string& why) {
  throw workspace_error(needed, batch, why);
}

void check_available(double needed, int64_t batch) {
  // Reading /proc/meminfo costs more than a small call: ask only for big work.
  constexpr double kCheckAbove = 256.0 * 1024 * 1024;
  if (needed <= kCheckAbove) return;
  const double available = available_memory_bytes();
  if (needed > available) throw_out_of_memory(needed, batch, "only " + gib(available) + " is available");
}

std::vector<Strategy> plan_strategies(const std::vector<int64_t>& widths, int64_t batch, Strategy forced) {
  const int L = static_cast<int>(widths.size()) - 1;
  std::vector<Strategy> out(L + 1, Strategy::Auto);  // indexed by l; used for l = 2..L-1
  for (int l = 2; l <= L - 1; ++l) {
    if (forced != Strategy::Auto) {
      out[l] = forced;
      continue;
    }
    out[l] = gram_products_are_cheaper(batch, widths[l], widths[l - 1]) ? Strategy::Gram : Strategy::Rows;
  }
  return out;
}

Needs beta_needs(int L, Reduction reduction, const std::vector<Strategy>& strategies) {
  Needs need(L);
  for (int l = 2; l <= L - 1; ++l) {
    if (reduction == Reduction::Sample) {  // row dot products only
      need.z[l - 1] |= kRows;
      need.s[l - 1] |= kRows;
      need.s[l] |= kRows;
      need.g[l] |= kRows;
    } else if (strategies[l] == Strategy::Rows) {  // sparse columns of s^l, g^l times rows of z^{l-1}, s^{l-1}
      need.s[l] |= kCols | kColMask;
      need.g[l] |= kCols | kColMask;
      need.z[l - 1] |= kRows;
      need.s[l - 1] |= kRows;
    } else {  // sparse rows of s^l, z^{l-1} times columns of g^l, s^{l-1}
      need.s[l] |= kRows | kRowMask;
      need.z[l - 1] |= kRows | kRowMask;
      need.g[l] |= kCols;
      need.s[l - 1] |= kCols;
    }
  }
  return need;
}

Needs degree_needs(int L) {
  Needs need(L);
  for (int l = 1; l <= L; ++l) {
    if (l <= L - 1) {  // delta_in rows j: sparse columns of z^{l-1} times s^l-weighted rows
      need.z[l - 1] |= kCols | kColMask;
      need.s[l] |= kRows;
    }
    if (l >= 2) {  // delta_out rows j: sparse columns of s^{l-1} times g^l-weighted rows
      need.s[l - 1] |= kCols | kColMask;
      need.g[l] |= kRows;
    }
  }
  return need;
}

double load_bytes(const std::vector<int64_t>& widths, int64_t batch, const Needs& need) {
  const double B = static_cast<double>(batch);
  const double col_words = std::ceil(B / 64.0);
  double total = 0, widest = 0;
  auto add = [&](unsigned layouts, int64_t width) {
    const double n = static_cast<double>(width);
    total += 3 * B * 8;  // sums, |sums|, first bad column
    if (layouts & kRows) total += B * n * 8;
    if (layouts & kRowMask) total += B * std::ceil(n / 64.0) * 8;
    if (layouts & kCols) total += B * n * 8;
    if (layouts & kColMask) total += n * col_words * 8;
    if (layouts & kCols) widest = std::max(widest, n);
  };
  const int L = static_cast<int>(widths.size()) - 1;
  for (int l = 0; l <= L - 2; ++l) add(need.z[l], widths[l]);
  for (int l = 1; l <= L - 1; ++l) add(need.s[l], widths[l]);
  for (int l = 2; l <= L; ++l) add(need.g[l], widths[l]);
  return total + widest * 8 * 16 * available_threads();  // per thread: 16 staging rows for column copies
}

}  // namespace detail

std::vector<int64_t> check_trace(const Trace& t, int min_layers) {
  using detail::indexed;
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
  if (B <= 0) throw ArgumentError("acts[0]", "empty batch (shape " + detail::shape_of(t.acts[0]) + ")");
  for (size_t l = 0; l < L; ++l) detail::check_view(t.acts[l], indexed("acts", l), B);
  for (size_t l = 0; l + 1 < L; ++l) detail::check_view(t.derivs[l], indexed("derivs", l), B);
  for (size_t l = 0; l < L; ++l) detail::check_view(t.grads[l], indexed("grads", l), B);

  std::vector<int64_t> widths(L + 1);
  widths[0] = t.acts[0].cols;
  for (size_t l = 1; l <= L; ++l) widths[l] = t.grads[l - 1].cols;  // n_l = width of g^l
  for (size_t l = 1; l < L; ++l) {
    detail::check_width(t.acts[l], indexed("acts", l), widths[l], indexed("grads", l - 1));
    detail::check_width(t.derivs[l - 1], indexed("derivs", l - 1), widths[l], indexed("grads", l - 1));
  }
  return widths;
}

double workspace_bytes(const std::vector<int64_t>& widths, int64_t batch, bool for_degrees) {
  const int L = static_cast<int>(widths.size()) - 1;
  if (for_degrees) {
    double total = detail::load_bytes(widths, batch, detail::degree_needs(L));
    for (int l = 1; l <= L; ++l) {
      const double n = static_cast<double>(widths[l]), n_prev = static_cast<double>(widths[l - 1]);
      total += 2 * static_cast<double>(batch) * n * 8;  // the weighted rows of s^l and g^l
      total += 2 * n * n_prev * 8;                      // delta_in and delta_out themselves
    }
    return total;
  }
  const std::vector<Strategy> plan = detail::plan_strategies(widths, batch, Strategy::Auto);
  return std::max(detail::load_bytes(widths, batch, detail::beta_needs(L, Reduction::Batch, plan)),
                  detail::load_bytes(widths, batch, detail::beta_needs(L, Reduction::Sample, plan)));
}

void check_memory(const Trace& trace, bool for_degrees) {
  const std::vector<int64_t> widths = check_trace(trace, for_degrees ? kMinDegreeLayers : kMinBetaLayers);
  detail::check_available(workspace_bytes(widths, trace.acts[0].rows, for_degrees), trace.acts[0].rows);
}

}  // namespace ncap
