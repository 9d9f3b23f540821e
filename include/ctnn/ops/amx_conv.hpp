// A direct bf16 convolution on AMX tiles for stride-1 layers: no patch matrix and no packing of
// patches at all.
//
// The input is rounded once into pairs of channels laid out as a grid whose padding is shared:
// rows of W pixels each followed by `pad` zeros (the right padding of one row is the left
// padding of the next), images of H such rows followed by `pad` rows of zeros (the bottom
// padding of one image is the top padding of the next): [channel pair][grid position] 32-bit
// words, each the bf16 values of channels 2p (low half) and 2p+1. Output position q of the grid
// (image q / S, row and column of q % S in rows R = W + pad wide, S = (H + pad) * R) reads, at
// kernel offset (ky, kx), the word at q + ky*R + kx of each pair's plane: for 16 consecutive
// positions and 16 channel pairs that is one tile load (16 rows of 64 contiguous bytes, the pair
// planes' stride apart), already the pair layout TDPBF16PS takes as its right-hand operand. The
// weights are packed once per pass as left-hand tiles (16 output channels x 32 input channels of
// one kernel offset). A 32 x 32 block (output channels x positions) lives in four tiles for the
// whole sum over channels and kernel offsets, then goes through a small buffer to the output
// planes: only the positions inside the output plane (the grid's padding columns and rows are
// computed and dropped; a block may span two images).
//
// The products are those of the patch-matrix path (operands rounded to bf16, fp32 sums), summed
// in another order: per 32 input channels of one kernel offset. The grid's padding positions
// cost multiply-adds: (Ho*Wo) / ((H+pad)*(W+pad)) of the work is kept, 94 % for 32x32 planes
// with padding 1, 79 % for 8x8, 64 % for 4x4 (a grid padded on both sides kept 89 %, 64 %, 44 %).
// Measured against packing patches (the fused im2col of bf16.hpp), one thread, forward +
// backward, min of 4 alternating runs on the Intel Xeon with AMX, with the grid padded on both
// sides: 1.2-2.7x faster at VGG16's 32x32 to 8x8 layers and ResNet's 7x7 and 4x4 ones,
// 1.02-1.1x at the 4x4 ones with 512 channels (their forward alone was 1.1-1.25x slower: the
// weights stream from L3 once per 256 positions).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ctnn/core/threading.hpp"
#include "ctnn/ops/bf16.hpp"

namespace ctnn::ops {

#if CTNN_HAVE_BF16_KERNEL
// GCC 12's false -Wmaybe-uninitialized in AVX-512 intrinsics: see ops/bf16.hpp.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
namespace detail::amx {

// The four sum tiles (0-3) from or to four 16 x 16 blocks of floats, 256 floats apart.
CTNN_AMX_TARGET inline void load_sums(const float* c) {
  _tile_loadd(0, c, 64);
  _tile_loadd(1, c + 256, 64);
  _tile_loadd(2, c + 512, 64);
  _tile_loadd(3, c + 768, 64);
}
CTNN_AMX_TARGET inline void store_sums(float* c) {
  _tile_stored(0, c, 64);
  _tile_stored(1, c + 256, 64);
  _tile_stored(2, c + 512, 64);
  _tile_stored(3, c + 768, 64);
  memory_barrier();
}

struct DirectConv {
  int cin, pairs;  // input channels, and channel pairs rounded up to a multiple of 16
  int n, h, w, k, pad, ho, wo;
  int cout, groups;  // output channels, and groups of 16 rounded up to an even number
  long r, s;         // the grid's row and image strides, in positions
  long base;         // where input pixel (0, 0) of image 0 lies in a pair's plane
  long positions;    // grid positions up to the last image's last output pixel
  long plane;        // words of one pair's plane: every position a block of 32 reads
  std::size_t input_words() const { return static_cast<std::size_t>(pairs) * plane; }
  std::size_t weight_words() const { return static_cast<std::size_t>(groups) * (pairs / 16) * k * k * 256; }
};

inline DirectConv direct_conv(const ConvGeometry& g, int cout) {
  DirectConv d{};
  d.cin = g.in_channels;
  d.pairs = (g.in_channels + 31) / 32 * 16;
  d.n = g.batch, d.h = g.height, d.w = g.width, d.k = g.kernel, d.pad = g.padding;
  d.ho = g.out_height, d.wo = g.out_width;
  d.cout = cout;
  d.groups = (cout + 31) / 32 * 2;
  d.r = d.w + d.pad;
  d.s = static_cast<long>(d.h + d.pad) * d.r;
  d.base = d.pad * d.r + d.pad;
  d.positions = static_cast<long>(d.n - 1) * d.s + static_cast<long>(d.ho - 1) * d.r + d.wo;
  const long read = (d.positions + 31) / 32 * 32 + (d.k - 1) * (d.r + 1);
  d.plane = (std::max(read, d.base + d.n * d.s) + 15) / 16 * 16;
  return d;
}

// Channels 2p and 2p+1 of x ([channel][image][row][column] floats) into pair p's plane: zeros,
// then each image's rows of w pixels, each followed by `pad` zeros, and `pad` rows of zeros
// after each image, then zeros to the plane's end.
CTNN_AMX_TARGET inline void direct_input_pair(const float* x, const DirectConv& d, int p, std::uint32_t* out) {
  const std::size_t cs = static_cast<std::size_t>(d.n) * d.h * d.w;
  const int c0 = 2 * p, c1 = 2 * p + 1;
  std::uint32_t* plane = out + p * d.plane;
  if (c0 >= d.cin) {
    std::fill_n(plane, d.plane, 0u);
    return;
  }
  std::fill_n(plane, d.base, 0u);
  const float* r0 = x + c0 * cs;
  const float* r1 = c1 < d.cin ? r0 + cs : nullptr;
  for (int i = 0; i < d.n; ++i) {
    std::uint32_t* image = plane + d.base + i * d.s;
    for (int y = 0; y < d.h; ++y, r0 += d.w, r1 = r1 ? r1 + d.w : nullptr) {
      std::uint32_t* row = image + y * d.r;
      for (int x0 = 0; x0 < d.w; x0 += 16) {
        const __mmask16 m = bf16::first_lanes(d.w - x0);
        const __m512 lo = _mm512_maskz_loadu_ps(m, r0 + x0);
        const __m512 hi = r1 ? _mm512_maskz_loadu_ps(m, r1 + x0) : _mm512_setzero_ps();
        _mm512_mask_storeu_epi32(row + x0, m, bf16::round_pairs(lo, hi));
      }
      std::fill_n(row + d.w, d.pad, 0u);
    }
    std::fill_n(image + d.h * d.r, d.s - d.h * d.r, 0u);
  }
  std::fill_n(plane + d.base + d.n * d.s, d.plane - d.base - d.n * d.s, 0u);
}

// All of x into the pair planes, with the calling team of threads when there is one. The
// parallel loops of this file only call functions compiled for AMX: an OpenMP region's outlined
// body does not inherit the target attribute under clang, and could then not hold the
// instructions themselves.
inline void direct_input(const float* x, const DirectConv& d, std::uint32_t* out) {
  CTNN_OMP(parallel for schedule(static))
  for (int p = 0; p < d.pairs; ++p) direct_input_pair(x, d, p, out);
}

// The weights as left-hand tiles: [group of 16 outputs][16 input pairs][kernel offset][16 rows of
// 32 bf16 inputs]. w is [out][in][k][k]; with `flipped` it is the [in][out][k][k] weight of the
// convolution whose input gradient this is, read at kernel offset k*k-1-t. This: group gi.
CTNN_AMX_TARGET inline void direct_weight_group(const float* w, bool flipped, const DirectConv& d, int gi,
                                                std::uint32_t* out) {
  const int kk = d.k * d.k, blocks = d.pairs / 16;
  // Element (o, c, t) of the weight this convolution multiplies by.
  const long o_step = flipped ? kk : static_cast<long>(d.cin) * kk, c_step = flipped ? static_cast<long>(d.cout) * kk : kk;
  const __m512i lanes = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32(static_cast<int>(c_step)));
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < kk; ++t) {
      std::uint32_t* tile = out + ((static_cast<std::size_t>(gi) * blocks + b) * kk + t) * 256;
      const int tap = flipped ? kk - 1 - t : t;
      for (int r = 0; r < 16; ++r) {
        const int o = gi * 16 + r;
        __m512 half[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
        if (o < d.cout)
          for (int h = 0; h < 2; ++h) {
            const int c = b * 32 + 16 * h;
            const __mmask16 m = bf16::first_lanes(d.cin - c);
            half[h] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, lanes, w + o * o_step + c * c_step + tap, 4);
          }
        _mm512_storeu_si512(tile + 16 * r, bf16::round32(half[0], half[1]));
      }
    }
}

inline void direct_weights(const float* w, bool flipped, const DirectConv& d, std::uint32_t* out) {
  CTNN_OMP(parallel for schedule(static))
  for (int gi = 0; gi < d.groups; ++gi) direct_weight_group(w, flipped, d, gi, out);
}

// Positions [q0, q0 + 32) for output groups 2*pair, 2*pair+1: four tiles over every input pair
// block and kernel offset, stored to `block` ([tile][16 rows][16 floats]). Needs the tile
// configuration loaded.
CTNN_AMX_TARGET inline void direct_block(const DirectConv& d, const std::uint32_t* xin, const std::uint32_t* wt, long q0,
                                         int pair, float* block) {
  const int kk = d.k * d.k, blocks = d.pairs / 16;
  const long stride = d.plane * 4;
  const std::uint32_t* w0 = wt + static_cast<std::size_t>(2 * pair) * blocks * kk * 256;
  const std::uint32_t* w1 = w0 + static_cast<std::size_t>(blocks) * kk * 256;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int b = 0; b < blocks; ++b) {
    const std::uint32_t* in = xin + static_cast<std::size_t>(b) * 16 * d.plane + q0;
    for (int ky = 0; ky < d.k; ++ky)
      for (int kx = 0; kx < d.k; ++kx, w0 += 256, w1 += 256) {
        const std::uint32_t* src = in + ky * d.r + kx;
        tile_products(w0, w1, 64, src, src + 16, stride);
      }
  }
  store_sums(block);
}

// Positions [q0, q0 + Lanes) of a shared-padding grid (DirectConv, WeightGradConv) as runs that
// lie in one output row and one 16-lane half: lanes [lane, lane + lanes) are the dense output
// offsets from `at` (image, row, column of the run's first lane) on.
template <int Lanes>
struct GridRuns {
  struct Run {
    long at;
    int lane, lanes;
  } run[Lanes];
  int count = 0;
  GridRuns() = default;
  // Two divisions for q0, then steps along the grid: a run, the rest of a row's padding columns,
  // or the rest of an image's padding rows at a time (a division per position cost as much as
  // moving the values, and DyRuns makes them on one thread).
  template <class Grid>
  GridRuns(const Grid& d, long q0) {
    long i = q0 / d.s;
    const long local = q0 % d.s;
    int oy = static_cast<int>(local / d.r), ox = static_cast<int>(local % d.r);
    for (int j = 0; j < Lanes && i < d.n;) {
      if (oy >= d.ho) {  // padding rows: on to the next image
        j += static_cast<int>(d.s - (static_cast<long>(oy) * d.r + ox));
        ++i, oy = 0, ox = 0;
      } else if (ox >= d.wo) {  // padding columns: on to the next row
        j += static_cast<int>(d.r - ox);
        ++oy, ox = 0;
      } else {
        const int lanes = std::min(16 - j % 16, d.wo - ox);
        run[count++] = {(i * d.ho + oy) * d.wo + ox, j, lanes};
        j += lanes, ox += lanes;
      }
    }
  }
};

// Task t (blocks [8t, 8t+8) of 32 positions) for every pair of output groups, the outputs added
// to the bias (then ReLU'd, with `relu`) and stored while in L1. Where the task's 16-position halves lie in the output
// planes is worked out once, not once per pair of groups. Needs the tile configuration loaded.
CTNN_AMX_TARGET inline void direct_task(const DirectConv& d, const std::uint32_t* xin, const std::uint32_t* wt,
                                        const float* bias, bool relu, float* y, long t) {
  const long blocks = (d.positions + 31) / 32, out_plane = static_cast<long>(d.n) * d.ho * d.wo;
  const long b0 = 8 * t, b1 = std::min(blocks, 8 * t + 8);
  alignas(64) float block[4 * 256];
  GridRuns<16> where[16];  // [block - b0][half]: on the stack, no allocation per task
  for (long bi = b0; bi < b1; ++bi)
    for (int half = 0; half < 2; ++half) where[2 * (bi - b0) + half] = GridRuns<16>(d, 32 * bi + 16 * half);
  for (int pair = 0; pair < d.groups / 2; ++pair)
    for (long bi = b0; bi < b1; ++bi) {
      const long q0 = 32 * bi;
      direct_block(d, xin, wt, q0, pair, block);
      for (int half = 0; half < 2; ++half) {
        const GridRuns<16>& runs = where[2 * (bi - b0) + half];
        for (int r = 0; r < 32 && pair * 32 + r < d.cout; ++r) {
          const int o = pair * 32 + r;
          __m512 v = _mm512_add_ps(_mm512_load_ps(block + (r / 16 * 2 + half) * 256 + (r % 16) * 16),
                                   _mm512_set1_ps(bias ? bias[o] : 0.0f));
          // ops::relu: lanes below zero become 0; NaN and -0 compare false and pass.
          if (relu) v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_setzero_ps());
          for (int u = 0; u < runs.count; ++u) {
            const auto& run = runs.run[u];
            const __mmask16 m = static_cast<__mmask16>(((1u << run.lanes) - 1) << run.lane);
            _mm512_mask_storeu_ps(y + (o * out_plane + run.at - run.lane), m, v);
          }
        }
      }
    }
}

CTNN_AMX_TARGET inline void release_tiles() { _tile_release(); }

// The whole convolution from the packed input and weights: tasks of 8 blocks (256 positions) by
// every pair of output groups, so that a task's inputs stay in L2 while the weights stream
// through once per task.
inline void direct_run(const DirectConv& d, const std::uint32_t* xin, const std::uint32_t* wt, const float* bias,
                       bool relu, float* y) {
  const long tasks = ((d.positions + 31) / 32 + 7) / 8;
  CTNN_OMP(parallel)
  {
    load_tile_config();
    CTNN_OMP(for schedule(dynamic, 1))
    for (long t = 0; t < tasks; ++t) direct_task(d, xin, wt, bias, relu, y, t);
    release_tiles();
  }
}

// The weight gradient of a stride-1 convolution, dw[o][c][ky][kx] += sum over positions of
// dy[o][q] * x[c][q + (ky, kx)], on tiles without a patch matrix: the positions are the k of
// TDPBF16PS. x is rounded once into bf16 planes laid out as a grid of rows `r` = W + pad wide and
// images `s` = (H + pad) rows tall whose padding columns and rows are shared (the right padding
// of one row is the left padding of the next): output position q (image, row, column of that
// grid) reads x at q + ky*r + kx, so 16 channels x 32 positions at one kernel offset is one tile
// load as x lies (its rows a plane apart). dy is rounded into pairs of positions
// ([position pair][output channel] words, zero at grid positions outside the output plane and in
// 32 positions before and after the grid), the right-hand layout TDPBF16PS takes. Every tile
// load is 64-byte aligned (a row split across two cache lines loaded 3-6x slower from L1 on the
// Xeon with AMX): a kernel offset s walks the positions in blocks that start at -s (mod 32)
// rather than at 0, which moves dy's pair rows by whole rows, and odd offsets read a second copy
// of x shifted by one position. An item (32 input channels, 32 output channels, one kernel
// offset) keeps its four tiles over a sub-chunk of 256 positions and its sums in memory between
// them (weight_grad_chunks); each item belongs to one thread throughout, so no chunk needs a
// barrier and the sums do not depend on the thread count.
struct WeightGradConv {
  int cin, cpad, cout, opad, n, h, w, k, pad, ho, wo;
  long r, s;    // grid row and image strides, in positions
  long grid;    // output grid positions, n * s rounded up to 32
  long base;    // where input pixel (0, 0) of image 0 lies in a channel's plane
  long xplane;  // halfwords of one channel's plane (x and, cpad planes on, x shifted by one)
  long chunk;   // positions per chunk
  int items() const { return cpad / 32 * (opad / 32) * k * k; }
  std::size_t x_halfwords() const { return static_cast<std::size_t>(2 * cpad) * xplane; }
  std::size_t dy_words() const { return static_cast<std::size_t>(grid / 2 + 32) * opad; }
};

inline WeightGradConv weight_grad_conv(const ConvGeometry& g, int cout) {
  WeightGradConv d{};
  d.cin = g.in_channels, d.cpad = (g.in_channels + 31) / 32 * 32;
  d.cout = cout, d.opad = (cout + 31) / 32 * 32;
  d.n = g.batch, d.h = g.height, d.w = g.width, d.k = g.kernel, d.pad = g.padding;
  d.ho = g.out_height, d.wo = g.out_width;
  d.r = d.w + d.pad;
  d.s = static_cast<long>(d.h + d.pad) * d.r;
  d.grid = (d.n * d.s + 31) / 32 * 32;
  d.base = d.pad * d.r + d.pad;
  d.xplane = (d.grid + 32 + (d.k - 1) * (d.r + 1) + 31) / 32 * 32;
  // About 1 MiB of x and dy per chunk, whole blocks of 32 positions.
  d.chunk = std::max<long>(256, (std::size_t{1} << 20) / (2 * static_cast<std::size_t>(d.cpad + d.opad)) / 32 * 32);
  return d;
}

// Channel c of x ([channel][image][row][column]) into its bf16 plane, and the same plane shifted
// by one position into plane cpad + c (what odd kernel offsets read).
CTNN_AMX_TARGET inline void weight_grad_input_channel(const float* x, const WeightGradConv& d, int c, std::uint16_t* out) {
  std::uint16_t* plane = out + c * d.xplane;
  if (c >= d.cin) {
    std::fill_n(plane, d.xplane, std::uint16_t{0});
    std::fill_n(plane + static_cast<std::size_t>(d.cpad) * d.xplane, d.xplane, std::uint16_t{0});
    return;
  }
  std::fill_n(plane, d.base, std::uint16_t{0});
  const float* from = x + static_cast<std::size_t>(c) * d.n * d.h * d.w;
  for (int i = 0; i < d.n; ++i) {
    std::uint16_t* image = plane + d.base + i * d.s;
    for (int y = 0; y < d.h; ++y, from += d.w) {
      std::uint16_t* row = image + y * d.r;
      for (int x0 = 0; x0 < d.w; x0 += 32) {
        const __m512i v = bf16::round32(_mm512_maskz_loadu_ps(bf16::first_lanes(d.w - x0), from + x0),
                                        _mm512_maskz_loadu_ps(bf16::first_lanes(d.w - x0 - 16), from + x0 + 16));
        const int left = std::min(32, d.w - x0);
        _mm512_mask_storeu_epi16(row + x0, left == 32 ? ~__mmask32{0} : (__mmask32{1} << left) - 1, v);
      }
      std::fill_n(row + d.w, d.pad, std::uint16_t{0});
    }
    std::fill_n(image + d.h * d.r, d.s - d.h * d.r, std::uint16_t{0});
  }
  std::fill_n(plane + d.base + d.n * d.s, d.xplane - d.base - d.n * d.s, std::uint16_t{0});
  std::uint16_t* odd = plane + static_cast<std::size_t>(d.cpad) * d.xplane;
  std::copy(plane + 1, plane + d.xplane, odd);
  odd[d.xplane - 1] = 0;
}

// Where each block of 32 grid positions of dy lies in the output planes: the runs of GridRuns<32>
// for block b are run[first[b]] to run[first[b + 1] - 1]. Worked out once per call, not once per
// 16 output channels (the divisions cost as much as moving the values).
struct DyRuns {
  std::vector<GridRuns<32>::Run> run;
  std::vector<int> first;
  explicit DyRuns(const WeightGradConv& d) {
    const long blocks = d.grid / 32;
    first.reserve(static_cast<std::size_t>(blocks) + 1);
    run.reserve(static_cast<std::size_t>(blocks) * 3);
    for (long b = 0; b < blocks; ++b) {
      first.push_back(static_cast<int>(run.size()));
      const GridRuns<32> runs(d, 32 * b);
      run.insert(run.end(), runs.run, runs.run + runs.count);
    }
    first.push_back(static_cast<int>(run.size()));
  }
};

// Grid positions [q0, q1) of dy for output channels [o0, o0 + 16), as 16 channels of each pair
// of positions. Sixteen channels at a time, so that the hardware prefetcher follows 16 streams
// of dy rather than all of them.
CTNN_AMX_TARGET inline void weight_grad_dy_span(const float* dy, const WeightGradConv& d, const DyRuns& runs, int o0,
                                                long q0, long q1, std::uint32_t* out) {
  const std::size_t plane = static_cast<std::size_t>(d.n) * d.ho * d.wo;
  alignas(64) std::uint32_t block[16][16];
  for (long b = q0; b < q1; b += 32) {
    const int u0 = runs.first[b / 32], u1 = runs.first[b / 32 + 1];
    for (int r = 0; r < 16; ++r) {
      __m512 v[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
      if (o0 + r < d.cout)
        for (int u = u0; u < u1; ++u) {
          const auto& run = runs.run[u];
          const int lane = run.lane % 16;
          const __mmask16 m = static_cast<__mmask16>(((1u << run.lanes) - 1) << lane);
          // Signed: the masked-off lanes before the run may lie before dy (never read).
          const long at = static_cast<long>((o0 + r) * plane) + run.at - lane;
          v[run.lane / 16] = _mm512_mask_loadu_ps(v[run.lane / 16], m, dy + at);
        }
      _mm512_store_si512(block[r], bf16::round32(v[0], v[1]));
    }
    bf16::transpose16(&block[0][0], out + b / 2 * d.opad + o0, d.opad);
  }
}

// Item `item` over positions [q0, q1): its four tiles from `sums` (or zeros on the first chunk),
// back after. Its kernel offset's blocks start `delta` positions earlier, so that x's rows are
// read 64-byte aligned; the last sub-chunk takes one more block to reach the grid's end (dy is
// zero past it). Needs the tile configuration loaded.
CTNN_AMX_TARGET inline void weight_grad_item(const WeightGradConv& d, const std::uint16_t* xg, const std::uint32_t* dg,
                                             int item, long q0, long q1, float* sums) {
  const int kk = d.k * d.k, oblocks = d.opad / 32;
  const int tap = item % kk, ob = item / kk % oblocks, cb = item / kk / oblocks;
  float* c = sums + static_cast<std::size_t>(item) * 1024;
  if (q0 == 0) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  } else {
    load_sums(c);
  }
  const long shift = (tap / d.k) * d.r + tap % d.k, odd = shift & 1, delta = (shift - odd) % 32;
  const long xstride = d.xplane * 2, dstride = static_cast<long>(d.opad) * 4;
  const std::uint16_t* a0 = xg + (odd * d.cpad + cb * 32) * d.xplane + (shift - odd);
  const std::uint16_t* a1 = a0 + 16 * d.xplane;
  const std::uint32_t* b0 = dg + ob * 32;
  const std::uint32_t* b1 = b0 + 16;
  const long end = q1 - delta + (q1 == d.grid && delta ? 32 : 0);
  for (long q = q0 - delta; q < end; q += 32)
    tile_products(a0 + q, a1 + q, xstride, b0 + q / 2 * d.opad, b1 + q / 2 * d.opad, dstride);
  store_sums(c);
}

// Every chunk, in order, of the items this thread takes (the same ones for each chunk: one
// static schedule), with its tiles configured. Within a chunk, the items that share 32 input and
// 32 output channels (the kernel offsets of one block pair) take turns over sub-chunks of 256
// positions, whose 16 KiB of x and 16 KiB of dy stay in L1 across the offsets: each item's sums
// go through memory once per sub-chunk instead of every tile load coming from L2.
CTNN_AMX_TARGET inline void weight_grad_chunks(const WeightGradConv& d, const std::uint16_t* xg, const std::uint32_t* dg,
                                               int item0, int item1, float* sums) {
  load_tile_config();
  const int kk = d.k * d.k;
  constexpr long sub = 256;
  for (long q0 = 0; q0 < d.grid; q0 += d.chunk) {
    const long q1 = std::min(d.grid, q0 + d.chunk);
    for (int g0 = item0 / kk * kk; g0 < item1; g0 += kk)
      for (long p0 = q0; p0 < q1; p0 += sub)
        for (int item = std::max(item0, g0); item < std::min(item1, g0 + kk); ++item)
          weight_grad_item(d, xg, dg, item, p0, std::min(q1, p0 + sub), sums);
  }
  _tile_release();
}

}  // namespace detail::amx
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// Whether conv_bf16_direct takes this convolution: the AMX kernel, stride 1, padding below the
// kernel size, at least 32 input channels (fewer would be mostly zero tile rows: VGG16's first
// layer packs its patches instead).
inline bool bf16_direct_conv(const ConvGeometry& g) {
  return bf16_fuses_im2col(g) && g.in_channels >= 32 && g.padding < g.kernel;
}

// y = conv(x, w) (+ bias) for the batch, in the layout of x (channel-major planes), products in
// bf16 with fp32 sums on AMX tiles (see the top of this file). w is [cout][cin][k][k]; with
// `flipped`, w is the [cin][cout][k][k] weight of a convolution whose input gradient this is (its
// kernels flipped, channels swapped). bias may be null; `relu` applies a following ReLU to the
// output as it is stored. Only where bf16_direct_conv(g).
inline void conv_bf16_direct(const float* x, const ConvGeometry& g, const float* w, bool flipped, int cout,
                             const float* bias, float* y, bool relu = false) {
  if (!bf16_direct_conv(g)) throw std::logic_error("conv_bf16_direct: not for this convolution or kernel");
#if CTNN_HAVE_BF16_KERNEL
  namespace amx = detail::amx;
  const amx::DirectConv d = amx::direct_conv(g, cout);
  std::uint32_t* xin = detail::bf16::panel_buffer(2, d.input_words());
  std::uint32_t* wt = detail::bf16::panel_buffer(3, d.weight_words());
  amx::direct_input(x, d, xin);
  amx::direct_weights(w, flipped, d, wt);
  amx::direct_run(d, xin, wt, bias, relu, y);
#else
  (void)x, (void)w, (void)flipped, (void)cout, (void)bias, (void)y, (void)relu;
#endif
}

// Whether conv_bf16_weight_grad takes this convolution (for `cout` output channels): the AMX
// kernel, stride 1, padding below the kernel size, at least 32 input channels (each tile holds 16
// channels of x: VGG16's first layer, 3 channels, packs its 27 patch rows instead, 9x fewer tile
// products), and output planes of 8x8 and up, or of 4x4 to
// 7x7 where the sums (32-channel blocks x kernel offsets, 4 KiB per item) stay within 1 MiB. On
// smaller planes the shared padding is a large part of the grid, and with more channels the sums
// go to and from L3 for every chunk: packing patches is faster there (at 4x4, 128 channels: 1.4x
// faster than packing; 512: 1.3-2x slower; 2 threads, Xeon model 167).
inline bool bf16_direct_weight_grad(const ConvGeometry& g, int cout) {
  if (!bf16_fuses_im2col(g) || g.padding >= g.kernel || g.in_channels < 32) return false;
  const long side = std::min(g.out_height, g.out_width);
  const long sums = (g.in_channels + 31L) / 32 * 32 * ((cout + 31L) / 32 * 32) * g.kernel * g.kernel;
  return side >= 8 || (side >= 4 && sums <= (1L << 18));
}

// dw ([cout][cin][k][k]) += the weight gradient of the batch's convolution: dy (cout planes of
// the output) times x's patches, products of bf16-rounded operands summed in fp32 on AMX tiles
// (see WeightGradConv above): the products of gemm_bf16_patches_t, summed per 32-channel block
// and kernel offset in chunks of positions. Only where bf16_direct_weight_grad(g, cout).
inline void conv_bf16_weight_grad(const float* x, const ConvGeometry& g, const float* dy, int cout, float* dw) {
  if (!bf16_direct_weight_grad(g, cout))
    throw std::logic_error("conv_bf16_weight_grad: not for this convolution or kernel");
#if CTNN_HAVE_BF16_KERNEL
  namespace amx = detail::amx;
  const amx::WeightGradConv d = amx::weight_grad_conv(g, cout);
  const auto aligned = [](std::uint32_t* p) {
    return reinterpret_cast<std::uint32_t*>((reinterpret_cast<std::uintptr_t>(p) + 63) / 64 * 64);
  };
  auto* xg = reinterpret_cast<std::uint16_t*>(aligned(detail::bf16::panel_buffer(2, d.x_halfwords() / 2 + 16)));
  std::uint32_t* dz = aligned(detail::bf16::panel_buffer(3, d.dy_words() + 16));
  std::uint32_t* dg = dz + 16 * d.opad;
  std::fill_n(dz, 16 * d.opad, 0u);
  std::fill_n(dg + d.grid / 2 * d.opad, 16 * d.opad, 0u);
  float* sums = reinterpret_cast<float*>(detail::bf16::panel_buffer(1, static_cast<std::size_t>(d.items()) * 1024));
  const int items = d.items(), kk = d.k * d.k;
  const amx::DyRuns runs(d);
  CTNN_OMP(parallel)
  {
    CTNN_OMP(for schedule(static) nowait)
    for (int c = 0; c < d.cpad; ++c) amx::weight_grad_input_channel(x, d, c, xg);
    const long spans = (d.grid + 2047) / 2048;  // of 2048 positions, for each 16 output channels
    CTNN_OMP(for schedule(static))
    for (long t = 0; t < d.opad / 16 * spans; ++t)
      amx::weight_grad_dy_span(dy, d, runs, static_cast<int>(t / spans * 16), t % spans * 2048,
                               std::min(d.grid, (t % spans + 1) * 2048), dg);
#ifdef _OPENMP
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
#else
    const int threads = 1, t = 0;  // a program built without OpenMP: one thread takes every item
#endif
    amx::weight_grad_chunks(d, xg, dg, static_cast<int>(static_cast<long>(items) * t / threads),
                            static_cast<int>(static_cast<long>(items) * (t + 1) / threads), sums);
  }
  // Tile (hc, ho) of an item holds [16 input channels][16 output channels].
  const int oblocks = d.opad / 32;
  CTNN_OMP(parallel for schedule(static))
  for (int o = 0; o < cout; ++o)
    for (int c = 0; c < d.cin; ++c)
      for (int t = 0; t < kk; ++t) {
        const int item = (c / 32 * oblocks + o / 32) * kk + t;
        dw[(static_cast<std::size_t>(o) * d.cin + c) * kk + t] +=
            sums[static_cast<std::size_t>(item) * 1024 + (c % 32 / 16 * 2 + o % 32 / 16) * 256 + c % 16 * 16 + o % 16];
      }
#else
  (void)x, (void)dy, (void)cout, (void)dw;
#endif
}

}  // namespace ctnn::ops
