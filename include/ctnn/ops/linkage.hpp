// How the kernels that layers call (ops::conv2d_forward, ops::conv2d_backward, ops::gemm) are
// linked. By default, header-only: they are inline functions, and every translation unit that
// uses them compiles them again, with the GEMM, Winograd and AMX code they reach. A program whose
// units each hold a large network can compile them once instead: it defines CTNN_SEPARATE_KERNELS
// in every one of its units, and CTNN_KERNELS_DEFINITION as well in exactly one, which includes
// <ctnn/ctnn.hpp> and defines them (examples/ctnn_kernels.cpp); the other units only declare
// them. Both macros must be the same throughout a program (the functions are inline in one
// configuration and external in the other).
#pragma once

#if defined(CTNN_SEPARATE_KERNELS) && !defined(CTNN_KERNELS_DEFINITION)
#define CTNN_KERNELS_DECLARED_ONLY 1
#else
#define CTNN_KERNELS_DECLARED_ONLY 0
#endif

#ifdef CTNN_SEPARATE_KERNELS
#define CTNN_KERNEL
#else
#define CTNN_KERNEL inline
#endif
