// Thread policy.
//
// ctnn has one level of parallelism: its own OpenMP loops. Eigen's internal GEMM threading is
// switched off (Eigen::setNbThreads(1)); large products are instead cut by ctnn::ops::gemm into
// blocks whose shapes depend only on the problem, never on the thread count, and the blocks are
// shared out by an OpenMP loop. This gives no nested oversubscription (a batch loop never runs
// inside Eigen's threads or the reverse) and bit-identical results for any number of threads.
// Kernels never open a parallel region inside another one.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
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

// Set the thread count for everything ctnn runs from now on. n <= 0 means all cores.
inline void set_num_threads(int n) {
#ifdef _OPENMP
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
#else
  (void)n;
#endif
  Eigen::setNbThreads(1);
}

namespace detail {
// Called by every GEMM entry point so Eigen never spawns its own threads even when the user
// did not call set_num_threads.
inline void eigen_single_threaded() {
  static const bool once = [] {
    Eigen::setNbThreads(1);
    return true;
  }();
  (void)once;
}
}  // namespace detail

}  // namespace ctnn
