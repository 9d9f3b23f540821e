// Throughput of the CIFAR-10 data pipeline: reading, augmenting and batching, in images per
// second (items_per_second, wall clock), to compare with the time of a training step.
//
//   CTNN_CIFAR_DIR=/path/to/dir ./bench_data          dir = cifar-10-batches-bin or its parent
//
// Arguments: threads = LoaderOptions::threads (threads that build one batch); prefetch = build
// the next batch on the loader's background thread. Benchmarks named Cifar10_* need the real
// data and are skipped with a message when CTNN_CIFAR_DIR is unset or wrong. Benchmarks named
// SYNTHETIC_* run on generated stand-in data (not CIFAR-10) so the pipeline can be timed
// anywhere; pixel values do not change the cost of the transforms, only reading is left out.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "ctnn/core/threading.hpp"
#include "ctnn/data/all.hpp"

namespace {

namespace fs = std::filesystem;
using namespace ctnn::data;

// The real data directory, or an empty path after marking the benchmark skipped.
fs::path cifar_dir(benchmark::State& state) {
  const char* env = std::getenv("CTNN_CIFAR_DIR");
  if (env == nullptr || *env == '\0') {
    state.SkipWithError(
        "CTNN_CIFAR_DIR is not set: set it to the directory holding cifar-10-batches-bin/ to time the "
        "pipeline on real CIFAR-10 (the SYNTHETIC_* benchmarks run without it)");
    return {};
  }
  std::error_code ec;
  if (!fs::is_directory(env, ec)) {
    state.SkipWithError(("CTNN_CIFAR_DIR='" + std::string(env) + "' is not a directory").c_str());
    return {};
  }
  return env;
}

// The training split, read once per process for the benchmarks that do not time reading.
const Dataset* real_train(benchmark::State& state) {
  static std::unique_ptr<Dataset> cached;
  static std::string error;
  if (!cached && error.empty()) {
    const fs::path dir = cifar_dir(state);
    if (dir.empty()) return nullptr;
    try {
      cached = std::make_unique<Dataset>(load_cifar10(dir, Split::train));
    } catch (const DataError& e) {
      error = e.what();
    }
  }
  if (!cached) {
    state.SkipWithError(error.c_str());
    return nullptr;
  }
  return cached.get();
}

const Dataset& synthetic_train() {
  static const Dataset d = make_synthetic_cifar(50000, 1);
  return d;
}

// One full epoch through a loader; the consumer only keeps the batch alive.
void run_epoch(DataLoader& loader, int epoch) {
  LoaderBatch b;
  loader.start_epoch(epoch);
  while (loader.next(b)) {
    benchmark::DoNotOptimize(b.images.data());
    benchmark::ClobberMemory();
  }
}

void report(benchmark::State& state, std::int64_t images_per_iteration, int batch_size) {
  state.SetItemsProcessed(state.iterations() * images_per_iteration);
  // Mean wall time to produce one batch, for comparison with a training step on that batch.
  state.counters["us_per_batch"] = benchmark::Counter(
      static_cast<double>(state.iterations() * images_per_iteration) / batch_size,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// Reading both splits from disk (page cache warm after the first iteration).
void BM_Cifar10_Read(benchmark::State& state) {
  const fs::path dir = cifar_dir(state);
  if (dir.empty()) return;
  std::int64_t images = 0;
  for (auto _ : state) {
    try {
      const Dataset train = load_cifar10(dir, Split::train);
      const Dataset test = load_cifar10(dir, Split::test);
      images = train.size() + test.size();
      benchmark::DoNotOptimize(train.pixels.data());
      benchmark::DoNotOptimize(test.pixels.data());
    } catch (const DataError& e) {
      state.SkipWithError(e.what());
      return;
    }
  }
  state.SetItemsProcessed(state.iterations() * images);
}
BENCHMARK(BM_Cifar10_Read)->Unit(benchmark::kMillisecond)->UseRealTime();

// Loader options for the benchmark arguments (threads building a batch, prefetch on/off).
LoaderOptions options_for(benchmark::State& state, LoaderOptions opts) {
  opts.threads = static_cast<int>(state.range(0));
  opts.prefetch = state.range(1) != 0;
  ctnn::set_num_threads(opts.threads);
  return opts;
}

// The loader's four configurations: 1 or 2 threads, with and without a prefetching thread.
void threads_and_prefetch(benchmark::internal::Benchmark* b) {
  b->ArgNames({"threads", "prefetch"})->Args({1, 0})->Args({2, 0})->Args({1, 1})->Args({2, 1});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

// A training epoch (shuffle, crop, flip, ToTensor, Normalize, batches of 100) from memory.
void BM_Cifar10_TrainEpoch(benchmark::State& state) {
  const Dataset* data = real_train(state);
  if (data == nullptr) return;
  const LoaderOptions opts = options_for(state, LoaderOptions::train(42));
  DataLoader loader(*data, opts);
  int epoch = 0;
  for (auto _ : state) run_epoch(loader, epoch++);
  report(state, loader.epoch_size(), opts.batch_size);
}
BENCHMARK(BM_Cifar10_TrainEpoch)
    ->Apply(threads_and_prefetch);

// The whole pipeline end to end: read the training split from disk, then one augmented epoch.
void BM_Cifar10_ReadAugmentBatch(benchmark::State& state) {
  const fs::path dir = cifar_dir(state);
  if (dir.empty()) return;
  const LoaderOptions opts = options_for(state, LoaderOptions::train(42));
  std::int64_t images = 0;
  for (auto _ : state) {
    try {
      const Dataset train = load_cifar10(dir, Split::train);
      DataLoader loader(train, opts);
      run_epoch(loader, 0);
      images = loader.epoch_size();
    } catch (const DataError& e) {
      state.SkipWithError(e.what());
      return;
    }
  }
  state.SetItemsProcessed(state.iterations() * images);
}
BENCHMARK(BM_Cifar10_ReadAugmentBatch)
    ->Apply(threads_and_prefetch);

// The test-time pipeline (fixed order, ToTensor + Normalize) over the training images.
void BM_Cifar10_EvalEpoch(benchmark::State& state) {
  const Dataset* data = real_train(state);
  if (data == nullptr) return;
  DataLoader loader(*data, options_for(state, LoaderOptions::test()));
  int epoch = 0;
  for (auto _ : state) run_epoch(loader, epoch++);
  report(state, loader.epoch_size(), 100);
}
BENCHMARK(BM_Cifar10_EvalEpoch)
    ->ArgNames({"threads", "prefetch"})
    ->Args({1, 1})
    ->Args({2, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// SYNTHETIC data (not CIFAR-10): the same augmented epoch, runnable without the data set.
void BM_SYNTHETIC_TrainEpoch(benchmark::State& state) {
  const Dataset& data = synthetic_train();
  const LoaderOptions opts = options_for(state, LoaderOptions::train(42));
  DataLoader loader(data, opts);
  int epoch = 0;
  for (auto _ : state) run_epoch(loader, epoch++);
  report(state, loader.epoch_size(), opts.batch_size);
}
BENCHMARK(BM_SYNTHETIC_TrainEpoch)
    ->ArgNames({"threads", "prefetch"})
    ->Args({1, 0})
    ->Args({2, 0})
    ->Args({1, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// SYNTHETIC data generation itself (not CIFAR-10).
void BM_SYNTHETIC_Generate(benchmark::State& state) {
  ctnn::set_num_threads(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    const Dataset d = make_synthetic_cifar(10000, 7);
    benchmark::DoNotOptimize(d.pixels.data());
  }
  state.SetItemsProcessed(state.iterations() * 10000);
}
BENCHMARK(BM_SYNTHETIC_Generate)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
