// Flatten: x.view(N, -1).
#pragma once

#include <algorithm>
#include <string>

#include "ctnn/layers/layer.hpp"

namespace ctnn {

// Flattens each sample to C*H*W features in PyTorch's order (channel-major within the sample).
// With H = W = 1 (both assignment networks) the channel-major batch already is the (N x F)
// matrix, so the copy is a straight one; otherwise the plane is moved next to the channel.
template <class In>
class FlattenLayer : public LeafLayer<FlattenLayer<In>, In, Features<In::size>> {
 public:
  using out_shape = Features<In::size>;
  static std::string type_name() { return "Flatten(start_dim=1, end_dim=-1)"; }

  const Batch<out_shape>& forward(const Batch<In>& x) {
    auto& y = this->y_;
    const int n = x.batch();
    y.resize(n);
    if constexpr (In::plane == 1) {
      std::copy(x.data(), x.data() + x.size(), y.data());
    } else {
      for (int c = 0; c < In::channels; ++c)
        for (int i = 0; i < n; ++i)
          for (int q = 0; q < In::plane; ++q)
            y.channel(c * In::plane + q)[i] = x.channel(c)[std::size_t(i) * In::plane + q];
    }
    return y;
  }

  void backward(const Batch<In>& x, const Batch<out_shape>& dy, Batch<In>* dx) {
    if (!dx) return;
    const int n = x.batch();
    dx->resize(n);
    if constexpr (In::plane == 1) {
      std::copy(dy.data(), dy.data() + dy.size(), dx->data());
    } else {
      for (int c = 0; c < In::channels; ++c)
        for (int i = 0; i < n; ++i)
          for (int q = 0; q < In::plane; ++q)
            dx->channel(c)[std::size_t(i) * In::plane + q] = dy.channel(c * In::plane + q)[i];
    }
  }
};

struct Flatten {
  template <class In>
  using bind = FlattenLayer<In>;
};

}  // namespace ctnn
