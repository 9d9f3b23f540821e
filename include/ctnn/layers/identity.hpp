// Identity, as torch.nn.Identity: the output is the input (the default shortcut of Residual).
#pragma once

#include <algorithm>
#include <string>

#include "ctnn/layers/layer.hpp"

namespace ctnn {

template <class In>
class IdentityLayer : public LeafLayer<IdentityLayer<In>, In, In> {
 public:
  static std::string type_name() { return "Identity()"; }
  const Batch<In>& forward(const Batch<In>& x) {
    this->y_ = x;
    return this->y_;
  }
  void backward(const Batch<In>& x, const Batch<In>& dy, Batch<In>* dx) {
    if (!dx) return;
    dx->resize(x.batch());
    std::copy(dy.data(), dy.data() + dy.size(), dx->data());
  }
};

// The identity, e.g. as the shortcut of a plain residual block.
struct Identity {
  template <class In>
  using bind = IdentityLayer<In>;
};

}  // namespace ctnn
