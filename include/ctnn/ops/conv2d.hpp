// Conv2d's kernels on channel-major (C, N, H, W) batches, for sizes given at run time.
//
// Conv2dLayer (layers/conv2d.hpp) is a typed shell over these functions: one copy of this code
// serves every convolution of a program, instead of one copy per layer type, which kept a
// ResNet50_layer4 trainer compiling for over a minute.
//
// Three schedules, chosen from the shape:
// - pointwise (1x1, stride 1, no padding): the batch's activations are already the patch matrix;
//   one whole-batch GEMM, split over its output by ops::gemm.
// - image-parallel (output planes of 64 pixels or more): the batch is cut into chunks of whole
//   images; one thread does a chunk's im2col, GEMM and bias in its own cache-sized buffer, and
//   chunks are handed out dynamically. One parallel region per pass, no barrier per chunk, and a
//   thread slowed down by another process does not stall the other.
// - GEMM-parallel (small planes, where a chunk of images makes a thin GEMM against a large weight
//   that every chunk would have to re-pack): each chunk's product is split over its output.
// 3x3 stride-1 padding-1 convolutions instead run as Winograd convolutions (ops/winograd.hpp)
// where that measured faster (winograd_plan below; winograd_now for bf16), and on planes so small
// that every output pixel sees the whole input plane (2x2 and 1x1 under a 3x3 kernel), as one
// dense product per batch that skips the padding (ConvShape::whole_plane, detail::WholePlane):
// at VGG16's 2x2 512-channel layer, 1.4x (fp32) and 1.6x (bf16 on AMX) faster than im2col or
// the direct convolution, forward and backward together (ctnn-bench --conv 512,512,3,1,1,2,
// 2 threads, Xeon model 167).
// Chunk and group boundaries depend only on the batch size, and every output element is
// computed by the same code whichever thread runs it, so results do not depend on thread count.
#pragma once

#include <algorithm>
#include <cstddef>
#include <iterator>
#include <stdexcept>

#include "ctnn/core/threading.hpp"
#include "ctnn/ops/amx_conv.hpp"
#include "ctnn/ops/bias.hpp"
#include "ctnn/ops/gemm.hpp"
#include "ctnn/ops/im2col.hpp"
#include "ctnn/ops/linkage.hpp"
#include "ctnn/ops/scratch.hpp"
#include "ctnn/ops/weight_cache.hpp"
#include "ctnn/ops/winograd.hpp"

namespace ctnn::ops {

// One convolution's sizes: the input sample, the output channels, kernel, stride and padding.
struct ConvShape {
  int in_channels, height, width, out_channels, kernel, stride, padding;
  // The forward's epilogue also applies a following ReLU (Conv2dLayer::forward_relu): one pass
  // over the output fewer. The backward is the same either way.
  bool relu = false;

  constexpr int out_height() const { return (height + 2 * padding - kernel) / stride + 1; }
  constexpr int out_width() const { return (width + 2 * padding - kernel) / stride + 1; }
  constexpr int out_plane() const { return out_height() * out_width(); }
  constexpr int patch() const { return in_channels * kernel * kernel; }  // the GEMM's inner dimension
  constexpr bool pointwise() const { return kernel == 1 && stride == 1 && padding == 0; }
  constexpr bool image_parallel() const { return !pointwise() && out_plane() >= 64; }
  // Every output pixel sees every input pixel through one kernel tap (stride 1, the planes no
  // larger than the kernel's reach: 3x3 kernels on 2x2 or 1x1 planes, VGG16's last stage and
  // ResNet's 2x2 layer), and the planes are small enough that multiplying each input pixel into
  // each output pixel (H*W * out_plane multiply-adds per channel pair) is at most half of
  // im2col's (k*k * out_plane, most of them on padding): ops::conv2d runs these as one dense
  // product per batch (detail::WholePlane; its tap table bounds the planes' product).
  constexpr bool whole_plane() const {
    return kernel > 1 && kernel <= 9 && stride == 1 && padding >= out_height() - 1 && padding >= out_width() - 1 &&
           height - 1 + padding <= kernel - 1 && width - 1 + padding <= kernel - 1 &&
           2 * height * width <= kernel * kernel && height * width * out_plane() <= 81;
  }
  constexpr ConvGeometry geometry(int n) const {
    return {in_channels, height, width, kernel, stride, padding, out_height(), out_width(), n};
  }
};

// The Winograd convolution for this shape and batch, or tile 0 for im2col + GEMM. Chosen from
// `CTNN_BENCH_THREADS=2 bench_kernels --benchmark_filter=conv3x3/` (batch 100, 2 threads, AMD
// EPYC, on a loaded machine) at VGG16's and ResNet50_layer4's shapes:
// - fewer than 16 input channels (VGG's first layer, Cin = 3): im2col, 2-4x faster; the GEMM is
//   cheap and transforming 3 channels into 36 points costs more than it saves.
// - 2x2 planes (ResNet's layer3/layer4 ends, VGG's last stage): not Winograd, which was slower
//   than im2col in 5 of 6 passes (one 4x4 tile per 2x2 output saves less than the transforms
//   cost); they are whole-plane products now.
// - planes of 8x8 and up (VGG's 32x32, 16x16, 8x8): F(4x4, 3x3) by transform point, 1.4-2.5x
//   faster than im2col.
// - 3x3 to 7x7 planes (ResNet's 7x7 and 4x4, VGG's 4x4): F(2x2, 3x3), by transform point from 256
//   input channels (1.6-2.7x), chunked below (1.6-2.2x in the forward, level to 1.7x in the
//   backward), except on planes of 4x4 and less, by point too: a chunk of such images makes thin
//   products that re-read the transformed weights (ResNet's 64- and 128-channel 4x4 layers:
//   by point 1.3-1.5x faster forward and backward, `bench_kernels` conv3x3/wino2c against
//   wino2p; whole ResNet50_layer4 steps faster in 7 alternating rounds of 7, evaluation by
//   0.3-5 % and training by 1.5-7 %, Xeon model 167, session 23; by point holds on Zen 3 too,
//   session 24). On a 4x4 plane F(4x4) would compute a 6x6 transform for one 4x4 output. ResNet's
//   7x7 layer would be as fast with F(4x4), but F(4x4)'s error (about 10x F(2x2)'s,
//   tests/test_winograd.cpp) moved parity_train_step's worst ReLU flip in ResNet from 1.4e-4 of
//   its layer's scale to 4.1e-4; with F(2x2) it stays at 1.4e-4, as with im2col.
constexpr Winograd3x3 winograd_plan(const ConvShape& s, int n) {
  const int side = std::min(s.height, s.width);
  if (s.kernel != 3 || s.stride != 1 || s.padding != 1 || s.in_channels < 16 || side <= 2)
    return {s.in_channels, s.out_channels, s.height, s.width, n, 0, false};
  if (side >= 8) return {s.in_channels, s.out_channels, s.height, s.width, n, 4, true};
  return {s.in_channels, s.out_channels, s.height, s.width, n, 2, s.in_channels >= 256 || side <= 4};
}

namespace detail {
// The Winograd plan of this call. Under bf16 on the AMX kernel, which multiplies about 8x faster
// than fp32 FMAs, every 3x3 layer runs as bf16 products instead. On the AVX512_BF16 kernel
// Winograd layers stay fp32: F(4x4) multiplies 4x less than a direct product and F(2x2) 2.25x
// less, more than that kernel's 2x rate makes up (AMD Zen 4: fp32 F(4x4) 1.3-1.5x faster than
// bf16 im2col at VGG16's 8x8 to 32x32 layers, session 8; fp32 F(2x2) 13-25 % faster at the 4x4
// layers of VGG16 and ResNet50_layer4 and level at ResNet's 7x7, session 30, `ctnn-bench --conv
// all --precision fp32|bf16`), and more accurate; so on the portable kernel (fp32's rate).
// ops/precision.hpp states the policy.
inline Winograd3x3 winograd_now(const ConvShape& s, int n) {
  Winograd3x3 plan = winograd_plan(s, n);
  plan.relu = s.relu;
  if (matmul_precision() == Precision::bf16 && ops::bf16_kernel() == ops::Bf16Kernel::amx) plan.tile = 0;
  return plan;
}

// Upper bound on the floats of one chunk's patch matrix: large enough for efficient GEMMs, small
// enough to stay in the last-level cache instead of streaming the whole batch.
inline constexpr std::size_t col_budget = std::size_t{1} << 20;
// Image-parallel passes keep at least this many chunks so that the threads stay balanced, and
// sum weight gradients in at most this many fixed groups.
inline constexpr int min_chunks = 8, max_groups = 8;

inline int conv_chunk(const ConvShape& s, int n) {
  const std::size_t per_sample = static_cast<std::size_t>(s.out_plane()) * s.patch();
  const int cap = s.image_parallel() ? std::max(1, (n + min_chunks - 1) / min_chunks) : std::max(n, 1);
  return static_cast<int>(std::clamp<std::size_t>(col_budget / per_sample, 1, cap));
}


// A layer's weights as every chunk's product uses them: under bf16, rounded and packed once per
// pass (ops::pack_bf16_b) instead of once per chunk; in fp32, used as they are.
class ChunkWeights {
 public:
  // `used`: whether any product will read them (a first layer computes no input gradient).
  explicit ChunkWeights(const MatRef& w, bool used = true) : w_(w) {
    if (used && matmul_precision() == Precision::bf16) packed_ = pack_bf16_b(w);
  }
  // C = A * W (or +=) on the calling thread.
  void multiply(const MatRef& a, const MutMatRef& c, bool accumulate = false) const {
    if (!packed_.empty()) gemm_bf16_serial(a, packed_, c.data, c.ld, accumulate);
    else gemm_serial(a, w_, c, accumulate);
  }
  // The same, cut over the calling thread's team (for callers outside a parallel loop).
  void multiply_team(const MatRef& a, const MutMatRef& c, bool accumulate = false) const {
    if (packed_.empty()) return gemm(a, w_, c, accumulate);
    eigen_assert(c.rows == a.out_rows() && c.cols == w_.out_cols());
    gemm_bf16_blocks(a, packed_, c.data, c.ld, accumulate);
  }
 private:
  MatRef w_;
  Bf16PackedB packed_{w_};
};

inline void conv2d_forward_image_parallel(const ConvShape& s, int n, const float* x, const float* w,
                                          const ChannelMap& map, float* y) {
  const auto g = s.geometry(n);
  const int plane = s.out_plane(), patch = s.patch(), oc = s.out_channels;
  const int nb = conv_chunk(s, n), chunks = (n + nb - 1) / nb;
  const std::size_t col_floats = static_cast<std::size_t>(nb) * plane * patch;
  float* cols = scratch(0, col_floats * num_threads());
  const Eigen::Index rows_all = static_cast<Eigen::Index>(n) * plane;
  const ChunkWeights wt(MatRef{w, patch, oc, patch});
  CTNN_OMP(parallel for schedule(dynamic, 1))
  for (int i = 0; i < chunks; ++i) {
    float* col = cols + col_floats * thread_index();
    const int n0 = i * nb, cnt = std::min(nb, n - n0);
    const Eigen::Index rows = static_cast<Eigen::Index>(cnt) * plane;
    float* out = y + static_cast<std::size_t>(n0) * plane;
    im2col(x, g, n0, cnt, col, /*threaded=*/false);
    wt.multiply({col, rows, patch, rows}, {out, rows, oc, rows_all});
    // The bias (and what follows), while the chunk's output is still in cache.
    map_channels(out, map, oc, static_cast<std::size_t>(rows), static_cast<std::size_t>(rows_all), /*threaded=*/false);
  }
}

// Under bf16 on the AMX kernel, where it packs a convolution's patches from its input
// (bf16_fuses_im2col: stride 1, so every 3x3 layer of VGG16 and ResNet50_layer4): no
// patch matrix is written, so the batch needs no chunks; its rows are cut into ops::gemm's
// blocks, each packed from x and multiplied by the thread that takes it, bias (unless null)
// added while the block is in cache. The weights are rounded and packed once.
inline void conv2d_forward_patches(const ConvShape& s, int n, const float* x, const float* w, const ChannelMap& map,
                                   float* y) {
  const auto g = s.geometry(n);
  const int patch = s.patch(), oc = s.out_channels;
  const Eigen::Index rows = static_cast<Eigen::Index>(n) * s.out_plane();
  const Bf16PackedB wt = pack_bf16_b(MatRef{w, patch, oc, patch});
  const Eigen::Index blocks = block_count(rows, static_cast<long>(rows) * oc * patch);
  CTNN_OMP(parallel for schedule(dynamic, 1) if (blocks > 1))
  for (Eigen::Index i = 0; i < blocks; ++i) {
    const Eigen::Index r0 = block_start(i, blocks, rows), count = block_start(i + 1, blocks, rows) - r0;
    gemm_bf16_patches(x, g, r0, count, wt, y + r0, rows, /*accumulate=*/false);
    map_channels(y + r0, map, oc, static_cast<std::size_t>(count), static_cast<std::size_t>(rows), /*threaded=*/false);
  }
}

// Under bf16 on the AMX kernel, a stride-1 convolution's backward writes no patch matrix either
// (every 3x3 layer of VGG16 and ResNet50_layer4; padding below the kernel size, as always in
// practice). The weight gradient is summed on tiles from x and dy as they lie
// (conv_bf16_weight_grad: planes of 8x8 and up, and smaller ones with few channels) or packs P^T
// from x (gemm_bf16_patches_t). The input gradient is a convolution of its own (the transposed
// convolution): dy convolved with w's kernels flipped and with input and output channels
// swapped, stride 1, padding k-1-p, run as a forward is (the
// direct convolution, or patches packed from dy), instead of dy * w^T written as a patch matrix
// of k*k times dx's size and summed back by col2im. The same products of bf16-rounded dy and w;
// each input pixel's sum runs over (output channel, kernel offset) in one fp32 accumulation
// instead of k*k partial sums added by col2im.
inline bool bf16_backward_fused(const ConvShape& s, int n) {
  return matmul_precision() == Precision::bf16 && !s.pointwise() && s.padding < s.kernel &&
         bf16_fuses_im2col(s.geometry(n));
}

inline void conv2d_backward_data_transposed(const ConvShape& s, int n, const float* dy, const float* w, float* dx) {
  const int kk = s.kernel * s.kernel, ic = s.in_channels, oc = s.out_channels;
  // The transposed convolution: dy in, dx's planes out.
  const ConvShape t{oc, s.out_height(), s.out_width(), ic, s.kernel, 1, s.kernel - 1 - s.padding};
  if (bf16_direct_conv(t.geometry(n))) return conv_bf16_direct(dy, t.geometry(n), w, /*flipped=*/true, ic, nullptr, dx);
  // Its weight, [ic][oc][k][k]: w[o][i] at kernel offset k*k-1-t.
  float* flipped = scratch(0, static_cast<std::size_t>(oc) * kk * ic);
  for (int i = 0; i < ic; ++i)
    for (int o = 0; o < oc; ++o) {
      const float* from = w + (static_cast<std::size_t>(o) * ic + i) * kk;
      float* to = flipped + (static_cast<std::size_t>(i) * oc + o) * kk;
      for (int k = 0; k < kk; ++k) to[k] = from[kk - 1 - k];
    }
  conv2d_forward_patches(t, n, dy, flipped, ChannelMap{}, dx);
}

// A whole-plane convolution (ConvShape::whole_plane) as dense products over the batch, the
// activations as matrices of (channel, pixel) by sample: Y (O*Q x N) = Wd^T X (C*P x N), Wd
// (C*P x O*Q) holding at [(c, p)][(o, q)] the tap w[o][c][ky][kx] that joins input pixel p to
// output pixel q. The input gradient is Wd dY and Wd's gradient X dY^T, whose entries are
// summed back into each tap's. The products multiply exactly the pairs a convolution does
// (the same operands, rounded alike under bf16), with sums in another order.
struct WholePlane {
  int c, o, p, q, kk;
  int taps[81];  // [q][p]: the kernel offset (ky * k + kx) joining input pixel p to output pixel q
  explicit WholePlane(const ConvShape& s)
      : c(s.in_channels), o(s.out_channels), p(s.height * s.width), q(s.out_plane()), kk(s.kernel * s.kernel) {
    // ConvShape::whole_plane() keeps q * p within the table; checked here too, where a compiler
    // that propagates another shape into this (unreached) code sees it.
    if (q * p > static_cast<int>(std::size(taps))) throw std::logic_error("WholePlane: planes too large for the tap table");
    for (int qi = 0; qi < q; ++qi)
      for (int pi = 0; pi < p; ++pi)
        taps[qi * p + pi] = (pi / s.width - qi / s.out_width() + s.padding) * s.kernel +
                            (pi % s.width - qi % s.out_width() + s.padding);
  }
  std::size_t in_rows() const { return static_cast<std::size_t>(c) * p; }
  std::size_t out_rows() const { return static_cast<std::size_t>(o) * q; }

  // Under bf16 on the AMX kernel, Wd's panels are packed from w itself (gemm_bf16_gathered):
  // Wd is never written, which took as long as the product (2048 x 2048 floats, 16 MiB, for
  // VGG16's 512-channel layers, spread and then read back to be rounded). The same bits. So too
  // on ctnn's fp32 kernel (gemm_gathered, where gathers_fp32()), where evaluation had instead
  // kept Wd from batch to batch (WeightCache) and summed w's bits each batch to check it: on
  // Zen 3, ResNet50_layer4's and VGG16's evaluation 3 % and 5 % faster (8 of 8 and 5 of 6
  // alternating runs) and 25 and 48 MiB smaller; the layers' training forward 20 % faster,
  // their backward 12 %.
  // On the AVX512_BF16 kernel too, for the forward and the input gradient (AMD Zen 4, 2 threads,
  // `ctnn-bench --conv C,C,3,1,1,2 --precision bf16`: forward 1.2-1.3x faster at 256 channels,
  // 1.4-1.8x at 512; backward level and 1.1-1.25x; whole steps 2-3 % faster in training).
  static bool gathers() { return matmul_precision() == Precision::bf16 && bf16_kernel() != Bf16Kernel::portable; }
  // dWd made and summed into dw a block of columns at a time (gemm_bf16_column_blocks): AMX only.
  static bool sums_by_blocks() { return matmul_precision() == Precision::bf16 && bf16_kernel() == Bf16Kernel::amx; }
  // Wd (rows (c, p), k (o, q)) and Wd^T (rows (o, q), k (c, p)) as tables of w.
  GatheredMatrix dense(const float* w) const {
    return {w, p, q, kk, static_cast<long>(c) * kk, taps, 1, p, static_cast<Eigen::Index>(in_rows()),
            static_cast<Eigen::Index>(out_rows())};
  }
  GatheredMatrix transposed(const float* w) const {
    return {w, q, p, static_cast<long>(c) * kk, kk, taps, p, 1, static_cast<Eigen::Index>(out_rows()),
            static_cast<Eigen::Index>(in_rows())};
  }

  // Wd from w ([o][c][k][k]), a column (o, q) at a time.
  void spread(const float* w, float* wd) const {
    if (p == 4) return spread<4>(w, wd);  // 2x2 planes: the inner loop unrolled
    spread<0>(w, wd);
  }
  // Pixels: p when it is known at compile time, else 0.
  template <int Pixels>
  void spread(const float* w, float* wd) const {
    const std::size_t rows = in_rows();
    const int pixels = Pixels ? Pixels : p, kernel = kk, channels = c, outs = q;
    const int* const table = taps;
    CTNN_OMP(parallel for schedule(static) if (out_rows() * rows > kThreadedStream))
    for (int col = 0; col < o * outs; ++col) {
      const float* from = w + static_cast<std::size_t>(col / outs) * channels * kernel;
      const int* tq = table + (col % outs) * pixels;
      float* to = wd + col * rows;
      for (int ci = 0; ci < channels; ++ci, from += kernel, to += pixels)
        for (int pi = 0; pi < pixels; ++pi) to[pi] = from[tq[pi]];
    }
  }
  // dw += each tap's entries of dWd, summed in (q, p) order.
  void gather(const float* dwd, float* dw) const {
    CTNN_OMP(parallel for schedule(static) if (out_rows() * in_rows() > kThreadedStream))
    for (int oi = 0; oi < o; ++oi) gather_outputs(dwd + static_cast<std::size_t>(oi) * q * in_rows(), in_rows(), oi, 1, dw);
  }
  // The same for outputs [o0, o0 + count), from their columns of dWd (leading dimension ld).
  void gather_outputs(const float* dwd, std::size_t ld, int o0, int count, float* dw) const {
    if (p == 4 && q == 4 && kk == 9) return gather_outputs<4, 9>(dwd, ld, o0, count, dw);
    gather_outputs<0, 0>(dwd, ld, o0, count, dw);
  }
  // Pixels: p and q, Kernel: kk, when they are known at compile time, else 0 (a copy of a
  // runtime length is a memmove call, per input channel).
  template <int Pixels, int Kernel>
  void gather_outputs(const float* dwd, std::size_t ld, int o0, int count, float* dw) const {
    const std::size_t rows = ld;
    const int pixels = Pixels ? Pixels : p, outs = Pixels ? Pixels : q, kernel = Kernel ? Kernel : kk, channels = c;
    const int* const table = taps;
    for (int oi = o0; oi < o0 + count; ++oi) {
      float* to = dw + static_cast<std::size_t>(oi) * channels * kernel;
      const float* from = dwd + static_cast<std::size_t>(oi - o0) * outs * rows;
      for (int ci = 0; ci < channels; ++ci, to += kernel, from += pixels) {
        float sums[81];
        std::copy_n(to, kernel, sums);
        for (int qi = 0; qi < outs; ++qi)
          for (int pi = 0; pi < pixels; ++pi) sums[table[qi * pixels + pi]] += from[qi * rows + pi];
        std::copy_n(sums, kernel, to);
      }
    }
  }
  // Runs of `pixels` floats from [outer][inner] order to [inner][outer]: a channel-major batch
  // [channels][n][pixels] into the (channels*pixels x n) matrix (outer = channels), and back
  // (outer = n). The runs are short (4 floats for 2x2 planes): copied with a length known at
  // compile time where it can be, since a memmove call per run cost as much as the product it
  // fed, and by the threads.
  static void swap_order(const float* from, int outer, int inner, int pixels, float* to) {
    if (pixels == 4) return swap_order<4>(from, outer, inner, to);
    if (pixels == 1) return swap_order<1>(from, outer, inner, to);
    for (int i = 0; i < outer; ++i)
      for (int j = 0; j < inner; ++j)
        std::copy_n(from + (static_cast<std::size_t>(i) * inner + j) * pixels, pixels,
                    to + (static_cast<std::size_t>(j) * outer + i) * pixels);
  }
  template <int Pixels>
  static void swap_order(const float* from, int outer, int inner, float* to) {
    CTNN_OMP(parallel for schedule(static) if (static_cast<std::size_t>(outer) * inner * Pixels > kThreadedStream))
    for (int j = 0; j < inner; ++j)
      for (int i = 0; i < outer; ++i)
        for (int k = 0; k < Pixels; ++k)
          to[(static_cast<std::size_t>(j) * outer + i) * Pixels + k] = from[(static_cast<std::size_t>(i) * inner + j) * Pixels + k];
  }
};

inline void conv2d_whole_plane_forward(const ConvShape& s, int n, const float* x, const float* w,
                                       const ChannelMap& map, float* y, WeightCache* cache) {
  const WholePlane d(s);
  const Eigen::Index cp = static_cast<Eigen::Index>(d.in_rows()), oq = static_cast<Eigen::Index>(d.out_rows());
  float* xm = scratch(0, d.in_rows() * n);
  float* ym = scratch(2, d.out_rows() * n);
  WholePlane::swap_order(x, d.c, n, d.p, xm);
  if (d.gathers()) {
    gemm_bf16_gathered(d.transposed(w), {xm, cp, n, cp}, ym, oq, /*accumulate=*/false);
  } else if (gathers_fp32()) {
    gemm_gathered(d.transposed(w), {xm, cp, n, cp}, {ym, oq, n, oq});
  } else {
    const float* wd = transformed_weights(cache, w, static_cast<std::size_t>(d.o) * d.c * d.kk, /*kind=*/-1,
                                          d.in_rows() * d.out_rows(), [&](float* out) { d.spread(w, out); });
    gemm(MatRef{wd, cp, oq, cp}.t(), {xm, cp, n, cp}, {ym, oq, n, oq});
  }
  WholePlane::swap_order(ym, n, d.o, d.q, y);
  map_channels(y, map, d.o, static_cast<std::size_t>(n) * d.q, static_cast<std::size_t>(n) * d.q);
}

// dw += the weight gradient, dx (unless null) = the input gradient.
inline void conv2d_whole_plane_backward(const ConvShape& s, int n, const float* x, const float* dy, const float* w,
                                        float* dw, float* dx) {
  const WholePlane d(s);
  const Eigen::Index cp = static_cast<Eigen::Index>(d.in_rows()), oq = static_cast<Eigen::Index>(d.out_rows());
  float* xm = scratch(0, d.in_rows() * n);
  float* wd = d.sums_by_blocks() ? nullptr : scratch(1, d.in_rows() * d.out_rows());  // (Wd, then) dWd
  float* dym = scratch(2, d.out_rows() * n);
  WholePlane::swap_order(dy, d.o, n, d.q, dym);
  if (dx) {
    float* dxm = scratch(3, d.in_rows() * n);
    if (d.gathers()) {
      gemm_bf16_gathered(d.dense(w), {dym, oq, n, oq}, dxm, cp, /*accumulate=*/false);
    } else if (gathers_fp32()) {
      gemm_gathered(d.dense(w), {dym, oq, n, oq}, {dxm, cp, n, cp});
    } else {
      d.spread(w, wd);
      gemm({wd, cp, oq, cp}, {dym, oq, n, oq}, {dxm, cp, n, cp});
    }
    WholePlane::swap_order(dxm, n, d.c, d.p, dx);
  }
  WholePlane::swap_order(x, d.c, n, d.p, xm);
  if (d.sums_by_blocks()) {
    // dWd 32 outputs' columns at a time (1 MiB for VGG16's 512-channel layers, in L2), summed into
    // dw by the thread that made them, instead of 16 MiB written and read back. The same bits.
    gemm_bf16_column_blocks({xm, cp, n, cp}, MatRef{dym, oq, n, oq}.t(), 32 * d.q,
                            [&](Eigen::Index j0, Eigen::Index count, const float* c, Eigen::Index ld) {
                              d.gather_outputs(c, static_cast<std::size_t>(ld), static_cast<int>(j0 / d.q),
                                               static_cast<int>(count / d.q), dw);
                            });
    return;
  }
  gemm({xm, cp, n, cp}, MatRef{dym, oq, n, oq}.t(), {wd, cp, oq, cp});  // dWd, in Wd's place
  d.gather(wd, dw);
}

// Weight gradients are summed over the batch: chunks are gathered into fixed groups, each group's
// partial sum is one thread's, and the partials are added in group order.
inline void conv2d_backward_image_parallel(const ConvShape& s, int n, const float* x, const float* dy,
                                           const float* w, float* dw, float* dx) {
  const auto g = s.geometry(n);
  const int plane = s.out_plane(), patch = s.patch(), oc = s.out_channels;
  const std::size_t in_plane = static_cast<std::size_t>(s.height) * s.width;
  const int nb = conv_chunk(s, n), chunks = (n + nb - 1) / nb, groups = std::min(chunks, max_groups);
  const std::size_t col_floats = static_cast<std::size_t>(nb) * plane * patch;
  const std::size_t w_floats = static_cast<std::size_t>(oc) * patch;
  float* cols = scratch(0, col_floats * num_threads());
  float* partials = scratch(1, w_floats * groups);
  const Eigen::Index rows_all = static_cast<Eigen::Index>(n) * plane;
  const ChunkWeights wt_t(MatRef{w, patch, oc, patch}.t(), dx != nullptr);
  CTNN_OMP(parallel for schedule(dynamic, 1))
  for (int gi = 0; gi < groups; ++gi) {
    float* col = cols + col_floats * thread_index();
    const MutMatRef dwp{partials + w_floats * gi, patch, oc, patch};
    for (int i = gi * chunks / groups; i < (gi + 1) * chunks / groups; ++i) {
      const int n0 = i * nb, cnt = std::min(nb, n - n0);
      const Eigen::Index rows = static_cast<Eigen::Index>(cnt) * plane;
      const MatRef dym{dy + static_cast<std::size_t>(n0) * plane, rows, oc, rows_all};
      im2col(x, g, n0, cnt, col, /*threaded=*/false);
      gemm_serial(MatRef{col, rows, patch, rows}.t(), dym, dwp, /*accumulate=*/i != gi * chunks / groups);
      if (dx) {
        for (int c = 0; c < s.in_channels; ++c)
          std::fill_n(dx + c * g.in_channel_stride() + static_cast<std::size_t>(n0) * in_plane,
                      static_cast<std::size_t>(cnt) * in_plane, 0.0f);
        wt_t.multiply(dym, {col, rows, patch, rows});
        col2im_add(col, g, n0, cnt, dx, /*threaded=*/false);
      }
    }
  }
  add_group_partials(partials, groups, w_floats, dw);
}
}  // namespace detail

// conv2d_forward: y = map(conv(x, w)) for a batch of n samples, map (ops/bias.hpp) being the
// bias, a BatchNorm folded in evaluation and a ReLU that follow, applied by each path where the
// values are still in cache or registers (`s.relu` is ignored: the map says); `cache` (unless
// null) keeps the weights' transforms (Winograd's, the whole-plane matrix) for the next call
// with the same weights (ops/weight_cache.hpp). w is PyTorch's
// [Cout][Cin][K][K], used as the (Cin*K*K x Cout) column-major matrix it already is.
// conv2d_backward: adds the weight and bias gradients of the last forward on x into dw and db,
// and overwrites dx (unless null) with the input gradient.
// Both are declared only where CTNN_SEPARATE_KERNELS asks for it (ops/linkage.hpp).
#if CTNN_KERNELS_DECLARED_ONLY
void conv2d_forward(const ConvShape& s, int n, const float* x, const float* w, const ChannelMap& map, float* y,
                    WeightCache* cache = nullptr);
void conv2d_backward(const ConvShape& s, int n, const float* x, const float* dy, const float* w, float* dw, float* db,
                     float* dx);
#else
CTNN_KERNEL void conv2d_forward(const ConvShape& shape, int n, const float* x, const float* w, const ChannelMap& map,
                                float* y, WeightCache* cache = nullptr) {
  ConvShape s = shape;
  s.relu = map.relu;
  const int plane = s.out_plane(), patch = s.patch(), oc = s.out_channels;
  const Eigen::Index rows_all = static_cast<Eigen::Index>(n) * plane;
  const float* const b = map.bias;
  // Paths that add a bias and apply a ReLU themselves but fold no BatchNorm: under a scale, the
  // product alone, then the map in one pass (the pass that BatchNorm's own would have been).
  const bool native = !map.scale;
  if (!native) s.relu = false;
  const auto rest = [&] {
    if (!native) map_channels(y, map, oc, static_cast<std::size_t>(rows_all), static_cast<std::size_t>(rows_all));
  };
  if (s.whole_plane()) return detail::conv2d_whole_plane_forward(s, n, x, w, map, y, cache);
  if (const auto wg = detail::winograd_now(s, n); wg.tile) {
    winograd_forward(wg, x, w, native ? b : nullptr, y, cache);
    return rest();
  }
  if (matmul_precision() == Precision::bf16 && !s.pointwise() && bf16_direct_conv(s.geometry(n))) {
    conv_bf16_direct(x, s.geometry(n), w, /*flipped=*/false, oc, native ? b : nullptr, y, s.relu);
    return rest();
  }
  if (matmul_precision() == Precision::bf16 && !s.pointwise() && bf16_fuses_im2col(s.geometry(n)))
    return detail::conv2d_forward_patches(s, n, x, w, map, y);
  if (s.image_parallel()) return detail::conv2d_forward_image_parallel(s, n, x, w, map, y);
  const MatRef wt{w, patch, oc, patch};
  if (s.pointwise()) return gemm_mapped({x, rows_all, s.in_channels, rows_all}, wt, {y, rows_all, oc, rows_all}, map);
  const auto g = s.geometry(n);
  const int nb = detail::conv_chunk(s, n);
  float* col = scratch(0, static_cast<std::size_t>(nb) * plane * patch);
  const detail::ChunkWeights wts(wt);  // under bf16 rounded once for every chunk
  for (int n0 = 0; n0 < n; n0 += nb) {
    const int cnt = std::min(nb, n - n0);
    const Eigen::Index rows = static_cast<Eigen::Index>(cnt) * plane;
    im2col(x, g, n0, cnt, col);
    wts.multiply_team({col, rows, patch, rows}, {y + static_cast<std::size_t>(n0) * plane, rows, oc, rows_all});
  }
  map_channels(y, map, oc, static_cast<std::size_t>(rows_all), static_cast<std::size_t>(rows_all));
}

CTNN_KERNEL void conv2d_backward(const ConvShape& s, int n, const float* x, const float* dy, const float* w, float* dw,
                            float* db, float* dx) {
  const int plane = s.out_plane(), patch = s.patch(), oc = s.out_channels;
  const Eigen::Index rows_all = static_cast<Eigen::Index>(n) * plane;
  const MatRef wt{w, patch, oc, patch};
  const MutMatRef dwt{dw, patch, oc, patch};
  add_channel_sums(dy, oc, static_cast<std::size_t>(rows_all), db);
  if (s.whole_plane()) return detail::conv2d_whole_plane_backward(s, n, x, dy, w, dw, dx);
  if (detail::bf16_backward_fused(s, n)) {
    if (bf16_direct_weight_grad(s.geometry(n), oc)) conv_bf16_weight_grad(x, s.geometry(n), dy, oc, dw);
    else gemm_bf16_patches_t(x, s.geometry(n), 0, {dy, rows_all, oc, rows_all}, dw, patch, /*accumulate=*/true);
    if (dx) detail::conv2d_backward_data_transposed(s, n, dy, w, dx);
    return;
  }
  if (const auto wg = detail::winograd_now(s, n); wg.tile) {
    winograd_backward_weights(wg, x, dy, dw);
    if (dx) winograd_backward_data(wg, dy, w, dx);
  } else if (s.pointwise()) {
    const MatRef xm{x, rows_all, s.in_channels, rows_all};
    const MatRef dym{dy, rows_all, oc, rows_all};
    gemm(xm.t(), dym, dwt, /*accumulate=*/true);
    if (dx) gemm(dym, wt.t(), {dx, rows_all, s.in_channels, rows_all});
  } else if (s.image_parallel()) {
    detail::conv2d_backward_image_parallel(s, n, x, dy, w, dw, dx);
  } else {
    const auto g = s.geometry(n);
    const int nb = detail::conv_chunk(s, n);
    float* col = scratch(0, static_cast<std::size_t>(nb) * plane * patch);
    if (dx) std::fill_n(dx, static_cast<std::size_t>(s.in_channels) * g.in_channel_stride(), 0.0f);
    const detail::ChunkWeights wt_t(wt.t(), dx != nullptr);  // under bf16 rounded once for every chunk
    for (int n0 = 0; n0 < n; n0 += nb) {
      const int cnt = std::min(nb, n - n0);
      const Eigen::Index rows = static_cast<Eigen::Index>(cnt) * plane;
      const MatRef dym{dy + static_cast<std::size_t>(n0) * plane, rows, oc, rows_all};
      im2col(x, g, n0, cnt, col);
      gemm(MatRef{col, rows, patch, rows}.t(), dym, dwt, /*accumulate=*/true);
      if (dx) {
        // The patch matrix is no longer needed: reuse it for its own gradient.
        wt_t.multiply_team(dym, {col, rows, patch, rows});
        col2im_add(col, g, n0, cnt, dx);
      }
    }
  }
}

#endif  // CTNN_KERNELS_DECLARED_ONLY

// y = conv(x, w) + b (b may be null), then relu() with `s.relu`.
inline void conv2d_forward(const ConvShape& s, int n, const float* x, const float* w, const float* b, float* y) {
  conv2d_forward(s, n, x, w, ChannelMap{b, nullptr, nullptr, s.relu}, y);
}

}  // namespace ctnn::ops
