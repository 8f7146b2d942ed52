// The last step shared by the CPU and CUDA paths (SPEC section 3): totals,
// the degenerate test and the per-layer table, in an extended exponent range
// so that arrays scaled by powers of two (load.cpp) come back exactly.
#include <cmath>

#include "ncap/core.hpp"

namespace ncap {
namespace {

// m * 2^e. With every exponent 0 this is plain float64 arithmetic, bit for bit.
struct Ext {
  double m = 0.0;
  int e = 0;
};

Ext operator+(Ext a, Ext b) {
  if (a.e == b.e) return {a.m + b.m, a.e};  // the common case: no scaling anywhere
  if (a.m == 0.0) return {a.m + b.m, b.e};  // a zero must not decide the exponent
  if (b.m == 0.0) return {a.m + b.m, a.e};
  const int e = a.e > b.e ? a.e : b.e;
  return {std::ldexp(a.m, a.e - e) + std::ldexp(b.m, b.e - e), e};
}

double scaled(double m, int e) { return e == 0 ? m : std::ldexp(m, e); }
double to_double(Ext x) { return scaled(x.m, x.e); }

int at(const std::vector<int>& exps, int l) { return exps.empty() ? 0 : exps[l]; }

// SPEC section 3: degenerate when |den| <= kDegenerateRtol * scale.
bool degenerate(Ext den, Ext scale) {
  if (scale.m == 0.0) return den.m == 0.0;
  return scaled(std::fabs(den.m), den.e - scale.e) <= kDegenerateRtol * scale.m;
}

[[noreturn]] void overflow() {
  throw ArgumentError("acts/derivs/grads", "values too large: beta_eff's terms overflow float64; rescale the inputs");
}

double finite(double x) {
  if (!std::isfinite(x)) overflow();
  return x;
}

}  // namespace

BetaTerms finish(const RowSums& r, Reduction reduction, const std::vector<double>& gram_sums) {
  const int L = static_cast<int>(r.widths.size()) - 1;
  const int64_t B = r.batch;
  const bool per_sample = reduction == Reduction::Sample;
  const int64_t cols = per_sample ? B : 1;
  const double inv_b = 1.0 / static_cast<double>(B);
  BetaTerms out;
  out.batch = B;
  out.widths = r.widths;
  out.layer_numerator.assign(L * cols, 0.0);
  out.layer_denominator.assign(L * cols, 0.0);
  // Exponent of weight layer l's denominator (Z^{l-1} N^l S^{l+1}) and numerator
  // (Z^{l-2}, z^{l-1}, s^{l-1}, s^l, g^l, S^{l+1}).
  auto den_exp = [&](int l) { return at(r.z_exp, l - 1) + at(r.s_exp, l) + at(r.g_exp, l + 1); };
  auto num_exp = [&](int l) {
    return at(r.z_exp, l - 2) + at(r.z_exp, l - 1) + at(r.s_exp, l - 1) + at(r.s_exp, l) + at(r.g_exp, l) +
           at(r.g_exp, l + 1);
  };

  std::vector<Ext> num(cols), den(cols), scale(cols);
  for (int l = 1; l <= L - 1; ++l) {
    const int e = den_exp(l);
    Ext layer_den{0.0, e}, layer_scale{0.0, e};
    for (int64_t b = 0; b < B; ++b) {
      const double term = r.z_sum[l - 1][b] * r.s_sum[l][b] * r.g_sum[l + 1][b];
      const double abs_term = r.z_abs[l - 1][b] * r.s_abs[l][b] * r.g_abs[l + 1][b];
      if (per_sample) {
        out.layer_denominator[(l - 1) * B + b] = finite(scaled(term, e));
        den[b] = den[b] + Ext{term, e};
        scale[b] = scale[b] + Ext{abs_term, e};
      } else {
        layer_den.m += term;
        layer_scale.m += abs_term;
      }
    }
    if (!per_sample) {
      layer_den.m *= inv_b;
      layer_scale.m *= inv_b;
      out.layer_denominator[l - 1] = finite(to_double(layer_den));
      den[0] = den[0] + layer_den;
      scale[0] = scale[0] + layer_scale;
    }
  }
  for (int l = 2; l <= L - 1; ++l) {
    const int e = num_exp(l);
    if (per_sample) {
      for (int64_t b = 0; b < B; ++b) {
        const double term = r.z_sum[l - 2][b] * r.zs[l][b] * r.sg[l][b] * r.g_sum[l + 1][b];
        out.layer_numerator[(l - 1) * B + b] = finite(scaled(term, e));
        num[b] = num[b] + Ext{term, e};
      }
    } else {
      const Ext layer{gram_sums[l - 1] * inv_b * inv_b, e};
      out.layer_numerator[l - 1] = finite(to_double(layer));
      num[0] = num[0] + layer;
    }
  }

  out.value.assign(cols, 0.0);
  out.degenerate.assign(cols, 0);
  out.numerator.resize(cols);
  out.denominator.resize(cols);
  out.scale.resize(cols);
  for (int64_t k = 0; k < cols; ++k) {
    out.numerator[k] = finite(to_double(num[k]));
    out.denominator[k] = finite(to_double(den[k]));
    out.scale[k] = finite(to_double(scale[k]));
    if (degenerate(den[k], scale[k])) {
      out.degenerate[k] = 1;  // SPEC: report 0 and say so; never add an epsilon
    } else {
      out.value[k] = finite(scaled(num[k].m / den[k].m, num[k].e - den[k].e));
    }
  }
  return out;
}

}  // namespace ncap
