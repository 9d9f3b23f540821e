// ReLU, as torch.nn.ReLU.
#pragma once

#include <string>

#include "ctnn/layers/layer.hpp"
#include "ctnn/ops/elementwise.hpp"

namespace ctnn {

template <class In>
class ReLULayer : public LeafLayer<ReLULayer<In>, In, In> {
 public:
  static std::string type_name() { return "ReLU()"; }

  const Batch<In>& forward(const Batch<In>& x) {
    auto& y = this->own_output();  // adopted last time: own storage again
    y.resize(x.batch());
    ops::relu_forward(x.data(), y.data(), x.size());  // a NaN passes through, as in PyTorch
    return y;
  }

  // The layer before applied this ReLU to its own output (forward_relu: Conv2d, BatchNorm), as
  // torch's ReLU(inplace=True) leaves it: this layer's output becomes a view of that output,
  // with no pass and no storage of its own. Sequential does this for every such pair.
  const Batch<In>& adopt(const Batch<In>& relu_applied) { return this->adopt_output(relu_applied); }

  // PyTorch's threshold_backward on the result: the gradient passes where the output is > 0.
  void backward(const Batch<In>& x, const Batch<In>& dy, Batch<In>* dx) {
    if (!dx) return;
    dx->resize(x.batch());
    ops::relu_backward(this->y_.data(), dy.data(), dx->data(), x.size());
  }
};

struct ReLU {
  template <class In>
  using bind = ReLULayer<In>;
};

}  // namespace ctnn
