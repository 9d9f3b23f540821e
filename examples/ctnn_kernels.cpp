// The one definition of ctnn's layer kernels for the example programs, which compile with
// CTNN_SEPARATE_KERNELS (ops/linkage.hpp): each network's file then no longer compiles the GEMM,
// Winograd and AMX code again. This file is compiled with CTNN_KERNELS_DEFINITION.
#include <ctnn/ctnn.hpp>
