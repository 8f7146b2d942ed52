// Picks the kernels for the CPU at hand (see ncap/kernels.hpp).
#include "ncap/kernels.hpp"

#include <cstdlib>
#include <initializer_list>
#include <cstring>

namespace ncap::kernels {
namespace generic { Table make_table(); }
#ifdef NCAP_HAVE_AVX2
namespace avx2 { Table make_table(); }
#endif
#ifdef NCAP_HAVE_AVX512
namespace avx512 { Table make_table(); }
#endif

namespace {

bool cpu_has(Isa isa) {
  switch (isa) {
    case Isa::Generic:
      return true;
    case Isa::Avx2:
#if defined(NCAP_HAVE_AVX2)
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
      return false;
#endif
    case Isa::Avx512:
#if defined(NCAP_HAVE_AVX512)
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
      return false;
#endif
  }
  return false;
}

Table table_for(Isa isa) {
  switch (isa) {
#ifdef NCAP_HAVE_AVX512
    case Isa::Avx512:
      return avx512::make_table();
#endif
#ifdef NCAP_HAVE_AVX2
    case Isa::Avx2:
      return avx2::make_table();
#endif
    default:
      return generic::make_table();
  }
}

Isa best_isa() {
  Isa best = Isa::Generic;
  for (Isa isa : {Isa::Avx2, Isa::Avx512})
    if (cpu_has(isa)) best = isa;
  return best;
}

Table& current() {
  static Table t = table_for(best_isa());  // thread-safe initialisation
  return t;
}

}  // namespace

const Table& table() { return current(); }

int supported_isas(Isa* out, int capacity) {
  int n = 0;
  for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512})
    if (cpu_has(isa) && n < capacity) out[n++] = isa;
  return n;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx2:
      return "avx2";
    default:
      return "generic";
  }
}

bool force_isa(Isa isa) {
  if (!cpu_has(isa)) return false;
  current() = table_for(isa);
  return true;
}

}  // namespace ncap::kernels
