// The captured arrays as the kernels read them: float64 copies in the layouts
// a computation asks for, per-sample sums, nonzero masks. Internal to the core.
#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "ncap/core.hpp"

namespace ncap::detail {

// Working memory that is always written before it is read: left uninitialised,
// since zero-filling it would cost as much as the maths on small batches. Aligned to
// a cache line: from plain new (16 bytes past a line) every 64-byte load of AVX-512
// spanned two lines, and half of AVX2's did.
constexpr size_t kBufferAlignment = 64;

template <typename T>
class Buffer {
  static_assert(std::is_trivially_default_constructible_v<T> && std::is_trivially_destructible_v<T>);

 public:
  void resize(size_t n) {
    if (n > size_) {
      data_.reset();  // before the new allocation: the peak holds one buffer, not two
      data_.reset(static_cast<T*>(::operator new[](n * sizeof(T), std::align_val_t{kBufferAlignment})));
    }
    size_ = n;
  }
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }

 private:
  struct Release {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t{kBufferAlignment}); }
  };
  std::unique_ptr<T, Release> data_;
  size_t size_ = 0;
};

// "name[i]", for messages.
std::string indexed(const char* name, size_t i);

// Layouts of one loaded array (B samples x n units), as bit flags.
enum Layout : unsigned {
  kRows = 1,     // row-major float64, B x n
  kRowMask = 2,  // nonzero bits of each sample's row, B x words(n)
  kCols = 4,     // column-major float64, n x B
  kColMask = 8,  // nonzero bits of each unit's column, n x words(B)
};

struct Loaded {
  const MatrixView* view = nullptr;
  const char* argument = "";  // "acts", "derivs" or "grads"
  size_t index = 0;           // position in that list
  unsigned layouts = 0;
  int64_t n = 0;
  Buffer<double> rows, cols;
  Buffer<uint64_t> row_mask, col_mask;
  std::vector<double> sum;      // per sample: sum_k x_k (scaled)
  std::vector<double> abs_sum;  // per sample: sum_k |x_k| (scaled)
  // Every stored value and sum is the input times 2^-exponent (0 unless the
  // array's values are so small or large that products could leave float64).
  int exponent = 0;

  int64_t row_words() const { return (n + 63) / 64; }
  std::string name() const { return indexed(argument, index); }
};

// Which layouts each array needs, indexed by the SPEC's l: z[l] for l = 0..L-2,
// s[l] for l = 1..L-1, g[l] for l = 2..L (per-sample sums are always taken).
struct Needs {
  std::vector<unsigned> z, s, g;
  explicit Needs(int n_layers) : z(n_layers - 1, 0u), s(n_layers, 0u), g(n_layers + 1, 0u) {}
};

struct Workspace {
  int64_t batch = 0;
  int n_layers = 0;  // L
  std::vector<int64_t> widths;
  std::vector<Loaded> z, s, g;  // indexed like Needs
};

// Bytes that load() allocates for these needs (a double: right for absurd shapes).
double load_bytes(const std::vector<int64_t>& widths, int64_t batch, const Needs& needs);

// Reads every array the maths uses, once: checks that it is finite (an
// ArgumentError naming the first bad sample otherwise), stores the layouts in
// `needs` and scales arrays far from 1 by a power of two. Allocates nothing
// inside a thread team.
void load(const Trace& trace, const std::vector<int64_t>& widths, const Needs& needs, int threads,
          Workspace& w);

// Per-layer batch numerator strategy, decided once per trace shape.
std::vector<Strategy> plan_strategies(const std::vector<int64_t>& widths, int64_t batch, Strategy forced);

// What beta_eff needs for this reduction and these strategies.
Needs beta_needs(int n_layers, Reduction reduction, const std::vector<Strategy>& strategies);

// What degrees need.
Needs degree_needs(int n_layers);

// Refuses (WorkspaceError) `needed` bytes when that is more than the system has.
void check_available(double needed, int64_t batch);

// Runs fn, turning a failed allocation into a WorkspaceError that states `needed`.
template <typename Fn>
auto with_memory_errors(double needed, int64_t batch, Fn&& fn) -> decltype(fn());

[[noreturn]] void throw_out_of_memory(double needed, int64_t batch, const std::string& why);

template <typename Fn>
auto with_memory_errors(double needed, int64_t batch, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    throw_out_of_memory(needed, batch, "the allocation failed");
  } catch (const std::length_error&) {
    throw_out_of_memory(needed, batch, "the allocation failed");
  }
}

}  // namespace ncap::detail
