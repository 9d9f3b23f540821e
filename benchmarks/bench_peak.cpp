// The machine's fp32 multiply-add peak, to read every other GFLOP/s figure against (README,
// Performance): 12 independent chains of one vector register each per thread, more than enough
// in flight to hide the FMA latency of any x86-64 or ARM core, and few enough to stay in
// registers (16 ymm/xmm without AVX-512: 12 chains of 16 floats, two ymm each, read 73 GFLOP/s
// a core on an AVX2 Zen 3 whose GEMMs ran at 94; one register a chain reads 89-96). It measures the
// widest FMA the build targets (-march=native here). UseRealTime with Threads(2): both cores at
// once.
#include <benchmark/benchmark.h>

namespace {

void BM_fma_peak(benchmark::State& state) {
#if defined(__AVX512F__)
  constexpr int kLanes = 16;
#elif defined(__AVX__)
  constexpr int kLanes = 8;
#else
  constexpr int kLanes = 4;
#endif
  constexpr int kChains = 12, kRepeats = 1000;
  float acc[kChains][kLanes];
  for (int k = 0; k < kChains; ++k)
    for (int l = 0; l < kLanes; ++l) acc[k][l] = 1.0f + 0.01f * static_cast<float>(k * kLanes + l);
  const float b = 0.9999f, c = 1e-4f;  // a fixed point near 1: no overflow, no denormals
  for (auto _ : state) {
    for (int i = 0; i < kRepeats; ++i)
      for (int k = 0; k < kChains; ++k)
        for (int l = 0; l < kLanes; ++l) acc[k][l] = acc[k][l] * b + c;  // contracted to one FMA
    benchmark::DoNotOptimize(acc);
  }
  // GFLOP=.../s: billions of floating-point operations per second (two per FMA), all threads.
  state.counters["GFLOP"] = benchmark::Counter(2e-9 * kChains * kLanes * kRepeats * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}
BENCHMARK(BM_fma_peak)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace
