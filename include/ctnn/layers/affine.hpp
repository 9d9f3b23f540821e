// What Conv2d and Linear share: PyTorch's default initialisation of a weight and a bias, and the
// bias gradient.
#pragma once

#include <cmath>

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
}  // namespace detail

}  // namespace ctnn
