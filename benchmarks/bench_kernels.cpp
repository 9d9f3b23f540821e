// The raw kernels behind every convolution of VGG16 and ResNet50_layer4, at the exact shapes the
// networks give them (batch 100): the three GEMMs of each convolution and its im2col / col2im.
//
//   build/bin/bench_kernels [--benchmark_filter=gemm/ctnn/fwd]     CTNN_BENCH_THREADS=N (default: all cores)
//
// Names: <kernel>/<variant>/<pass>/c<Cin>_<Cout>_k<K>s<S>p<P>_<H>. One iteration covers the whole
// batch, chunk by chunk, as Conv2d does it (chunk size: as conv2d.hpp computes it from col_budget
// and the patch size; 1x1 stride-1 convolutions use the activations in place, one product).
// GEMM passes: fwd   Y(rows x Cout)    = Col(rows x Cin*K*K) * W
//              dW    dW(Cin*K*K x Cout) += Col^T * dY
//              dX    dCol(rows x Cin*K*K) = dY * W^T
// GEMM variants: ctnn     ctnn::ops::gemm, exactly as the layer calls it (fixed blocks shared out
//                         over ctnn's OpenMP threads, each block a single-threaded Eigen product)
//                eigen_mt the same products as one Eigen expression each, with Eigen's own
//                         OpenMP threading (Eigen::setNbThreads), for comparison
//                whole    ctnn::ops::gemm on the whole batch at once (no chunking), for comparison
// Counters: GFLOP/s = 2 * M * N * K per product (kIsRate). im2col / col2im report bytes/s over a
// nominal traffic: im2col writes the patch matrix and reads the input once; col2im reads the
// patch matrix and reads + writes the input gradient once.
#include <benchmark/benchmark.h>

#include <ctnn/ctnn.hpp>

#include "bench_common.hpp"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace {

using ctnn::bench::bench_threads;

// One convolution's sizes as its layer sees them.
struct ConvCase {
  std::string name;          // c<Cin>_<Cout>_k<K>s<S>p<P>_<H>
  ctnn::ops::ConvGeometry g;  // batch = N
  int out_channels;
  bool pointwise;
  int chunk;  // samples per im2col chunk
  long rows_per_sample() const { return g.out_plane(); }
};

template <class L>
ConvCase make_case(int batch) {
  ConvCase c;
  c.name = "c" + std::to_string(L::in_channels) + "_" + std::to_string(L::out_channels) + "_k" +
           std::to_string(L::kernel_size) + "s" + std::to_string(L::stride) + "p" + std::to_string(L::padding) + "_" +
           std::to_string(L::in_shape::height);
  c.g = {L::in_channels, L::in_shape::height, L::in_shape::width, L::kernel_size, L::stride, L::padding,
         L::out_shape::height, L::out_shape::width, batch};
  c.out_channels = L::out_channels;
  c.pointwise = L::pointwise;
  // As Conv2dLayer::chunk(): as many samples as fit col_budget floats, at least one.
  const std::size_t per_sample = std::size_t(L::out_shape::plane) * L::patch;
  c.chunk = static_cast<int>(std::clamp<std::size_t>(L::col_budget / per_sample, 1, std::size_t(batch)));
  return c;
}

// The distinct convolutions of both networks, read from their types.
std::vector<ConvCase> network_convs(int batch) {
  std::vector<ConvCase> out;
  std::set<std::string> seen;
  auto walk = [&](auto& net) {
    net.for_each_layer([&](auto& layer, const std::string&) {
      using L = std::decay_t<decltype(layer)>;
      if constexpr (requires { L::kernel_size; }) {
        ConvCase c = make_case<L>(batch);
        if (seen.insert(c.name).second) out.push_back(c);
      }
    });
  };
  walk(*std::make_unique<ctnn::VGG16>(0));
  walk(*std::make_unique<ctnn::ResNet50_layer4<10>>(0));
  return out;
}

std::vector<float> random_floats(std::size_t n) {
  std::vector<float> v(n);
  ctnn::Rng rng(n);
  for (auto& x : v) x = static_cast<float>(rng.uniform(-1.0, 1.0));
  return v;
}

enum class Pass { fwd, dW, dX };
enum class Variant { ctnn, eigen_mt, whole };

// C = op(A) * op(B) (+ C) with Eigen's own threading.
void eigen_product(const ctnn::ops::MatRef& a, const ctnn::ops::MatRef& b, const ctnn::ops::MutMatRef& c,
                   bool accumulate) {
  using Map = Eigen::Map<const Eigen::MatrixXf, 0, Eigen::OuterStride<>>;
  Map ma(a.data, a.rows, a.cols, Eigen::OuterStride<>(a.ld));
  Map mb(b.data, b.rows, b.cols, Eigen::OuterStride<>(b.ld));
  Eigen::Map<Eigen::MatrixXf, 0, Eigen::OuterStride<>> mc(c.data, c.rows, c.cols, Eigen::OuterStride<>(c.ld));
  // The three operand combinations the convolutions use.
  if (!a.transposed && !b.transposed) {
    if (accumulate) mc.noalias() += ma * mb; else mc.noalias() = ma * mb;
  } else if (a.transposed) {
    if (accumulate) mc.noalias() += ma.transpose() * mb; else mc.noalias() = ma.transpose() * mb;
  } else {
    if (accumulate) mc.noalias() += ma * mb.transpose(); else mc.noalias() = ma * mb.transpose();
  }
}

void bm_gemm(benchmark::State& state, ConvCase c, Pass pass, Variant variant) {
  ctnn::set_num_threads(bench_threads());
  if (variant == Variant::eigen_mt) Eigen::setNbThreads(ctnn::num_threads());
  const int n = c.g.batch;
  const long plane = c.rows_per_sample();
  const long rows_all = n * plane;
  const long patch = c.pointwise ? c.g.in_channels : c.g.patch();
  const long cout = c.out_channels;
  const int nb = (c.pointwise || variant == Variant::whole) ? n : c.chunk;
  const long rows_chunk = nb * plane;
  // Operands: the patch matrix of one chunk (or the activations), W, dY / Y of the whole batch.
  auto col = random_floats(std::size_t(rows_chunk) * patch);
  auto w = random_floats(std::size_t(patch) * cout);
  auto dw = random_floats(std::size_t(patch) * cout);
  auto y = random_floats(std::size_t(rows_all) * cout);
  const ctnn::ops::MatRef wt{w.data(), patch, cout, patch};
  double flop = 0.0;
  // The first pass is a warm-up (first touch of the buffers, the allocator settling), not timed.
  for (bool warm = true; warm || state.KeepRunning(); warm = false) {
    flop = 0.0;
    for (int n0 = 0; n0 < n; n0 += nb) {
      const long rows = std::min(nb, n - n0) * plane;
      float* ychunk = y.data() + n0 * plane;
      const ctnn::ops::MatRef colm{col.data(), rows, patch, rows};
      const ctnn::ops::MatRef dym{ychunk, rows, cout, rows_all};
      ctnn::ops::MatRef a = colm, b = wt;
      ctnn::ops::MutMatRef out{ychunk, rows, cout, rows_all};
      bool acc = false;
      if (pass == Pass::dW) {
        a = colm.t(), b = dym, out = {dw.data(), patch, cout, patch}, acc = true;
      } else if (pass == Pass::dX) {
        a = dym, b = wt.t(), out = {col.data(), rows, patch, rows};
      }
      if (variant == Variant::eigen_mt) eigen_product(a, b, out, acc);
      else ctnn::ops::gemm(a, b, out, acc);
      flop += 2.0 * rows * patch * cout;
    }
    benchmark::ClobberMemory();
  }
  if (variant == Variant::eigen_mt) Eigen::setNbThreads(1);
  state.counters["GFLOP/s"] = benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["chunk"] = nb;
  state.counters["M"] = pass == Pass::dW ? patch : (nb * plane);
  state.counters["N"] = pass == Pass::dX ? patch : cout;
  state.counters["K"] = pass == Pass::fwd ? patch : (pass == Pass::dW ? nb * plane : cout);
}

void bm_im2col(benchmark::State& state, ConvCase c) {
  ctnn::set_num_threads(bench_threads());
  const int n = c.g.batch, nb = c.chunk;
  const std::size_t in_size = std::size_t(c.g.in_channels) * c.g.in_channel_stride();
  auto in = random_floats(in_size);
  std::vector<float> col(std::size_t(nb) * c.g.out_plane() * c.g.patch());
  for (bool warm = true; warm || state.KeepRunning(); warm = false) {  // first pass: untimed warm-up
    for (int n0 = 0; n0 < n; n0 += nb) ctnn::ops::im2col(in.data(), c.g, n0, std::min(nb, n - n0), col.data());
    benchmark::ClobberMemory();
  }
  const double bytes = 4.0 * (double(n) * c.g.out_plane() * c.g.patch() + double(in_size));
  state.counters["bytes/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1024);
  state.counters["chunk"] = nb;
}

void bm_col2im(benchmark::State& state, ConvCase c) {
  ctnn::set_num_threads(bench_threads());
  const int n = c.g.batch, nb = c.chunk;
  const std::size_t in_size = std::size_t(c.g.in_channels) * c.g.in_channel_stride();
  std::vector<float> dx(in_size, 0.0f);
  auto col = random_floats(std::size_t(nb) * c.g.out_plane() * c.g.patch());
  for (bool warm = true; warm || state.KeepRunning(); warm = false) {  // first pass: untimed warm-up
    for (int n0 = 0; n0 < n; n0 += nb) ctnn::ops::col2im_add(col.data(), c.g, n0, std::min(nb, n - n0), dx.data());
    benchmark::ClobberMemory();
  }
  const double bytes = 4.0 * (double(n) * c.g.out_plane() * c.g.patch() + 2.0 * double(in_size));
  state.counters["bytes/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1024);
  state.counters["chunk"] = nb;
}

const bool registered = [] {
  ctnn::bench::settle_allocator();
  ctnn::bench::add_thread_context();
  const std::pair<Pass, const char*> passes[] = {{Pass::fwd, "fwd"}, {Pass::dW, "dW"}, {Pass::dX, "dX"}};
  const std::pair<Variant, const char*> variants[] = {
      {Variant::ctnn, "ctnn"}, {Variant::eigen_mt, "eigen_mt"}, {Variant::whole, "whole"}};
  for (const auto& c : network_convs(100)) {
    for (const auto& [v, vname] : variants) {
      if (v == Variant::whole && (c.pointwise || c.chunk == c.g.batch)) continue;  // same as ctnn
      for (const auto& [p, pname] : passes)
        benchmark::RegisterBenchmark(("gemm/" + std::string(vname) + "/" + pname + "/" + c.name).c_str(), bm_gemm, c, p,
                                     v)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime()
            ->MinTime(0.2);
    }
    if (c.pointwise) continue;  // no patch matrix
    benchmark::RegisterBenchmark(("im2col/" + c.name).c_str(), bm_im2col, c)
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.2);
    benchmark::RegisterBenchmark(("col2im/" + c.name).c_str(), bm_col2im, c)
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.2);
  }
  return true;
}();

}  // namespace
