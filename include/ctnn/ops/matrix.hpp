// The matrix operands of ctnn's products (ops/gemm.hpp, ops/bf16.hpp): views of column-major
// float arrays, as the layers' buffers already are, so that no product copies its inputs; and
// how a product is cut into blocks for threads.
#pragma once

#include <Eigen/Core>

#include <algorithm>

#include "ctnn/core/threading.hpp"

namespace ctnn::ops {

// A column-major matrix operand: `rows` x `cols` at `data` with leading dimension `ld`,
// optionally used transposed.
struct MatRef {
  const float* data;
  Eigen::Index rows, cols, ld;
  bool transposed = false;
  MatRef t() const { return {data, rows, cols, ld, !transposed}; }
  Eigen::Index out_rows() const { return transposed ? cols : rows; }
  Eigen::Index out_cols() const { return transposed ? rows : cols; }
  // Element (i, j) of the operand as used (after the transposition).
  float at(Eigen::Index i, Eigen::Index j) const { return transposed ? data[j + i * ld] : data[i + j * ld]; }
};

struct MutMatRef {
  float* data;
  Eigen::Index rows, cols, ld;
};

// A rows x cols matrix that is not stored but read from a table: element (i, k) is
// src[(i / row_group) * row_step + (k / k_group) * k_step + taps[(i % row_group) * tap_row +
// (k % k_group) * tap_k]]. A whole-plane convolution's dense weight (WholePlane, ops/conv2d.hpp)
// is one, as Wd or Wd^T: gemm_gathered (fp32) and gemm_bf16_gathered pack its panels from the
// convolution's weight itself, so Wd is never written.
struct GatheredMatrix {
  static constexpr int kMaxGroup = 81;
  const float* src;
  int row_group, k_group;
  long row_step, k_step;
  const int* taps;
  int tap_row, tap_k;
  Eigen::Index rows, cols;
  float at(Eigen::Index i, Eigen::Index k) const {
    return src[(i / row_group) * row_step + (k / k_group) * k_step +
               taps[(i % row_group) * tap_row + (k % k_group) * tap_k]];
  }
};

// How a product is cut into blocks for ctnn's threads (ops::gemm, ops::gemm_bf16_blocks).
namespace detail {
// A sub-block of an operand's logical (possibly transposed) rows [r0, r0+nr) or columns.
inline MatRef logical_rows(const MatRef& a, Eigen::Index r0, Eigen::Index nr) {
  // Logical row r of a^T is physical column r.
  if (a.transposed) return {a.data + r0 * a.ld, a.rows, nr, a.ld, true};
  return {a.data + r0, nr, a.cols, a.ld, false};
}
inline MatRef logical_cols(const MatRef& a, Eigen::Index c0, Eigen::Index nc) {
  if (a.transposed) return {a.data + c0, nc, a.cols, a.ld, true};
  return {a.data + c0 * a.ld, a.rows, nc, a.ld, false};
}

// How many blocks an extent of a product with `work` multiply-adds is cut into: a function of
// the problem alone (never of the thread count), so every output element is computed by the
// same code path whatever the threads (ctnn's own fp32 kernel and, under bf16, the AVX512_BF16
// and portable kernels, whose sums do not depend on where blocks start, take
// thread_block_count's instead; ops::gemm). None under ~16M
// multiply-adds (every block re-packs the operand it shares with the others, so small products
// stay whole), at most eight, none shorter than 16, and otherwise an even number, so that two or
// four threads get equal shares: five equal blocks on two threads left one thread working on
// the fifth alone (ResNet50_layer4's 1x1 convolutions ran only 1.66x faster on two threads than
// on one).
inline Eigen::Index block_count(Eigen::Index extent, long work) {
  long blocks = std::clamp<long>(work >> 24, 1, 8);
  if (blocks % 2) blocks += blocks > 1;
  return std::clamp<Eigen::Index>(extent / 16, 1, blocks);
}

// The blocks of ops::gemm on ctnn's own fp32 kernel (and the non-AMX bf16 ones), whose every
// element has the same bits wherever the blocks start (test_ops, test_bf16), so that its blocks may
// follow the thread count without the result doing so: one block per thread (none shorter than 16),
// from 2^18 multiply-adds on. Each block packs again the operand it shares with the others, a block
// w rows or columns wide about 1/w of a float per multiply-add, from L3 at ResNet50_layer4's 1x1
// shapes, so more blocks than threads cost time: on Zen 3 (2 threads, ResNet50_layer4 training, 10
// alternating runs of ctnn-bench), at most one block per thread made training 218 -> 239 img/s
// (median; faster in 9 runs of 10). And products under block_count's 16M multiply-adds, which it
// leaves whole, ran 1.5-1.9x faster in two blocks (ResNet's 64- and 128-channel 1x1 layers, the
// classifier). Packing the shared operand once per product instead (session 14: by both threads
// into one buffer, or once per thread) was no faster in runs of calls as layers make them.
inline Eigen::Index thread_block_count(Eigen::Index extent, long work, int threads) {
  if (work < (long{1} << 18)) return 1;
  return std::clamp<Eigen::Index>(extent / 16, 1, std::max(1, threads));
}

// Where block i of `blocks` starts: i / blocks of the extent rounded to the nearest multiple of
// 16, so every block's length is within 16 of an equal share (and, shares being at least 16
// long, no block is empty).
inline Eigen::Index block_start(Eigen::Index i, Eigen::Index blocks, Eigen::Index extent) {
  return i >= blocks ? extent : std::min(extent, (i * extent / blocks + 8) / 16 * 16);
}

// f(start, length) for each of the `blocks` blocks of `extent`, shared out over ctnn's threads
// one at a time as they come free: a thread that another process slows down takes fewer
// blocks, and which thread computes a block never changes its result.
template <class F>
inline void for_each_block(Eigen::Index blocks, Eigen::Index extent, const F& f) {
  CTNN_OMP(parallel for schedule(dynamic, 1) if (blocks > 1))
  for (Eigen::Index i = 0; i < blocks; ++i) {
    const Eigen::Index s = block_start(i, blocks, extent);
    f(s, block_start(i + 1, blocks, extent) - s);
  }
}
}  // namespace detail

}  // namespace ctnn::ops
