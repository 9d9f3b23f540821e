// The machine's multiply-add peaks, to read every other GFLOP/s figure against (README,
// Performance). UseRealTime with Threads(2): both cores at once.
//
// fp32: 12 independent chains of one packet each per thread, more than enough in flight to hide
// the FMA latency of any x86-64 or ARM core, and few enough to stay in registers. The packets
// are Eigen's, as in ctnn's GEMM kernel (ops/sgemm.hpp), so the peak is that of the vector width
// the kernel runs. Until session 21 this loop was plain C++ left to the auto-vectoriser, and GCC
// vectorises for 256-bit registers on Intel's AVX-512 CPUs unless told otherwise
// (-mprefer-vector-width): on the Xeon model 167 it measured 123 GFLOP/s a core where 512-bit
// FMAs run at 215, and the README's ceilings there were read against half the real peak.
//
// bf16: VDPBF16PS (two bf16 products summed into each fp32 lane, ops/bf16.hpp's AVX512_BF16
// kernel) in the same pattern, on CPUs that have it; reported as skipped elsewhere. Counted as
// two floating-point operations per product, so it compares directly with the fp32 figure.
#include <benchmark/benchmark.h>

#include <Eigen/Core>

#include "ctnn/ops/bf16.hpp"

namespace {

constexpr int kChains = 12, kRepeats = 1000;

void BM_fma_peak(benchmark::State& state) {
  using namespace Eigen::internal;
  using Packet = packet_traits<float>::type;
  constexpr int kLanes = packet_traits<float>::size;
  Packet acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = pset1<Packet>(1.0f + 0.01f * static_cast<float>(k));
  const Packet b = pset1<Packet>(0.9999f), c = pset1<Packet>(1e-4f);  // a fixed point near 1
  for (auto _ : state) {
    for (int i = 0; i < kRepeats; ++i)
      for (int k = 0; k < kChains; ++k) acc[k] = pmadd(acc[k], b, c);
    benchmark::DoNotOptimize(acc);
  }
  // GFLOP=.../s: billions of floating-point operations per second (two per FMA), all threads.
  state.counters["GFLOP"] = benchmark::Counter(2e-9 * kChains * kLanes * kRepeats * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
  state.SetLabel(std::to_string(kLanes * 32) + "-bit FMA");
}
BENCHMARK(BM_fma_peak)->Threads(1)->Threads(2)->UseRealTime();

#if CTNN_HAVE_BF16_KERNEL
// Products of 1.0 and 2^-7 in every pair: the sums grow by 2^-6 an instruction and stay finite
// for the whole run (the products are exact; only the result's rounding changes).
CTNN_BF16_TARGET void dpbf16_chains(benchmark::State& state) {
  __m512 acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = _mm512_set1_ps(static_cast<float>(k));
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3c00);
  for (auto _ : state) {
    for (int i = 0; i < kRepeats; ++i)
      for (int k = 0; k < kChains; ++k) acc[k] = _mm512_dpbf16_ps(acc[k], a, b);
    benchmark::DoNotOptimize(acc);
  }
}
#endif

void BM_bf16_dot_peak(benchmark::State& state) {
#if CTNN_HAVE_BF16_KERNEL
  if (!ctnn::ops::bf16_support().avx512_bf16) {
    state.SkipWithError("this CPU has no AVX512_BF16");
    return;
  }
  dpbf16_chains(state);
  state.counters["GFLOP"] = benchmark::Counter(2e-9 * kChains * 32 * kRepeats * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
  state.SetLabel("VDPBF16PS, 2 flops a product");
#else
  state.SkipWithError("built without ctnn's AVX512_BF16 kernel (not x86-64, or the compiler lacks it)");
#endif
}
BENCHMARK(BM_bf16_dot_peak)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace
