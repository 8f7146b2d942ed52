// The kernels for x86-64 CPUs with AVX-512 F/DQ/VL/BW (compiled with those flags; run only where
// the CPU has them, see kernels.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 on _mm512_cvtps_pd
#endif
#define NCAP_ISA_NS avx512
#define NCAP_ISA_WIDTH 8
#define NCAP_ISA_LEVEL 2
#include "kernels_impl.hpp"
