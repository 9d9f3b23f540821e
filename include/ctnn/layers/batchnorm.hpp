// BatchNorm2d and BatchNorm1d, with PyTorch's CPU arithmetic.
#pragma once

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "ctnn/core/shard.hpp"
#include "ctnn/layers/layer.hpp"
#include "ctnn/ops/batchnorm.hpp"
#include "ctnn/ops/bias.hpp"  // ChannelMap

namespace ctnn {

namespace detail {
inline std::string batchnorm_type_name(bool one_d, int c) {
  return std::string(one_d ? "BatchNorm1d(" : "BatchNorm2d(") + std::to_string(c) + ", eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)";
}

// A BatchNorm's state entries, in PyTorch's order (one copy for every BatchNorm type).
inline void visit_batchnorm_state(StateVisitor& v, const std::string& prefix, Param& weight, Param& bias,
                                  std::vector<float>& running_mean, std::vector<float>& running_var,
                                  std::int64_t& num_batches_tracked) {
  const auto c = static_cast<std::int64_t>(running_mean.size());
  weight.numel = bias.numel = running_mean.size();
  v.parameter(join_key(prefix, "weight"), {c}, weight);
  v.parameter(join_key(prefix, "bias"), {c}, bias);
  v.buffer(join_key(prefix, "running_mean"), {c}, running_mean);
  v.buffer(join_key(prefix, "running_var"), {c}, running_var);
  v.counter(join_key(prefix, "num_batches_tracked"), num_batches_tracked);
}
}  // namespace detail

// Normalises each channel over the batch (and, for 2d, the spatial plane). Training uses the
// biased batch variance and updates running_var with the unbiased one; evaluation uses the
// running statistics. The arithmetic (ops/batchnorm.hpp) follows PyTorch's CPU kernel step by
// step so parity tests can be tight.
template <class In, int C, bool OneD>
class BatchNormLayer : public LeafLayer<BatchNormLayer<In, C, OneD>, In, In> {
  static_assert(detail::sizes_agree<C, In::channels>::value,
                "BatchNorm: num_features (first number) differs from the channels of its input (second)");
  static_assert(!OneD || In::plane == 1, "BatchNorm1d: its input must be a flat feature vector");

 public:
  static constexpr int num_features = C;
  static constexpr double eps = ops::batchnorm_eps;
  static constexpr float momentum = ops::batchnorm_momentum;

  Param weight, bias;
  std::vector<float> running_mean = std::vector<float>(C, 0.0f);
  std::vector<float> running_var = std::vector<float>(C, 1.0f);
  std::int64_t num_batches_tracked = 0;

  static std::string type_name() { return detail::batchnorm_type_name(OneD, C); }

  void visit_state(StateVisitor& v, const std::string& prefix) {
    detail::visit_batchnorm_state(v, prefix, weight, bias, running_mean, running_var, num_batches_tracked);
  }

  void reset_parameters(Rng&) {
    std::fill(weight.value, weight.value + C, 1.0f);
    std::fill(bias.value, bias.value + C, 0.0f);
    std::fill(running_mean.begin(), running_mean.end(), 0.0f);
    std::fill(running_var.begin(), running_var.end(), 1.0f);
    num_batches_tracked = 0;
  }

  const Batch<In>& forward(const Batch<In>& x) { return run(x, false); }
  // relu(forward(x)) in one pass: for a ReLU that follows (ReLULayer::adopt).
  const Batch<In>& forward_relu(const Batch<In>& x) { return run(x, true); }
  // Evaluation's y = x * scale + shift per channel, for the convolution before to apply in its
  // own pass (Conv2dLayer::forward_folded); that output then becomes this layer's
  // (adopt_folded), with no pass and no storage of its own. Sequential does this under NoGrad.
  ops::ChannelMap eval_map() {
    if (this->training_) throw std::logic_error("BatchNorm: folded into the layer before in evaluation only");
    ops::batchnorm_eval_map(C, state(), scale_.data(), shift_.data());
    batch_stats_ = false;
    return {nullptr, scale_.data(), shift_.data(), false};
  }
  const Batch<In>& adopt_folded(const Batch<In>& folded) { return this->adopt_output(folded); }

  void backward(const Batch<In>& x, const Batch<In>& dy, Batch<In>* dx) { run_backward(x, dy, dx, nullptr); }
  // The backward of this layer and of the ReLU it applied (forward_relu) together: dy is the
  // gradient of the ReLU's output, masked by this layer's output (which the ReLU adopted) in
  // the same passes. dx may be dy's storage.
  void backward_relu(const Batch<In>& x, const Batch<In>& dy, Batch<In>* dx) {
    run_backward(x, dy, dx, this->y_.data());
  }

 private:
  const Batch<In>& run(const Batch<In>& x, bool relu) {
    auto& y = this->own_output();  // adopted a folded output last time: own storage again
    y.resize(x.batch());
    const std::size_t m = x.channel_stride();
    const ops::BatchNormSync s = sync(x.batch());
    if (this->training_) {
      if (std::max(m, s.total) < 2) throw std::invalid_argument("BatchNorm: training needs more than one value per channel");
      ++num_batches_tracked;
    }
    ops::batchnorm_forward(x.data(), y.data(), C, m, this->training_, state(), s, relu);
    batch_stats_ = this->training_;
    return y;
  }

  void run_backward(const Batch<In>& x, const Batch<In>& dy, Batch<In>* dx, const float* relu_y) {
    if (dx) dx->resize(x.batch());
    // The statistics the forward used (as PyTorch's autograd: a mode switched between the
    // forward and the backward does not change the gradient's formula).
    ops::batchnorm_backward(x.data(), dy.data(), dx ? dx->data() : nullptr, C, x.channel_stride(),
                            batch_stats_, state(), weight.grad, bias.grad, sync(x.batch()), relu_y);
  }

  // Statistics over the global batch when this process trains on a share of it with the
  // shards' sums exchanged (SyncBatchNorm, see core/shard.hpp); its own batch otherwise.
  static ops::BatchNormSync sync(int n) {
    const BatchShard& s = current_shard();
    if (!s.allreduce) return {};
    return {static_cast<std::size_t>(s.global_size(n)) * In::plane, s.allreduce, s.context};
  }

  ops::BatchNormState state() {
    return {weight.value, bias.value, running_mean.data(), running_var.data(), save_mean_.data(), save_invstd_.data()};
  }

  std::vector<float> save_mean_ = std::vector<float>(C), save_invstd_ = std::vector<float>(C);
  bool batch_stats_ = false;  // whether the last forward normalised with batch statistics
  std::vector<float> scale_ = std::vector<float>(C), shift_ = std::vector<float>(C);  // eval_map's
};

// BatchNorm2d(num_features): over N, H, W for each channel.
template <int C>
struct BatchNorm2d {
  template <class In>
  using bind = BatchNormLayer<In, C, false>;
};

// BatchNorm1d(num_features) on (N, F): over N for each feature.
template <int F>
struct BatchNorm1d {
  template <class In>
  using bind = BatchNormLayer<In, F, true>;
};

}  // namespace ctnn
