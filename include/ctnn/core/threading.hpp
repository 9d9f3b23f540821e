// Thread policy.
//
// ctnn has one level of parallelism: its own OpenMP loops. Its products (ops::gemm) run
// single-threaded kernels (ops/sgemm.hpp, or OpenBLAS with its threads switched off); large
// products are cut into blocks whose shapes depend only on the problem, never on the thread
// count (on ctnn's own fp32 kernel, whose sums do not depend on where a block starts, one block
// per thread), and the blocks are shared out by an OpenMP loop. set_num_threads also keeps
// Eigen's own product threading off, for Eigen code of the user's that runs inside ctnn's
// loops. This gives no nested oversubscription and bit-identical results for any number of
// threads.
// Kernels never open a parallel region inside another one.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstddef>
#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#endif

// CTNN_OMP(parallel for schedule(static)) is `#pragma omp parallel for schedule(static)` where
// OpenMP is on and nothing where it is off: ctnn's loops then run on the calling thread, and a
// program built without -fopenmp gets no -Wunknown-pragmas warning per loop (-Wall has it).
// (With -fopenmp-simd alone, which defines no macro, the `simd` hints are dropped too.)
// No reduction on a combined `parallel for simd`: clang 14 at -O1 miscompiles it (all_finite in
// train/numerics.hpp says how, and how to write it instead).
#define CTNN_PRAGMA(...) _Pragma(#__VA_ARGS__)
#ifdef _OPENMP
#define CTNN_OMP(...) CTNN_PRAGMA(omp __VA_ARGS__)
#else
#define CTNN_OMP(...)
#endif

namespace ctnn {

// Number of threads ctnn's loops use (OpenMP's setting).
inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Set the thread count for everything ctnn runs from now on on the calling thread. n <= 0 means
// all cores. It is OpenMP's setting, which each thread has its own of: a thread started with
// std::thread begins with OpenMP's default (OMP_NUM_THREADS, else all cores), so a program that
// trains on another thread calls this there.
inline void set_num_threads(int n) {
#ifdef _OPENMP
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
#else
  (void)n;
#endif
  Eigen::setNbThreads(1);
}

// The index of the calling thread in its OpenMP team (0 outside a parallel region).
inline int thread_index() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// The element counts above which ctnn's loops start an OpenMP team (their `if` clauses). Starting
// one costs a few microseconds: the time of about 2^15 elements of a kernel's work (im2col, a
// pooling window, a normalisation), 2^16 of one add or multiply per element, 2^18 of a
// read-only check. Below them a loop runs on the calling thread.
inline constexpr std::size_t kThreadedWork = std::size_t{1} << 15, kThreadedStream = std::size_t{1} << 16,
                             kThreadedScan = std::size_t{1} << 18;

// dst[e] += partials[e] + partials[n + e] + ... + partials[(groups - 1) n + e] for e < n: the
// per-group partial sums of a weight gradient added in group order, so the result does not
// depend on which thread computed which group.
inline void add_group_partials(const float* partials, int groups, std::size_t n, float* dst) {
  CTNN_OMP(parallel for schedule(static) if (n > kThreadedWork))
  for (std::size_t e = 0; e < n; ++e) {
    float sum = partials[e];
    for (int gi = 1; gi < groups; ++gi) sum += partials[n * gi + e];
    dst[e] += sum;
  }
}

}  // namespace ctnn
