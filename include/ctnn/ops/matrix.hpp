// The matrix operands of ctnn's products (ops/gemm.hpp, ops/bf16.hpp): views of column-major
// float arrays, as the layers' buffers already are, so that no product copies its inputs.
#pragma once

#include <Eigen/Core>

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

}  // namespace ctnn::ops
