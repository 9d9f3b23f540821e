// What Conv2d and Linear share: PyTorch's default initialisation of a weight and a bias, their
// state entries, and the bias gradient. Plain functions taking the sizes, so that every layer
// type of a network shares one copy of this cold code.
#pragma once

#include <cmath>
#include <string>

#include "ctnn/core/random.hpp"
#include "ctnn/core/state.hpp"
#include "ctnn/core/tensor.hpp"
#include "ctnn/ops/bias.hpp"

namespace ctnn {

namespace detail {
// Per-channel sum over a batch, accumulated in double (as PyTorch's CPU reductions do for
// float), added into `out`.
template <class S>
inline void add_channel_sums(const Batch<S>& b, float* out) {
  ops::add_channel_sums(b.data(), S::channels, b.channel_stride(), out);
}

// PyTorch's default Conv2d/Linear initialisation: kaiming_uniform_(a = sqrt(5)) for the weight,
// which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias.
inline void default_affine_init(Param& weight, Param& bias, int fan_in, Rng& rng) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  for (auto& w : weight.data()) w = static_cast<float>(rng.uniform(-bound, bound));
  for (auto& b : bias.data()) b = static_cast<float>(rng.uniform(-bound, bound));
}

// The two state entries "<prefix>.weight" (of weight_shape) and "<prefix>.bias" (out features).
inline void visit_affine(StateVisitor& v, const std::string& prefix, const TensorShape& weight_shape, Param& weight,
                         Param& bias) {
  weight.numel = numel(weight_shape);
  bias.numel = static_cast<std::size_t>(weight_shape.front());
  v.parameter(join_key(prefix, "weight"), weight_shape, weight);
  v.parameter(join_key(prefix, "bias"), {weight_shape.front()}, bias);
}

// As PyTorch 1.13 prints the modules (their repr): "Conv2d(3, 64, kernel_size=(3, 3), stride=(1,
// 1), padding=(1, 1))", no padding when it is 0; "Linear(in_features=16, out_features=10, bias=True)".
inline std::string conv2d_type_name(int in, int out, int k, int s, int p) {
  const auto pair = [](int v) {  // appended, not "(" + ...: GCC 12 warns (-Wrestrict) at -O3 on that
    std::string text(1, '(');
    text += std::to_string(v);
    text += ", ";
    text += std::to_string(v);
    text += ')';
    return text;
  };
  return "Conv2d(" + std::to_string(in) + ", " + std::to_string(out) + ", kernel_size=" + pair(k) +
         ", stride=" + pair(s) + (p != 0 ? ", padding=" + pair(p) : std::string()) + ")";
}
inline std::string linear_type_name(int in, int out) {
  return "Linear(in_features=" + std::to_string(in) + ", out_features=" + std::to_string(out) + ", bias=True)";
}
}  // namespace detail

}  // namespace ctnn
