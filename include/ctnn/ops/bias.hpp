// The bias of Conv2d and Linear on channel-major outputs: adding it, and its gradient.
#pragma once

#include <Eigen/Core>

#include <cstddef>

#include "ctnn/core/threading.hpp"
#include "ctnn/ops/elementwise.hpp"

namespace ctnn::ops {

// What a layer's forward does to each output channel's values after its product, in one pass
// or while they are in registers: v + bias[c], then v * scale[c] + shift[c] (a BatchNorm in
// evaluation that follows, folded in: BatchNormLayer::eval_map), then relu(v) (a ReLU that
// follows). Each part is optional; a null bias adds nothing (adding 0 would turn -0 into +0).
// scale and shift are BatchNorm's alpha and beta, applied as its own pass applies them, so the
// fold gives the bits of the separate passes.
struct ChannelMap {
  const float* bias = nullptr;
  const float* scale = nullptr;  // with shift
  const float* shift = nullptr;
  bool relu = false;

  bool empty() const { return !bias && !scale && !relu; }
  // The map of channels [c0, ...): for a product cut into blocks of columns.
  ChannelMap from(std::ptrdiff_t c0) const {
    return {bias ? bias + c0 : nullptr, scale ? scale + c0 : nullptr, shift ? shift + c0 : nullptr, relu};
  }
  float apply(float v, std::ptrdiff_t c) const {
    if (bias) v += bias[c];
    // Eigen's scalar pmadd is fmaf where its packets use FMA instructions: the same bits as a
    // packet's lanes (sgemm's epilogue) and as BatchNorm's pass, which the compiler contracts.
    if (scale) v = Eigen::internal::pmadd(v, scale[c], shift[c]);
    return relu ? ops::relu(v) : v;
  }
};

namespace detail {
// One channel's run of a ChannelMap, its parts chosen at compile time so that the loop vectorises.
template <bool Bias, bool Scale, bool Relu>
inline void map_run(float* p, std::size_t rows, float b, float s, float t) {
  for (std::size_t r = 0; r < rows; ++r) {
    float v = p[r];
    if constexpr (Bias) v += b;
    if constexpr (Scale) v = Eigen::internal::pmadd(v, s, t);
    if constexpr (Relu) v = ops::relu(v);
    p[r] = v;
  }
}
}  // namespace detail

// y[c * stride + r] = map(y[c * stride + r]) for every channel c < channels and row r < rows.
inline void map_channels(float* y, const ChannelMap& map, int channels, std::size_t rows, std::size_t stride,
                         [[maybe_unused]] bool threaded = true) {
  if (map.empty()) return;
  using Run = void (*)(float*, std::size_t, float, float, float);
  static constexpr Run runs[8] = {nullptr,
                                  detail::map_run<false, false, true>,
                                  detail::map_run<false, true, false>,
                                  detail::map_run<false, true, true>,
                                  detail::map_run<true, false, false>,
                                  detail::map_run<true, false, true>,
                                  detail::map_run<true, true, false>,
                                  detail::map_run<true, true, true>};
  const Run run = runs[(map.bias ? 4 : 0) + (map.scale ? 2 : 0) + (map.relu ? 1 : 0)];
  CTNN_OMP(parallel for schedule(static) if (threaded && channels * rows > kThreadedWork))
  for (int c = 0; c < channels; ++c)
    run(y + c * stride, rows, map.bias ? map.bias[c] : 0.0f, map.scale ? map.scale[c] : 1.0f,
        map.scale ? map.shift[c] : 0.0f);
}

// y[c * stride + r] += b[c] (b may be null), then relu() with `relu` (a layer followed by ReLU:
// see ReLULayer::adopt).
inline void add_bias(float* y, const float* b, int channels, std::size_t rows, std::size_t stride,
                     bool threaded = true, bool relu = false) {
  map_channels(y, {b, nullptr, nullptr, relu}, channels, rows, stride, threaded);
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
