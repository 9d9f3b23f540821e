// Matrix products for the layers: one entry point, deterministic at any thread count.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstddef>

// CTNN_USE_OPENBLAS (the CMake option of the same name, which also defines EIGEN_USE_BLAS so
// Eigen's own products go to the same library): each fixed block below is one single-threaded
// OpenBLAS sgemm instead of an Eigen product. OpenBLAS's AVX-512 kernels run these shapes about
// 1.5x faster than Eigen's; splitting and thread count stay ctnn's, so results are still the same
// for any number of threads.
#ifdef CTNN_USE_OPENBLAS
#ifndef EIGEN_USE_BLAS
#error "CTNN_USE_OPENBLAS needs EIGEN_USE_BLAS (the CMake option sets both)"
#endif
extern "C" void openblas_set_num_threads(int);  // OpenBLAS's own API (cblas.h)
#endif

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
};

struct MutMatRef {
  float* data;
  Eigen::Index rows, cols, ld;
};

namespace detail {

using ConstMap = Eigen::Map<const Eigen::MatrixXf, 0, Eigen::OuterStride<>>;
using MutMap = Eigen::Map<Eigen::MatrixXf, 0, Eigen::OuterStride<>>;

inline ConstMap map(const MatRef& a) { return ConstMap(a.data, a.rows, a.cols, Eigen::OuterStride<>(a.ld)); }

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

#ifdef CTNN_USE_OPENBLAS
// One single-threaded sgemm: C (m x n, leading dimension ldc) = A * B (+ C). OpenBLAS's own
// threads would nest inside ctnn's OpenMP loop, so they are switched off once, up front.
inline void blas_product(float* c, Eigen::Index ldc, const MatRef& a, const MatRef& b, bool accumulate) {
  static const bool single = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)single;
  const int m = static_cast<int>(a.out_rows()), n = static_cast<int>(b.out_cols()),
            k = static_cast<int>(a.out_cols()), lda = static_cast<int>(a.ld),
            ldb = static_cast<int>(b.ld), ldcc = static_cast<int>(ldc);
  const char ta = a.transposed ? 'T' : 'N', tb = b.transposed ? 'T' : 'N';
  const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  sgemm_(&ta, &tb, &m, &n, &k, &one, a.data, &lda, b.data, &ldb, &beta, c, &ldcc);
}
#endif

template <class Dst>
inline void product_into(Dst&& c, const MatRef& a, const MatRef& b, bool accumulate) {
#ifdef CTNN_USE_OPENBLAS
  if (a.out_cols() > 0) return blas_product(c.data(), c.outerStride(), a, b, accumulate);
#endif
  auto ma = map(a);
  auto mb = map(b);
  if (!a.transposed && !b.transposed) {
    if (accumulate) c.noalias() += ma * mb; else c.noalias() = ma * mb;
  } else if (a.transposed && !b.transposed) {
    if (accumulate) c.noalias() += ma.transpose() * mb; else c.noalias() = ma.transpose() * mb;
  } else if (!a.transposed && b.transposed) {
    if (accumulate) c.noalias() += ma * mb.transpose(); else c.noalias() = ma * mb.transpose();
  } else {
    if (accumulate) c.noalias() += ma.transpose() * mb.transpose();
    else c.noalias() = ma.transpose() * mb.transpose();
  }
}

// Block length for splitting an extent of a product with `work` multiply-adds: a function of
// the problem alone (never of the thread count), so every output element is computed by the
// same code path whatever the threads. At most eight blocks, and none under ~16M multiply-adds:
// every block re-packs the operand it shares with the others, so small products stay whole.
inline Eigen::Index block_length(Eigen::Index extent, long work) {
  const long blocks = std::clamp<long>(work >> 24, 1, 8);
  const Eigen::Index target = (extent + blocks - 1) / blocks;
  return std::max<Eigen::Index>(16, (target + 15) / 16 * 16);   // a multiple of 16
}

}  // namespace detail

// C = A * B (or += when `accumulate`) on the calling thread alone: for kernels that already
// run inside ctnn's parallel loop, one chunk of work per thread.
inline void gemm_serial(const MatRef& a, const MatRef& b, const MutMatRef& c, bool accumulate = false) {
  ctnn::detail::eigen_single_threaded();
  eigen_assert(a.out_cols() == b.out_rows() && c.rows == a.out_rows() && c.cols == b.out_cols());
  if (c.rows == 0 || c.cols == 0) return;
  detail::product_into(detail::MutMap(c.data, c.rows, c.cols, Eigen::OuterStride<>(c.ld)), a, b, accumulate);
}

// C = A * B, or C += A * B when `accumulate`. The larger output extent is cut into fixed blocks,
// each a single-threaded Eigen product, shared out over ctnn's OpenMP threads.
inline void gemm(const MatRef& a, const MatRef& b, const MutMatRef& c, bool accumulate = false) {
  ctnn::detail::eigen_single_threaded();
  const Eigen::Index m = a.out_rows(), n = b.out_cols();
  eigen_assert(a.out_cols() == b.out_rows() && c.rows == m && c.cols == n);
  if (m == 0 || n == 0) return;
  const bool split_rows = m >= n;
  const Eigen::Index extent = split_rows ? m : n;
  const long work = static_cast<long>(m) * n * a.out_cols();
  const Eigen::Index len = detail::block_length(extent, work);
  const Eigen::Index blocks = (extent + len - 1) / len;
// Dynamic hand-out: a thread that another process slows down takes fewer blocks, and which
// thread computes a block never changes its result.
#pragma omp parallel for schedule(dynamic, 1) if (blocks > 1)
  for (Eigen::Index i = 0; i < blocks; ++i) {
    const Eigen::Index s = i * len, l = std::min(len, extent - s);
    if (split_rows) {
      detail::MutMap cb(c.data + s, l, n, Eigen::OuterStride<>(c.ld));
      detail::product_into(cb, detail::logical_rows(a, s, l), b, accumulate);
    } else {
      detail::MutMap cb(c.data + s * c.ld, m, l, Eigen::OuterStride<>(c.ld));
      detail::product_into(cb, a, detail::logical_cols(b, s, l), accumulate);
    }
  }
}

}  // namespace ctnn::ops
