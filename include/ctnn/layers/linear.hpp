// Linear: y = x W^T + b on an (N x F) batch, as torch.nn.Linear.
#pragma once

#include <string>

#include "ctnn/layers/affine.hpp"
#include "ctnn/layers/layer.hpp"
#include "ctnn/ops/gemm.hpp"

namespace ctnn {

template <class In, int InF, int OutF>
class LinearLayer : public LeafLayer<LinearLayer<In, InF, OutF>, In, Features<OutF>> {
  static_assert(In::plane == 1,
                "Linear: its input must be a flat feature vector; put a Flatten before it");
  // (Compared only for a flat input: after the error above, the channels are not the size.)
  static_assert(detail::sizes_agree<InF, In::plane == 1 ? In::channels : InF>::value,
                "Linear: in_features (first number) differs from the size of its input (second)");

 public:
  using out_shape = Features<OutF>;
  static constexpr int in_features = InF, out_features = OutF;
  static constexpr InitRole init_role = InitRole::linear;
  Param weight, bias;

  static std::string type_name() { return detail::linear_type_name(InF, OutF); }

  void visit_state(StateVisitor& v, const std::string& prefix) { detail::visit_affine(v, prefix, {OutF, InF}, weight, bias); }

  void reset_parameters(Rng& rng) { detail::default_affine_init(weight, bias, InF, rng); }

  // The batch is (N x F) column-major and PyTorch's [out][in] row-major weight is W^T
  // column-major, so y = x * Wt with no transposition copied anywhere.
  const Batch<out_shape>& forward(const Batch<In>& x) {
    const int n = x.batch();
    auto& y = this->y_;
    y.resize(n);
    ops::gemm({x.data(), n, InF, n}, {weight.value, InF, OutF, InF}, {y.data(), n, OutF, n});
    ops::add_bias(y.data(), bias.value, OutF, static_cast<std::size_t>(n), y.channel_stride());
    return y;
  }

  void backward(const Batch<In>& x, const Batch<out_shape>& dy, Batch<In>* dx) {
    const int n = x.batch();
    const ops::MatRef dym{dy.data(), n, OutF, n};
    ops::gemm(ops::MatRef{x.data(), n, InF, n}.t(), dym, {weight.grad, InF, OutF, InF}, true);
    detail::add_channel_sums(dy, bias.grad);
    if (dx) {
      dx->resize(n);
      ops::gemm(dym, ops::MatRef{weight.value, InF, OutF, InF}.t(), {dx->data(), n, InF, n});
    }
  }
};

// Linear(in_features, out_features), with bias.
template <int InF, int OutF>
struct Linear {
  static_assert(InF > 0 && OutF > 0, "Linear: feature counts must be positive");
  template <class In>
  using bind = LinearLayer<In, InF, OutF>;
};

}  // namespace ctnn
