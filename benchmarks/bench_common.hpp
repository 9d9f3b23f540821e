// What the ctnn microbenchmarks share: the thread count from CTNN_BENCH_THREADS, and the
// allocator warm-up that keeps the first benchmark of a process from being measured cold.
#pragma once

#include <benchmark/benchmark.h>

#include <ctnn/ops/gemm.hpp>

#include <cstddef>
#include <cstdlib>

namespace ctnn::bench {

// CTNN_BENCH_THREADS, or 0 (all cores) when unset.
inline int bench_threads() {
  const char* env = std::getenv("CTNN_BENCH_THREADS");
  return env ? std::atoi(env) : 0;
}

// Records the thread setting and the GEMM backend in the benchmark output's context.
inline void add_thread_context() {
  const char* env = std::getenv("CTNN_BENCH_THREADS");
  benchmark::AddCustomContext("ctnn_threads", env ? env : "all cores (CTNN_BENCH_THREADS unset)");
  benchmark::AddCustomContext("ctnn_backend", ctnn::ops::gemm_backend_summary());
}

// glibc serves large blocks with mmap until the first such block is freed, then raises its mmap
// and trim thresholds. Until then, Eigen's per-product packing buffers are mapped, faulted in and
// unmapped on every call, which made whichever benchmark ran first up to ten times slower. A
// training run is past this after its first step; this puts the benchmarks there too.
inline void settle_allocator() {
  void* volatile block = std::malloc(std::size_t{8} << 20);
  std::free(block);
}

}  // namespace ctnn::bench
