// Runs the kernel check of sgemm_isa.cpp where this CPU has the level it was built for
// (CTNN_ISA_LEVEL: 1 is x86-64's SSE2 baseline, 3 adds AVX2 and FMA, 4 AVX-512; 0 is another
// architecture's baseline, aarch64's NEON, run under qemu-user), and otherwise
// says CTNN_TEST_SKIPPED and why, before any of that code runs.
#include <cstdio>

#include "isa/check.hpp"

int main() {
  // The first feature of the level that the CPU lacks, if any.
  const char* missing = nullptr;
  auto need = [&](bool has, const char* name) {
    if (!has && !missing) missing = name;
  };
  (void)need;
#if CTNN_ISA_LEVEL >= 3
  need(__builtin_cpu_supports("avx2"), "AVX2");
  need(__builtin_cpu_supports("fma"), "FMA");
#endif
#if CTNN_ISA_LEVEL >= 4
  need(__builtin_cpu_supports("avx512f"), "AVX-512F");
  need(__builtin_cpu_supports("avx512bw"), "AVX-512BW");
  need(__builtin_cpu_supports("avx512vl"), "AVX-512VL");
  need(__builtin_cpu_supports("avx512dq"), "AVX-512DQ");
#endif
  if (missing) {
    std::printf("CTNN_TEST_SKIPPED: this CPU has no %s, which the x86-64-v%d build of the kernel needs\n", missing,
                CTNN_ISA_LEVEL);
    return 0;
  }
  const long bad = ctnn_isa::mismatches();
  std::printf("%s: %ld elements differ from the stated order of sums\n", ctnn_isa::describe().c_str(), bad);
  return bad == 0 ? 0 : 1;
}
