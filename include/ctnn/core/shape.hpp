// Compile-time shapes of one sample (channels, height, width).
#pragma once

#include <cstddef>

namespace ctnn {

// The shape of one sample. Every layer's input and output shape is a Shape type,
// so sizes are constants the compiler can check and the kernels can unroll on.
template <int C, int H, int W>
struct Shape {
  static_assert(C > 0 && H > 0 && W > 0, "ctnn::Shape: every extent must be positive");
  static constexpr int channels = C;
  static constexpr int height = H;
  static constexpr int width = W;
  static constexpr int plane = H * W;          // values per channel of one sample
  static constexpr int size = C * H * W;       // values per sample
};

// A flat feature vector, as Linear and BatchNorm1d see it.
template <int F>
using Features = Shape<F, 1, 1>;

// PyTorch's output extent for a window op (floor division, as nn.Conv2d / nn.MaxPool2d).
// At least 1: where the window does not fit, the layer's own static_assert says so, and the
// layers after it still bind to a valid shape instead of adding errors about negative extents.
constexpr int window_out(int in, int kernel, int stride, int padding) {
  const int out = (in + 2 * padding - kernel) / stride + 1;
  return out > 0 ? out : 1;
}

namespace detail {
// Instantiated only to fail: the compiler prints the template arguments, so the two
// sizes appear in the error next to the static_assert's sentence.
template <int Expected, int Got>
struct sizes_agree {
  static constexpr bool value = Expected == Got;
};
}  // namespace detail

}  // namespace ctnn
