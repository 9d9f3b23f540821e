// The bias of Conv2d and Linear on channel-major outputs: adding it, and its gradient.
#pragma once

#include <cstddef>

#include "ctnn/core/threading.hpp"
#include "ctnn/ops/elementwise.hpp"

namespace ctnn::ops {

// y[c * stride + r] += b[c] for every channel c < channels and row r < rows; with `relu`, then
// y = relu(y) in the same pass (a layer followed by ReLU: see ReLULayer::adopt). b may be null
// (nothing is added: adding 0 would turn -0 into +0).
inline void add_bias(float* y, const float* b, int channels, std::size_t rows, std::size_t stride,
                     [[maybe_unused]] bool threaded = true, bool relu = false) {
  if (!b && !relu) return;
  CTNN_OMP(parallel for schedule(static) if (threaded && channels * rows > kThreadedWork))
  for (int c = 0; c < channels; ++c) {
    float* p = y + c * stride;
    if (!relu) {
      const float bc = b[c];
      for (std::size_t r = 0; r < rows; ++r) p[r] += bc;
    } else if (b) {
      const float bc = b[c];
      for (std::size_t r = 0; r < rows; ++r) p[r] = ops::relu(p[r] + bc);
    } else {
      for (std::size_t r = 0; r < rows; ++r) p[r] = ops::relu(p[r]);
    }
  }
}

// Adds the sum of each of `channels` contiguous runs of `stride` floats to out[c], accumulated in
// double as PyTorch's CPU reductions do for float. Bias gradients of Conv2d and Linear.
inline void add_channel_sums(const float* data, int channels, std::size_t stride, float* out) {
  CTNN_OMP(parallel for schedule(static) if (channels * stride > kThreadedWork))
  for (int c = 0; c < channels; ++c) {
    const float* p = data + c * stride;
    double s = 0.0;
    CTNN_OMP(simd reduction(+ : s))
    for (std::size_t i = 0; i < stride; ++i) s += p[i];
    out[c] += static_cast<float>(s);
  }
}

}  // namespace ctnn::ops
