// The matrix operands of ctnn's products (ops/gemm.hpp, ops/bf16.hpp): views of column-major
// float arrays, as the layers' buffers already are, so that no product copies its inputs; and
// how a product is cut into blocks for threads.
#pragma once

#include <Eigen/Core>

#include <algorithm>

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
// same code path whatever the threads (on ctnn's own fp32 kernel, whose sums do not depend on
// where blocks start, ops::gemm cuts one block per thread instead). None under ~16M
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

// Where block i of `blocks` starts: i / blocks of the extent rounded to the nearest multiple of
// 16, so every block's length is within 16 of an equal share (and, shares being at least 16
// long, no block is empty).
inline Eigen::Index block_start(Eigen::Index i, Eigen::Index blocks, Eigen::Index extent) {
  return i >= blocks ? extent : std::min(extent, (i * extent / blocks + 8) / 16 * 16);
}
}  // namespace detail

}  // namespace ctnn::ops
