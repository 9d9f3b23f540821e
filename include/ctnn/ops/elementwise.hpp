// Element-wise kernels on flat arrays: ReLU, the sum of two branches, a fill. Plain functions, so that
// the ReLU and Residual layers of every shape share one compiled copy (with its OpenMP region).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "ctnn/core/threading.hpp"

namespace ctnn::ops {

// relu(v) as PyTorch computes it: `v < 0 ? 0 : v` rather than max(), so a NaN passes through
// (and -0 stays -0). Also the epilogue of the kernels that fuse a following ReLU (add_bias,
// Winograd's output transform, BatchNorm, the AMX direct convolution's store).
inline float relu(float v) { return v < 0.0f ? 0.0f : v; }

// y = relu(x).
inline void relu_forward(const float* x, float* y, std::size_t n) {
  CTNN_OMP(parallel for simd schedule(static) if (n > kThreadedStream))
  for (std::size_t i = 0; i < n; ++i) y[i] = relu(x[i]);
}

// PyTorch's threshold_backward on the result y: `y <= 0 ? 0 : dy`, so the gradient passes where
// y > 0 and where y is NaN (a NaN from the forward reaches the layers before, as in PyTorch).
// As a mask of bits: the compiler then vectorises it inside BatchNorm's double reductions too
// (written as a choice, GCC left that loop scalar: 4x slower).
inline float relu_grad(float y, float dy) {
  return std::bit_cast<float>(std::bit_cast<std::uint32_t>(dy) & (y <= 0.0f ? 0u : ~0u));
}
inline void relu_backward(const float* y, const float* dy, float* dx, std::size_t n) {
  CTNN_OMP(parallel for simd schedule(static) if (n > kThreadedStream))
  for (std::size_t i = 0; i < n; ++i) dx[i] = relu_grad(y[i], dy[i]);
}

// y = a + b.
inline void add(const float* a, const float* b, float* y, std::size_t n) {
  CTNN_OMP(parallel for simd schedule(static) if (n > kThreadedStream))
  for (std::size_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

// y[0, n) = v, by the threads (a gradient buffer's zero_grad: std::fill_n on one thread left the
// others idle for 3 % of a bf16 training step).
inline void fill(float* y, float v, std::size_t n) {
  CTNN_OMP(parallel for simd schedule(static) if (n > kThreadedStream))
  for (std::size_t i = 0; i < n; ++i) y[i] = v;
}

// y += a.
inline void add_into(float* y, const float* a, std::size_t n) {
  CTNN_OMP(parallel for simd schedule(static) if (n > kThreadedStream))
  for (std::size_t i = 0; i < n; ++i) y[i] += a[i];
}

}  // namespace ctnn::ops
