#include "plan.hpp"

#include <algorithm>

#include "kernels.hpp"
#include "ncap/core.hpp"

namespace ncap::cuda {
namespace {

constexpr size_t kAlign = 32;  // doubles: every block starts on a 256-byte boundary

class Cursor {
 public:
  size_t take(size_t doubles) {
    const size_t at = next_;
    next_ += (doubles + kAlign - 1) / kAlign * kAlign;
    return at;
  }
  size_t position() const { return next_; }

 private:
  size_t next_ = 0;
};

std::string indexed(const char* name, int i) { return std::string(name) + "[" + std::to_string(i) + "]"; }

}  // namespace

void make_plan(const std::vector<int64_t>& widths, int64_t batch, Work work, Strategy strategy, Plan& plan) {
  const int L = static_cast<int>(widths.size()) - 1;
  const int min_layers = work == Work::Degrees ? kMinDegreeLayers : kMinBetaLayers;
  if (L < min_layers)
    throw ArgumentError("acts", "need at least " + std::to_string(min_layers) + " weight layers, got " +
                                    std::to_string(L < 0 ? 0 : L));
  if (batch <= 0) throw ArgumentError("acts[0]", "empty batch");
  for (int64_t n : widths)
    if (n <= 0) throw ArgumentError("widths", "every width must be positive");

  const bool degrees = work == Work::Degrees;
  const size_t B = static_cast<size_t>(batch);
  plan.work = work;
  plan.layers = L;
  plan.batch = batch;
  plan.widths = widths;
  plan.z.assign(L - 1, {});
  plan.s.assign(L, {});
  plan.g.assign(L + 1, {});
  plan.in_argument_order.clear();
  // z^0 and g^L are only summed unless the degrees need them (as on the CPU).
  for (int l = 0; l <= L - 2; ++l) plan.z[l] = {indexed("acts", l), widths[l], degrees || l > 0};
  for (int l = 1; l <= L - 1; ++l) plan.s[l] = {indexed("derivs", l - 1), widths[l], true};
  for (int l = 2; l <= L; ++l) plan.g[l] = {indexed("grads", l - 1), widths[l], degrees || l < L};
  for (int l = 0; l <= L - 2; ++l) plan.in_argument_order.push_back(&plan.z[l]);
  for (int l = 1; l <= L - 1; ++l) plan.in_argument_order.push_back(&plan.s[l]);
  for (int l = 2; l <= L; ++l) plan.in_argument_order.push_back(&plan.g[l]);

  Cursor at;
  for (PlannedArray* a : plan.in_argument_order) a->sums = at.take(3 * B);
  plan.zs.assign(L, 0);
  plan.sg.assign(L, 0);
  plan.gram.assign(L, false);
  plan.delta_in.assign(L + 1, 0);
  plan.delta_out.assign(L + 1, 0);
  size_t partials = 0;
  if (work == Work::SampleBeta) {
    for (int l = 2; l <= L - 1; ++l) {
      plan.zs[l] = at.take(B);
      plan.sg[l] = at.take(B);
    }
  } else if (work == Work::BatchBeta) {
    plan.layer_sums = at.take(L);
    for (int l = 2; l <= L - 1; ++l) {
      const int64_t n = widths[l], n_prev = widths[l - 1];
      plan.gram[l] = strategy == Strategy::Gram ||
                     (strategy == Strategy::Auto && gram_products_are_cheaper(batch, n, n_prev));
      partials = std::max(partials, plan.gram[l] ? kernels::partial_count(batch, batch)
                                                 : kernels::partial_count(n, n_prev));
    }
  } else {
    for (int l = 1; l <= L; ++l) {
      const size_t size = static_cast<size_t>(widths[l - 1]) * static_cast<size_t>(widths[l]);
      if (l <= L - 1) plan.delta_in[l] = at.take(size);
      if (l >= 2) plan.delta_out[l] = at.take(size);
    }
  }
  plan.results_doubles = at.position();
  for (PlannedArray* a : plan.in_argument_order)
    if (a->full) a->rows = at.take(B * static_cast<size_t>(a->width));
  plan.partials = at.take(partials);
  plan.total_doubles = at.position();
}

}  // namespace ncap::cuda
