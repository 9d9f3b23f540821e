// Conv2d: im2col + GEMM over batch chunks, with a copy-free path for 1x1 stride-1 kernels.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include "ctnn/layers/layer.hpp"
#include "ctnn/ops/gemm.hpp"
#include "ctnn/ops/im2col.hpp"

namespace ctnn {

namespace detail {
// Per-channel sum over a batch, accumulated in double (as PyTorch's CPU reductions do for
// float), added into `out`.
template <class S>
inline void add_channel_sums(const Batch<S>& b, float* out) {
#pragma omp parallel for schedule(static) if (b.size() > (1u << 15))
  for (int c = 0; c < S::channels; ++c) {
    const float* p = b.channel(c);
    double s = 0.0;
    for (std::size_t i = 0; i < b.channel_stride(); ++i) s += p[i];
    out[c] += static_cast<float>(s);
  }
}

// PyTorch's default Conv2d/Linear initialisation: kaiming_uniform_(a = sqrt(5)) for the weight,
// which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias.
inline void default_affine_init(Param& weight, Param& bias, int fan_in, Rng& rng) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  for (auto& w : weight.data()) w = static_cast<float>(rng.uniform(-bound, bound));
  for (auto& b : bias.data()) b = static_cast<float>(rng.uniform(-bound, bound));
}
}  // namespace detail

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
  static constexpr int patch = InC * K * K;             // GEMM inner dimension
  static constexpr bool pointwise = K == 1 && S == 1 && P == 0;
  // Upper bound on the floats of one chunk's patch matrix: large enough for efficient GEMMs,
  // small enough to stay in the last-level cache instead of streaming the whole batch.
  static constexpr std::size_t col_budget = std::size_t{1} << 20;

  Param weight, bias;

  static std::string type_name() {
    return "Conv2d(" + std::to_string(InC) + ", " + std::to_string(OutC) + ", kernel_size=" +
           std::to_string(K) + ", stride=" + std::to_string(S) + ", padding=" + std::to_string(P) + ")";
  }

  void visit_state(StateVisitor& v, const std::string& prefix) {
    weight.numel = std::size_t{OutC} * patch;
    bias.numel = OutC;
    v.parameter(join_key(prefix, "weight"), {OutC, InC, K, K}, weight);
    v.parameter(join_key(prefix, "bias"), {OutC}, bias);
  }

  void reset_parameters(Rng& rng) { detail::default_affine_init(weight, bias, patch, rng); }

  const Batch<out_shape>& forward(const Batch<In>& x) {
    const int n = x.batch();
    auto& y = this->y_;
    y.resize(n);
    const Eigen::Index rows_all = static_cast<Eigen::Index>(n) * out_shape::plane;
    const ops::MatRef wt{weight.value, patch, OutC, patch};   // weight as (Cin*K*K x Cout)
    if constexpr (pointwise) {
      ops::gemm({x.data(), rows_all, InC, rows_all}, wt, {y.data(), rows_all, OutC, rows_all});
    } else {
      const auto g = geometry(n);
      const int nb = chunk(n);
      col_.resize(static_cast<std::size_t>(nb) * out_shape::plane * patch);
      for (int n0 = 0; n0 < n; n0 += nb) {
        const int cnt = std::min(nb, n - n0);
        const Eigen::Index rows = static_cast<Eigen::Index>(cnt) * out_shape::plane;
        ops::im2col(x.data(), g, n0, cnt, col_.data());
        ops::gemm({col_.data(), rows, patch, rows}, wt,
                  {y.data() + static_cast<std::size_t>(n0) * out_shape::plane, rows, OutC, rows_all});
      }
    }
    const std::size_t cs = y.channel_stride();
#pragma omp parallel for schedule(static) if (y.size() > (1u << 15))
    for (int c = 0; c < OutC; ++c) {
      float* p = y.channel(c);
      const float b = bias.value[c];
      for (std::size_t i = 0; i < cs; ++i) p[i] += b;
    }
    return y;
  }

  void backward(const Batch<In>& x, const Batch<out_shape>& dy, Batch<In>* dx) {
    const int n = x.batch();
    const Eigen::Index rows_all = static_cast<Eigen::Index>(n) * out_shape::plane;
    const ops::MatRef wt{weight.value, patch, OutC, patch};
    const ops::MutMatRef dwt{weight.grad, patch, OutC, patch};
    detail::add_channel_sums(dy, bias.grad);
    if constexpr (pointwise) {
      const ops::MatRef xm{x.data(), rows_all, InC, rows_all};
      const ops::MatRef dym{dy.data(), rows_all, OutC, rows_all};
      ops::gemm(xm.t(), dym, dwt, /*accumulate=*/true);
      if (dx) {
        dx->resize(n);
        ops::gemm(dym, wt.t(), {dx->data(), rows_all, InC, rows_all});
      }
    } else {
      const auto g = geometry(n);
      const int nb = chunk(n);
      col_.resize(static_cast<std::size_t>(nb) * out_shape::plane * patch);
      if (dx) {
        dx->resize(n);
        dx->set_zero();
      }
      for (int n0 = 0; n0 < n; n0 += nb) {
        const int cnt = std::min(nb, n - n0);
        const Eigen::Index rows = static_cast<Eigen::Index>(cnt) * out_shape::plane;
        const ops::MatRef dym{dy.data() + static_cast<std::size_t>(n0) * out_shape::plane, rows,
                              OutC, rows_all};
        ops::im2col(x.data(), g, n0, cnt, col_.data());
        ops::gemm(ops::MatRef{col_.data(), rows, patch, rows}.t(), dym, dwt, /*accumulate=*/true);
        if (dx) {
          // The patch matrix is no longer needed: reuse it for its own gradient.
          ops::gemm(dym, wt.t(), {col_.data(), rows, patch, rows});
          ops::col2im_add(col_.data(), g, n0, cnt, dx->data());
        }
      }
    }
  }

 private:
  static ops::ConvGeometry geometry(int n) {
    return {InC, In::height, In::width, K, S, P, out_shape::height, out_shape::width, n};
  }
  static int chunk(int n) {
    const std::size_t per_sample = std::size_t{out_shape::plane} * patch;
    return static_cast<int>(std::clamp<std::size_t>(col_budget / per_sample, 1, std::max(n, 1)));
  }

  AlignedFloats col_;
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
