// MaxPool2d and AvgPool2d, as torch.nn's (floor output size, no ceil_mode).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "ctnn/core/threading.hpp"
#include "ctnn/layers/layer.hpp"
#include "ctnn/ops/pool.hpp"

namespace ctnn {

template <class In, int K, int S, int P>
using PoolOut = Shape<In::channels, window_out(In::height, K, S, P), window_out(In::width, K, S, P)>;

namespace detail {
// As PyTorch 1.13 prints the modules: "MaxPool2d(kernel_size=3, stride=2, padding=0, dilation=1,
// ceil_mode=False)", "AvgPool2d(kernel_size=2, stride=1, padding=0)".
inline std::string pool_type_name(const char* kind, int k, int s, int p, bool max_pool) {
  return std::string(kind) + "(kernel_size=" + std::to_string(k) + ", stride=" + std::to_string(s) +
         ", padding=" + std::to_string(p) + (max_pool ? ", dilation=1, ceil_mode=False)" : ")");
}

// Runs f(q) for every (channel, sample) plane q of an n-sample batch of shape In. In the
// channel-major layout plane q is (channel q / n, sample q % n), at q * In::plane.
template <class In, class F>
inline void for_each_plane(int n, F&& f) {
  const int planes = n * In::channels;
  CTNN_OMP(parallel for schedule(static) if (std::size_t(planes) * In::plane > kThreadedWork))
  for (int q = 0; q < planes; ++q) f(static_cast<std::size_t>(q));
}

// A pooling's backward: each plane q of *dx (unless null) zeroed, then f(q, plane q of dx) adds
// its gradient. The zeroing is the plane's thread's, just before it adds (a fill of the whole
// batch beforehand ran on one thread while the others waited).
template <class In, class F>
inline void pool_backward(int n, Batch<In>* dx, F&& f) {
  if (!dx) return;
  dx->resize(n);
  float* d = dx->data();
  for_each_plane<In>(n, [&](std::size_t q) {
    std::fill_n(d + q * In::plane, In::plane, 0.0f);
    f(q, d + q * In::plane);
  });
}
}  // namespace detail

template <class In, int K, int S, int P>
class MaxPool2dLayer : public LeafLayer<MaxPool2dLayer<In, K, S, P>, In, PoolOut<In, K, S, P>> {
  static_assert(2 * P <= K, "MaxPool2d: padding must be at most half the kernel size (as in PyTorch)");
  static_assert(In::height + 2 * P >= K && In::width + 2 * P >= K,
                "MaxPool2d: the kernel is larger than the padded input");

 public:
  using out_shape = PoolOut<In, K, S, P>;
  static std::string type_name() { return detail::pool_type_name("MaxPool2d", K, S, P, true); }

  const Batch<out_shape>& forward(const Batch<In>& x) {
    const int n = x.batch();
    auto& y = this->y_;
    y.resize(n);
    arg_.resize(y.size());
    detail::for_each_plane<In>(n, [&](std::size_t q) {
      const float* in = x.data() + q * In::plane;
      float* out = y.data() + q * out_shape::plane;
      std::int32_t* arg = arg_.data() + q * out_shape::plane;
      if constexpr (K == 2 && S == 2 && P == 0) {
        ops::max_pool_plane_2x2(in, geometry(), out, arg);
      } else if constexpr (P == 0 && In::width % S == 0) {
        thread_local std::vector<float> row_max;
        thread_local std::vector<std::int32_t> row_arg;
        row_max.resize(In::plane / S);
        row_arg.resize(In::plane / S);
        ops::max_pool_plane_by_rows<K, S>(in, geometry(), out, arg, row_max.data(), row_arg.data());
      } else {
        ops::max_pool_plane(in, geometry(), out, arg);
      }
    });
    return y;
  }

  // For each output value of the last forward, the index within its input plane that it took
  // (PyTorch's return_indices).
  const std::vector<std::int32_t>& indices() const { return arg_; }

  void backward(const Batch<In>& x, const Batch<out_shape>& dy, Batch<In>* dx) {
    detail::pool_backward(x.batch(), dx, [&](std::size_t q, float* dxq) {
      ops::max_pool_plane_backward(dy.data() + q * out_shape::plane, arg_.data() + q * out_shape::plane,
                                   out_shape::plane, dxq);
    });
  }

 private:
  static constexpr ops::PoolGeometry geometry() {
    return {In::height, In::width, K, S, P, out_shape::height, out_shape::width};
  }
  std::vector<std::int32_t> arg_;
};

template <class In, int K, int S>
class AvgPool2dLayer : public LeafLayer<AvgPool2dLayer<In, K, S>, In, PoolOut<In, K, S, 0>> {
  static_assert(In::height >= K && In::width >= K, "AvgPool2d: the kernel is larger than the input");

 public:
  using out_shape = PoolOut<In, K, S, 0>;
  static std::string type_name() { return detail::pool_type_name("AvgPool2d", K, S, 0, false); }

  const Batch<out_shape>& forward(const Batch<In>& x) {
    const int n = x.batch();
    auto& y = this->y_;
    y.resize(n);
    detail::for_each_plane<In>(n, [&](std::size_t q) {
      ops::avg_pool_plane(x.data() + q * In::plane, geometry(), y.data() + q * out_shape::plane);
    });
    return y;
  }

  void backward(const Batch<In>& x, const Batch<out_shape>& dy, Batch<In>* dx) {
    detail::pool_backward(x.batch(), dx, [&](std::size_t q, float* dxq) {
      ops::avg_pool_plane_backward(dy.data() + q * out_shape::plane, geometry(), dxq);
    });
  }

 private:
  static constexpr ops::PoolGeometry geometry() {
    return {In::height, In::width, K, S, 0, out_shape::height, out_shape::width};
  }
};

// MaxPool2d(kernel_size, stride = kernel_size, padding = 0).
template <int K, int S = K, int P = 0>
struct MaxPool2d {
  static_assert(K > 0 && S > 0 && P >= 0, "MaxPool2d: invalid hyper-parameters");
  template <class In>
  using bind = MaxPool2dLayer<In, K, S, P>;
};

// AvgPool2d(kernel_size, stride = kernel_size), no padding.
template <int K, int S = K>
struct AvgPool2d {
  static_assert(K > 0 && S > 0, "AvgPool2d: invalid hyper-parameters");
  template <class In>
  using bind = AvgPool2dLayer<In, K, S>;
};

}  // namespace ctnn
