// Whole networks: a training step (zero_grad, forward, CrossEntropyLoss, backward, Adam step) and
// an eval-mode forward of VGG16 and ResNet50_layer4, batch 100, synthetic inputs.
//
//   build/bin/bench_networks     CTNN_BENCH_THREADS=N (default: all cores)
//
// Counters: items_per_second = images/s; GFLOP/s from the networks' multiply-adds read from their
// types (2 FLOPs each; a training step counted as three forwards). ctnn-bench measures the same
// steps with a fixed step count, for side-by-side runs against PyTorch (compare_pytorch.py).
#include <benchmark/benchmark.h>

#include <ctnn/ctnn.hpp>

#include "bench_common.hpp"

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

using ctnn::bench::bench_threads;

constexpr int kBatch = 100;

template <class Net>
double forward_macs_per_image(Net& net) {
  double macs = 0.0;
  net.for_each_layer([&](auto& layer, const std::string&) {
    using L = std::decay_t<decltype(layer)>;
    if constexpr (ctnn::layer_traits<L>::init_role == ctnn::InitRole::convolution)
      macs += double(L::out_shape::size) * L::in_channels * L::kernel_size * L::kernel_size;
    else if constexpr (ctnn::layer_traits<L>::init_role == ctnn::InitRole::linear)
      macs += double(L::in_features) * L::out_features;
  });
  return macs;
}

template <class Net>
void bm_network(benchmark::State& state, bool train) {
  ctnn::set_num_threads(bench_threads());
  auto net = std::make_unique<Net>(1);
  ctnn::Rng rng(2);
  ctnn::Batch<ctnn::Shape<3, 32, 32>> x(kBatch);
  for (std::size_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(rng.normal());
  std::vector<int> labels(kBatch);
  for (auto& l : labels) l = static_cast<int>(rng.below(10));
  ctnn::CrossEntropyLoss<10> criterion;
  ctnn::Adam optimizer(*net);
  net->train(train);
  auto step = [&] {
    if (train) {
      net->zero_grad();
      benchmark::DoNotOptimize(criterion.forward(net->forward(x), labels));
      net->backward(x, criterion.grad());
      optimizer.step();
    } else {
      benchmark::DoNotOptimize(net->forward(x).data());
    }
    benchmark::ClobberMemory();
  };
  step();  // warm-up: first-touch of every buffer
  for (auto _ : state) step();
  const double flop = 2.0 * forward_macs_per_image(*net) * (train ? 3.0 : 1.0) * kBatch;
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["GFLOP/s"] = benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

const bool registered = [] {
  ctnn::bench::add_thread_context();
  benchmark::AddCustomContext("batch", std::to_string(kBatch));
  for (bool train : {true, false}) {
    const std::string mode = train ? "train" : "eval";
    benchmark::RegisterBenchmark(("vgg16/" + mode).c_str(), bm_network<ctnn::VGG16>, train)
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
    benchmark::RegisterBenchmark(("resnet50/" + mode).c_str(), bm_network<ctnn::ResNet50_layer4<10>>, train)
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
  }
  return true;
}();

}  // namespace
