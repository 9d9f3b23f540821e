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
//                         over ctnn's OpenMP threads, each block one single-threaded product)
//                eigen_mt the same products as one Eigen expression each, with Eigen's own
//                         OpenMP threading (Eigen::setNbThreads), for comparison
//                whole    ctnn::ops::gemm on the whole batch at once (no chunking), for comparison
//                other    ctnn::ops::gemm as `ctnn`, on the backend the automatic choice did not
//                         take (OpenBLAS, or ctnn's own kernel ops/sgemm.hpp where the choice is
//                         OpenBLAS): the two backends side by side in one run (add
//                         --benchmark_enable_random_interleaving=true --benchmark_repetitions=5
//                         on a noisy machine); registered only where ctnn is built with OpenBLAS
// Counters: GFLOP/s = 2 * M * N * K per product (kIsRate). im2col / col2im report bytes/s over a
// nominal traffic: im2col writes the patch matrix and reads the input once; col2im reads the
// patch matrix and reads + writes the input gradient once.
#include <benchmark/benchmark.h>

#include <ctnn/ctnn.hpp>

#include <ctnn/ops/winograd.hpp>

#include "bench_common.hpp"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
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
      if constexpr (ctnn::layer_traits<L>::init_role == ctnn::InitRole::convolution) {
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
enum class Variant { ctnn, eigen_mt, whole, other };

// The backend the automatic choice did not take, if ctnn is built with both.
std::optional<ctnn::ops::GemmBackend> other_backend() {
#ifdef CTNN_USE_OPENBLAS
  using ctnn::ops::GemmBackend;
  return ctnn::ops::gemm_backend() == GemmBackend::eigen ? GemmBackend::openblas : GemmBackend::eigen;
#else
  return std::nullopt;
#endif
}

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
  const auto automatic = ctnn::ops::gemm_backend();
  if (variant == Variant::other) ctnn::ops::set_gemm_backend(*other_backend());
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
  if (variant == Variant::other) ctnn::ops::set_gemm_backend(automatic);
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

// ---- 3x3 stride-1 padding-1 convolutions: im2col + GEMM against Winograd -----------------------
// conv3x3/<algo>/<pass>/<shape>, pass fwd (no bias) or bwd (weight and input gradient together, as
// Conv2dLayer::backward). algo im2col: Conv2dLayer's own two schedules, restated here so both
// algorithms run in one process (image-parallel chunks for output planes of 64+ pixels, else
// chunked im2col with block-split GEMMs). algo wino<m><c|p>: ops/winograd.hpp with tile m,
// chunked (c) or by transform point (p). GFLOP/s counts the direct convolution's 2*9*Cin*Cout
// multiply-adds per pixel for every algorithm, so the figures compare as speed.
enum class ConvAlgo { im2col, wino };

void im2col_conv(const ConvCase& c, bool backward, const float* x, const float* w, float* y, float* dw,
                 float* dx) {
  const auto& g = c.g;
  const int n = g.batch, plane = g.out_plane(), patch = g.patch(), cout = c.out_channels;
  const bool image_parallel = plane >= 64;
  const std::size_t per_sample = std::size_t(plane) * patch;
  const int cap = image_parallel ? std::max(1, (n + 7) / 8) : n;
  const int nb = static_cast<int>(std::clamp<std::size_t>((std::size_t{1} << 20) / per_sample, 1, cap));
  const int chunks = (n + nb - 1) / nb;
  const long rows_all = long(n) * plane;
  const std::size_t col_floats = std::size_t(nb) * per_sample;
  const ctnn::ops::MatRef wt{w, patch, cout, patch};
  if (!image_parallel) {
    float* col = ctnn::ops::scratch(0, col_floats);
    for (int n0 = 0; n0 < n; n0 += nb) {
      const int cnt = std::min(nb, n - n0);
      const long rows = long(cnt) * plane;
      ctnn::ops::im2col(x, g, n0, cnt, col);
      if (!backward) {
        ctnn::ops::gemm({col, rows, patch, rows}, wt, {y + long(n0) * plane, rows, cout, rows_all});
        continue;
      }
      const ctnn::ops::MatRef dym{y + long(n0) * plane, rows, cout, rows_all};
      ctnn::ops::gemm(ctnn::ops::MatRef{col, rows, patch, rows}.t(), dym, {dw, patch, cout, patch}, true);
      ctnn::ops::gemm(dym, wt.t(), {col, rows, patch, rows});
      ctnn::ops::col2im_add(col, g, n0, cnt, dx);
    }
    return;
  }
  float* cols = ctnn::ops::scratch(0, col_floats * ctnn::num_threads());
  const int groups = std::min(chunks, 8);
  const std::size_t w_floats = std::size_t(patch) * cout;
  float* partials = ctnn::ops::scratch(1, w_floats * groups);
  const int items = backward ? groups : chunks;
#pragma omp parallel for schedule(dynamic, 1)
  for (int it = 0; it < items; ++it) {
    float* col = cols + col_floats * omp_get_thread_num();
    const int first = backward ? it * chunks / groups : it, last = backward ? (it + 1) * chunks / groups : it + 1;
    for (int i = first; i < last; ++i) {
      const int n0 = i * nb, cnt = std::min(nb, n - n0);
      const long rows = long(cnt) * plane;
      ctnn::ops::im2col(x, g, n0, cnt, col, false);
      const ctnn::ops::MutMatRef out{y + long(n0) * plane, rows, cout, rows_all};
      if (!backward) {
        ctnn::ops::gemm_serial({col, rows, patch, rows}, wt, out);
        continue;
      }
      const ctnn::ops::MatRef dym{out.data, rows, cout, rows_all};
      ctnn::ops::gemm_serial(ctnn::ops::MatRef{col, rows, patch, rows}.t(), dym,
                             {partials + w_floats * it, patch, cout, patch}, i != first);
      for (int ch = 0; ch < g.in_channels; ++ch)
        std::fill_n(dx + ch * g.in_channel_stride() + std::size_t(n0) * g.height * g.width,
                    std::size_t(cnt) * g.height * g.width, 0.0f);
      ctnn::ops::gemm_serial(dym, wt.t(), {col, rows, patch, rows});
      ctnn::ops::col2im_add(col, g, n0, cnt, dx, false);
    }
  }
  if (backward)
    for (std::size_t e = 0; e < w_floats; ++e) {
      float s = partials[e];
      for (int gi = 1; gi < groups; ++gi) s += partials[w_floats * gi + e];
      dw[e] += s;
    }
}

void bm_conv3x3(benchmark::State& state, ConvCase c, ConvAlgo algo, int tile, bool by_point, bool backward) {
  ctnn::set_num_threads(bench_threads());
  const auto& g = c.g;
  const std::size_t in_size = std::size_t(g.in_channels) * g.in_channel_stride(),
                    out_size = std::size_t(c.out_channels) * g.batch * g.out_plane();
  auto x = random_floats(in_size), w = random_floats(std::size_t(g.patch()) * c.out_channels),
       y = random_floats(out_size), dw = random_floats(w.size()), dx = random_floats(in_size);
  const ctnn::ops::Winograd3x3 s{g.in_channels, c.out_channels, g.height, g.width, g.batch, tile, by_point};
  for (bool warm = true; warm || state.KeepRunning(); warm = false) {  // first pass: untimed warm-up
    if (algo == ConvAlgo::im2col) {
      im2col_conv(c, backward, x.data(), w.data(), y.data(), dw.data(), dx.data());
    } else if (!backward) {
      ctnn::ops::winograd_forward(s, x.data(), w.data(), nullptr, y.data());
    } else {
      ctnn::ops::winograd_backward_weights(s, x.data(), y.data(), dw.data());
      ctnn::ops::winograd_backward_data(s, y.data(), w.data(), dx.data());
    }
    benchmark::ClobberMemory();
  }
  const double flop = 2.0 * g.batch * g.out_plane() * g.patch() * c.out_channels * (backward ? 2 : 1);
  state.counters["GFLOP/s"] = benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

const bool registered = [] {
  ctnn::bench::settle_allocator();
  ctnn::bench::add_thread_context();
  const std::pair<Pass, const char*> passes[] = {{Pass::fwd, "fwd"}, {Pass::dW, "dW"}, {Pass::dX, "dX"}};
  const std::pair<Variant, const char*> variants[] = {
      {Variant::ctnn, "ctnn"}, {Variant::eigen_mt, "eigen_mt"}, {Variant::whole, "whole"}, {Variant::other, "other"}};
  for (const auto& c : network_convs(100)) {
    for (const auto& [v, vname] : variants) {
      if (v == Variant::whole && (c.pointwise || c.chunk == c.g.batch)) continue;  // same as ctnn
      if (v == Variant::other && !other_backend()) continue;  // one backend only
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
  for (const auto& c : network_convs(100)) {
    if (c.g.kernel != 3 || c.g.stride != 1 || c.g.padding != 1) continue;
    struct Algo {
      std::string name;
      ConvAlgo algo;
      int tile;
      bool by_point;
    };
    const Algo algos[] = {{"im2col", ConvAlgo::im2col, 0, false}, {"wino2c", ConvAlgo::wino, 2, false},
                          {"wino2p", ConvAlgo::wino, 2, true},    {"wino4c", ConvAlgo::wino, 4, false},
                          {"wino4p", ConvAlgo::wino, 4, true}};
    for (bool bwd : {false, true})
      for (const auto& a : algos)
        benchmark::RegisterBenchmark(("conv3x3/" + a.name + (bwd ? "/bwd/" : "/fwd/") + c.name).c_str(), bm_conv3x3,
                                     c, a.algo, a.tile, a.by_point, bwd)
            ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.2);
  }
  return true;
}();

}  // namespace
