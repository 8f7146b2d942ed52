// The kernels for x86-64 CPUs with AVX2 and FMA (compiled with -mavx2 -mfma; run only where
// the CPU has them, see kernels.cpp).
#define NCAP_ISA_NS avx2
#define NCAP_ISA_WIDTH 4
#define NCAP_ISA_LEVEL 1
#include "kernels_impl.hpp"
