// Conv2d: a typed shell over ops/conv2d.hpp's kernels (im2col + GEMM, with a copy-free path for
// 1x1 stride-1 kernels). The sizes live in the type, where they are checked; the kernels take
// them at run time, so every convolution of a program shares one copy of the code.
#pragma once

#include <string>

#include "ctnn/core/grad_mode.hpp"
#include "ctnn/layers/affine.hpp"
#include "ctnn/layers/layer.hpp"
#include "ctnn/ops/conv2d.hpp"

namespace ctnn {

// Bound convolution layer for input sample shape In.
template <class In, int InC, int OutC, int K, int S, int P>
class Conv2dLayer
    : public LeafLayer<Conv2dLayer<In, InC, OutC, K, S, P>, In,
                       Shape<OutC, window_out(In::height, K, S, P), window_out(In::width, K, S, P)>> {
  static_assert(detail::sizes_agree<InC, In::channels>::value,
                "Conv2d: in_channels (first number) differs from the channels of its input (second)");
  static_assert(In::height + 2 * P >= K && In::width + 2 * P >= K,
                "Conv2d: the kernel is larger than the padded input");

 public:
  using Base = LeafLayer<Conv2dLayer, In, Shape<OutC, window_out(In::height, K, S, P),
                                                window_out(In::width, K, S, P)>>;
  using typename Base::out_shape;
  static constexpr int in_channels = InC, out_channels = OutC, kernel_size = K, stride = S,
                       padding = P;
  static constexpr InitRole init_role = InitRole::convolution;
  static constexpr ops::ConvShape shape{InC, In::height, In::width, OutC, K, S, P};
  static constexpr int patch = shape.patch();  // GEMM inner dimension
  static constexpr bool pointwise = shape.pointwise();
  static constexpr bool image_parallel = shape.image_parallel();
  static constexpr std::size_t col_budget = ops::detail::col_budget;
  // 3x3 stride-1 padding-1 layers may run as Winograd convolutions (ops::winograd_plan says which).
  static constexpr ops::Winograd3x3 winograd_plan() { return ops::winograd_plan(shape, 1); }
  static constexpr bool winograd = winograd_plan().tile != 0;

  Param weight, bias;

  static std::string type_name() { return detail::conv2d_type_name(InC, OutC, K, S, P); }

  void visit_state(StateVisitor& v, const std::string& prefix) {
    detail::visit_affine(v, prefix, {OutC, InC, K, K}, weight, bias);
  }

  void reset_parameters(Rng& rng) { detail::default_affine_init(weight, bias, patch, rng); }

  const Batch<out_shape>& forward(const Batch<In>& x) { return run(x, {bias.value}); }
  // relu(forward(x)) in one pass over the output: for a ReLU that follows (ReLULayer::adopt).
  const Batch<out_shape>& forward_relu(const Batch<In>& x) { return run(x, {bias.value, nullptr, nullptr, true}); }
  // forward(x) with a BatchNorm that follows in evaluation folded in (its per-channel scale and
  // shift, BatchNormLayer::eval_map), then relu() with `relu`: that layer's pass (and a
  // ReLU's) done where this layer's output is still in cache or registers, the same bits.
  // Sequential does it under NoGrad (the output then holds the BatchNorm's values).
  const Batch<out_shape>& forward_folded(const Batch<In>& x, const ops::ChannelMap& batchnorm, bool relu) {
    return run(x, {bias.value, batchnorm.scale, batchnorm.shift, relu});
  }
  void backward(const Batch<In>& x, const Batch<out_shape>& dy, Batch<In>* dx) {
    if (dx) dx->resize(x.batch());
    ops::conv2d_backward(shape, x.batch(), x.data(), dy.data(), weight.value, weight.grad, bias.grad,
                         dx ? dx->data() : nullptr);
  }

 private:
  const Batch<out_shape>& run(const Batch<In>& x, const ops::ChannelMap& map) {
    auto& y = this->y_;
    y.resize(x.batch());
    // Under NoGrad (evaluation) the weights' transforms are kept for the next batch, checked
    // against the weights at every use; a pass with gradients (training) frees them.
    const bool keep = !is_grad_enabled();
    if (!keep) transforms_.clear();
    ops::conv2d_forward(shape, x.batch(), x.data(), weight.value, map, y.data(), keep ? &transforms_ : nullptr);
    return y;
  }

  ops::WeightCache transforms_;
};

// Conv2d(in_channels, out_channels, kernel_size, stride = 1, padding = 0), with bias, as
// torch.nn.Conv2d.
template <int InC, int OutC, int K, int S = 1, int P = 0>
struct Conv2d {
  static_assert(InC > 0 && OutC > 0 && K > 0 && S > 0 && P >= 0, "Conv2d: invalid hyper-parameters");
  template <class In>
  using bind = Conv2dLayer<In, InC, OutC, K, S, P>;
};

}  // namespace ctnn
