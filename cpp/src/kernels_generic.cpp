// The kernels for any CPU: two-double vectors (SSE2 on x86-64, NEON on AArch64).
#if defined(__GNUC__) || defined(__clang__)
#define NCAP_ISA_WIDTH 2
#else
#define NCAP_ISA_WIDTH 1
#endif
#define NCAP_ISA_NS generic
#define NCAP_ISA_LEVEL 0
#include "kernels_impl.hpp"
