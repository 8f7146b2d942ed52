// ncap core: closed-form beta_eff (SPEC sections 2-3) on captured per-layer arrays.
// Plain C++17; knows nothing of Python. Errors are C++ exceptions that the
// bindings turn into ValueError / MemoryError.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace ncap {

// Float16 and BFloat16 reach the CUDA kernel only (widened there, exactly);
// the CPU bindings widen them in Python and never build such a view.
enum class DType { Float32, Float64, Float16, BFloat16 };

// A read-only 2-D view: rows are samples, columns are units. Strides are in
// elements and may be negative or non-unit, so strided views need no copy.
struct MatrixView {
  const void* data = nullptr;
  DType dtype = DType::Float64;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
  int64_t col_stride = 0;
};

// One captured batch, laid out as ncap.beff takes it:
//   acts[l]   = z^l      (B x n_l),     l = 0..L-1   (acts[L-1] unused)
//   derivs[l] = s^{l+1}  (B x n_{l+1}), l = 0..L-2
//   grads[l]  = g^{l+1}  (B x n_{l+1}), l = 0..L-1   (grads[0] unused)
struct Trace {
  std::vector<MatrixView> acts;
  std::vector<MatrixView> derivs;
  std::vector<MatrixView> grads;
};

// A problem with one named argument, e.g. argument "grads[2]".
class ArgumentError : public std::invalid_argument {
 public:
  ArgumentError(const std::string& argument, const std::string& message)
      : std::invalid_argument(argument + ": " + message), argument_(argument) {}
  const std::string& argument() const { return argument_; }

 private:
  std::string argument_;
};

// The working memory could not be allocated; the message states how much.
class WorkspaceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Reduction { Batch, Sample };

// How the batch numerator of one layer is summed (SPEC section 3):
//   Gram: over the B x B products A_bb' C_bb'            (B^2 (n_l + n_{l-1}) multiply-adds)
//   Rows: over rows of the degree matrices delta_in/out  (2 B n_l n_{l-1} multiply-adds)
// Auto takes, layer by layer, the one with fewer multiply-adds. Both skip the
// zeros of s, z and g (ReLU, dropout) and give the same number up to rounding.
enum class Strategy { Auto, Gram, Rows };

// SPEC section 3: a denominator with |den| <= kDegenerateRtol * scale is degenerate.
constexpr double kDegenerateRtol = 1e-10;
// SPEC section 3: beta needs L >= 4 weight layers (three hidden layers); with
// fewer it is identically 0 under softmax cross-entropy. Degrees need L >= 2.
constexpr int kMinBetaLayers = 4;
constexpr int kMinDegreeLayers = 2;
// The largest thread count accepted; anything above is a typo, not a machine.
constexpr int kMaxThreads = 4096;

struct BetaTerms {
  int64_t batch = 0;
  std::vector<int64_t> widths;  // n_0 .. n_L
  // One entry for Reduction::Batch, B entries for Reduction::Sample.
  std::vector<double> value, numerator, denominator, scale;
  std::vector<uint8_t> degenerate;
  // Row-major L x (1 or B): row l-1 holds weight layer l's terms.
  std::vector<double> layer_numerator, layer_denominator;
};

// The one wording, for the CPU and CUDA kernels, of an input that is not
// finite: `unit` is the first non-finite column of `sample`, or `cols` when
// every value is finite but the sum of |x| overflows float64.
inline ArgumentError non_finite_input_error(const std::string& name, int64_t sample, int64_t unit,
                                            int64_t cols) {
  if (unit >= cols)
    return ArgumentError(name, "values too large: the sum of |x| over sample " + std::to_string(sample) +
                                   " overflows float64; rescale the inputs");
  return ArgumentError(name, "contains NaN or Inf (first at sample " + std::to_string(sample) + ", unit " +
                                 std::to_string(unit) +
                                 "); beta_eff needs finite activations, derivatives and gradients");
}

// The one wording of "the working memory does not fit": how much is needed,
// why it failed (`why`, e.g. "only 1.2 GiB is available") and what to do.
inline WorkspaceError workspace_error(double needed_bytes, int64_t batch, const std::string& why) {
  std::ostringstream os;
  os.precision(3);
  os << "ncap needs about " << needed_bytes / (1024.0 * 1024.0 * 1024.0) << " GiB of memory for this batch (B = "
     << batch << "); " << why << "; split the batch into smaller ones";
  return WorkspaceError(os.str());
}

// The batch numerator of weight layer l (2 <= l <= L-1) is summed either over
// the B x B Gram products (B^2 (n_l + n_{l-1}) multiply-adds) or over rows of
// the degree matrices (2 B n_l n_{l-1}); this picks the cheaper by operation
// count, for the CPU and CUDA kernels alike.
inline bool gram_products_are_cheaper(int64_t batch, int64_t n, int64_t n_prev) {
  return static_cast<double>(batch) * static_cast<double>(n + n_prev) <=
         2.0 * static_cast<double>(n) * static_cast<double>(n_prev);
}

// Checks list lengths, ranks, the batch size and that widths chain; returns
// n_0..n_L. min_layers is 4 for beta (three hidden layers), 2 for degrees.
std::vector<int64_t> check_trace(const Trace& trace, int min_layers);

// beta_eff and its terms. threads <= 0 means all available; the result is
// bit-identical for every thread count. Arrays of tiny values are scaled up by
// powers of two inside, so that no product underflows: value is then right to
// rounding even where numerator and denominator themselves are subnormal or 0
// in float64 (they are reported rounded to the nearest float64).
BetaTerms beta_eff(const Trace& trace, Reduction reduction, int threads,
                   Strategy strategy = Strategy::Auto);

// Per-sample sums of the arrays beta_eff uses, indexed by the SPEC's l:
// z_*[l] for l = 0..L-2, s_*[l] for l = 1..L-1, g_*[l] for l = 2..L (other
// entries empty). For Reduction::Sample also zs[l][b] = z^{l-1}_b . s^{l-1}_b
// and sg[l][b] = s^l_b . g^l_b for l = 2..L-1. Where z_exp/s_exp/g_exp[l] is
// set, array l was scaled by 2^-exp before these sums (and before the Gram
// sums handed to finish); empty vectors mean no scaling.
struct RowSums {
  RowSums(std::vector<int64_t> widths_, int64_t batch_)
      : batch(batch_), widths(std::move(widths_)) {
    const size_t L = widths.size() - 1;
    z_sum.resize(L - 1);
    z_abs.resize(L - 1);
    s_sum.resize(L);
    s_abs.resize(L);
    g_sum.resize(L + 1);
    g_abs.resize(L + 1);
  }
  int64_t batch = 0;
  std::vector<int64_t> widths;
  std::vector<std::vector<double>> z_sum, z_abs, s_sum, s_abs, g_sum, g_abs;
  std::vector<std::vector<double>> zs, sg;
  std::vector<int> z_exp, s_exp, g_exp;
};

// The last step shared by the CPU and CUDA paths: denominators, scale, the
// degenerate test and the per-layer table. gram_sums[l-1] (batch reduction) is
// sum_{b,b'} S^{l+1}_b Z^{l-2}_b' A_bb' C_bb' for weight layer l (0 elsewhere).
BetaTerms finish(const RowSums& sums, Reduction reduction, const std::vector<double>& gram_sums);

// Degrees per weight layer l = 1..L in the Keras kernel layout (n_{l-1} x n_l),
// row-major, written to delta_in[l-1] and delta_out[l-1] (caller-allocated).
void degrees(const Trace& trace, const std::vector<double*>& delta_in,
             const std::vector<double*>& delta_out, int threads);

// Throws ArgumentError if a degree overflowed float64 (inputs are finite by then).
void check_degrees_finite(const std::vector<int64_t>& widths, const std::vector<double*>& delta_in,
                          const std::vector<double*>& delta_out);

// An upper bound on the bytes of memory beta_eff (either reduction) or degrees
// (its outputs included) allocate for this trace: a double, so that absurd
// shapes give a right, positive number. Both refuse with WorkspaceError,
// before allocating, when it exceeds the memory the system has available.
double workspace_bytes(const std::vector<int64_t>& widths, int64_t batch, bool for_degrees);

// Checks the trace and refuses (WorkspaceError) work that cannot fit in
// memory; callers that allocate the degree outputs themselves call it first.
void check_memory(const Trace& trace, bool for_degrees);

}  // namespace ncap
