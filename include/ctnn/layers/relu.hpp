// ReLU, as torch.nn.ReLU.
#pragma once

#include <string>

#include "ctnn/core/threading.hpp"
#include "ctnn/layers/layer.hpp"

namespace ctnn {

template <class In>
class ReLULayer : public LeafLayer<ReLULayer<In>, In, In> {
 public:
  static std::string type_name() { return "ReLU()"; }

  const Batch<In>& forward(const Batch<In>& x) {
    auto& y = this->y_;
    y.resize(x.batch());
    const float* px = x.data();
    float* py = y.data();
    const std::size_t n = x.size();
    // `v < 0 ? 0 : v` rather than max(): a NaN passes through, as in PyTorch.
#pragma omp parallel for simd schedule(static) if (n > kThreadedStream)
    for (std::size_t i = 0; i < n; ++i) py[i] = px[i] < 0.0f ? 0.0f : px[i];
    return y;
  }

  // PyTorch's threshold_backward on the result: the gradient passes where the output is > 0.
  void backward(const Batch<In>& x, const Batch<In>& dy, Batch<In>* dx) {
    if (!dx) return;
    dx->resize(x.batch());
    const float* py = this->y_.data();
    const float* pg = dy.data();
    float* pd = dx->data();
    const std::size_t n = x.size();
#pragma omp parallel for simd schedule(static) if (n > kThreadedStream)
    for (std::size_t i = 0; i < n; ++i) pd[i] = py[i] > 0.0f ? pg[i] : 0.0f;
  }
};

struct ReLU {
  template <class In>
  using bind = ReLULayer<In>;
};

}  // namespace ctnn
