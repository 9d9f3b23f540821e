// Every distinct layer of VGG16 and ResNet50_layer4, forward and backward, at the shapes the
// networks give it (batch 100, training mode), plus the Adam step over each network's parameters.
//
//   build/bin/bench_layers [--benchmark_filter=Conv2d]     CTNN_BENCH_THREADS=N (default: all cores)
//
// The layer list is read from the network types, so it always matches what the networks run.
// Names: <first network using it>/<layer type>/<input C>x<H>x<W>/<pass>; the counter `uses` says
// how many times that network runs the layer (so uses * time is its share of a step).
// Counters: Conv2d and Linear report GFLOP/s (2 FLOPs per multiply-add; backward counts its two
// products, input and weight gradients); the other layers and Adam report bytes/s over a nominal
// traffic: forward reads the input and writes the output once, backward reads the input and the
// output gradient and writes the input gradient once; Adam reads parameter, gradient and both
// moments and writes back parameter and moments (28 bytes per parameter).
#include <benchmark/benchmark.h>

#include <ctnn/ctnn.hpp>

#include "bench_common.hpp"

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

using ctnn::bench::bench_threads;

constexpr int kBatch = 100;

template <class S>
void fill_uniform(ctnn::Batch<S>& b, std::uint64_t seed) {
  ctnn::Rng rng(seed);
  for (std::size_t i = 0; i < b.size(); ++i) b.data()[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
}

// One bound layer L on its own: its parameters in local buffers, initialised as PyTorch would.
template <class L>
struct Standalone {
  L layer;
  ctnn::AlignedFloats values, grads;

  Standalone() {
    struct Bind : ctnn::StateVisitor {
      std::vector<ctnn::Param*> params;
      void parameter(const std::string&, const ctnn::TensorShape& shape, ctnn::Param& p) override {
        p.numel = ctnn::numel(shape);
        params.push_back(&p);
      }
      void buffer(const std::string&, const ctnn::TensorShape&, std::span<float>) override {}
    } bind;
    layer.visit_state(bind, "");
    std::size_t total = 0;
    for (auto* p : bind.params) total += p->numel;
    values.assign(total, 0.0f);
    grads.assign(total, 0.0f);
    std::size_t off = 0;
    for (auto* p : bind.params) {
      p->value = values.data() + off;
      p->grad = grads.data() + off;
      off += p->numel;
    }
    ctnn::Rng rng(3);
    layer.reset_parameters(rng);
    layer.set_training(true);
  }
};

template <class L>
double layer_flop() {
  if constexpr (ctnn::layer_traits<L>::init_role == ctnn::InitRole::convolution)
    return 2.0 * double(L::out_shape::size) * L::in_channels * L::kernel_size * L::kernel_size * kBatch;
  else if constexpr (ctnn::layer_traits<L>::init_role == ctnn::InitRole::linear)
    return 2.0 * double(L::in_features) * L::out_features * kBatch;
  else
    return 0.0;
}

template <class L>
void bm_layer(benchmark::State& state, bool backward, int uses) {
  using In = typename L::in_shape;
  using Out = typename L::out_shape;
  ctnn::set_num_threads(bench_threads());
  auto s = std::make_unique<Standalone<L>>();
  ctnn::Batch<In> x(kBatch), dx(kBatch);
  ctnn::Batch<Out> dy(kBatch);
  fill_uniform(x, 1);
  fill_uniform(dy, 2);
  // Untimed warm-up (first touch of every buffer); backward also needs the state of a forward on x.
  s->layer.forward(x);
  s->layer.forward(x);
  if (backward) s->layer.backward(x, dy, &dx);
  for (auto _ : state) {
    if (backward) {
      s->layer.backward(x, dy, &dx);
      benchmark::DoNotOptimize(dx.data());
    } else {
      benchmark::DoNotOptimize(s->layer.forward(x).data());
    }
    benchmark::ClobberMemory();
  }
  const double flop = layer_flop<L>() * (backward ? 2.0 : 1.0);
  if (flop > 0.0) {
    state.counters["GFLOP/s"] = benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  } else {
    const double bytes = 4.0 * kBatch * (backward ? 2.0 * In::size + Out::size : double(In::size) + Out::size);
    state.counters["bytes/s"] =
        benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1024);
  }
  state.counters["uses"] = uses;
}

template <class Net>
void bm_adam(benchmark::State& state) {
  ctnn::set_num_threads(bench_threads());
  auto net = std::make_unique<Net>(0);
  for (auto& g : net->gradients()) g = 1e-3f;
  ctnn::Adam opt(*net);
  for (auto _ : state) {
    opt.step();
    benchmark::ClobberMemory();
  }
  state.counters["bytes/s"] = benchmark::Counter(28.0 * double(net->num_parameters()),
                                                 benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1024);
  state.counters["params"] = double(net->num_parameters());
}

// The layer's PyTorch-style name, shortened for benchmark names: Conv2d(64,64,k3,s1,p1).
std::string short_name(std::string s) {
  const std::pair<const char*, const char*> edits[] = {{", kernel_size=", ",k"}, {", stride=", ",s"},
                                                       {", padding=", ",p"},     {", eps=1e-05, momentum=0.1", ""},
                                                       {"in_features=", ""},     {"out_features=", ""},
                                                       {" ", ""}};
  for (const auto& [from, to] : edits)
    for (auto at = s.find(from); at != std::string::npos; at = s.find(from, at)) s.replace(at, std::strlen(from), to);
  return s;
}

template <class L>
std::string layer_key() {
  using In = typename L::in_shape;
  return short_name(L::type_name()) + "/" + std::to_string(In::channels) + "x" + std::to_string(In::height) + "x" +
         std::to_string(In::width);
}

// Registers forward and backward of every distinct leaf layer of `net`, once across networks.
template <class Net>
void register_layers(Net& net, const std::string& net_name, std::map<std::string, bool>& done) {
  std::map<std::string, int> uses;
  net.for_each_layer([&](auto& layer, const std::string&) { ++uses[layer_key<std::decay_t<decltype(layer)>>()]; });
  net.for_each_layer([&](auto& layer, const std::string&) {
    using L = std::decay_t<decltype(layer)>;
    const std::string key = layer_key<L>();
    if (done[key]) return;
    done[key] = true;
    for (bool backward : {false, true})
      benchmark::RegisterBenchmark((net_name + "/" + key + (backward ? "/backward" : "/forward")).c_str(),
                                   bm_layer<L>, backward, uses[key])
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->MinTime(0.2);
  });
}

const bool registered = [] {
  ctnn::bench::settle_allocator();
  ctnn::bench::add_thread_context();
  benchmark::AddCustomContext("batch", std::to_string(kBatch));
  std::map<std::string, bool> done;
  register_layers(*std::make_unique<ctnn::VGG16>(0), "vgg16", done);
  register_layers(*std::make_unique<ctnn::ResNet50_layer4<10>>(0), "resnet50", done);
  benchmark::RegisterBenchmark("vgg16/Adam/step", bm_adam<ctnn::VGG16>)
      ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.2);
  benchmark::RegisterBenchmark("resnet50/Adam/step", bm_adam<ctnn::ResNet50_layer4<10>>)
      ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.2);
  return true;
}();

}  // namespace
