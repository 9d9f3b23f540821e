// Conv2d: im2col + GEMM over batch chunks, with a copy-free path for 1x1 stride-1 kernels.
//
// Two schedules, chosen per layer at compile time:
// - image-parallel (output planes of 64 pixels or more): the batch is cut into chunks of whole
//   images; one thread does a chunk's im2col, GEMM and bias in its own cache-sized buffer, and
//   chunks are handed out dynamically. One parallel region per pass, no barrier per chunk, and a
//   thread slowed down by another process does not stall the other.
// - GEMM-parallel (small planes, where a chunk of images makes a thin GEMM against a large weight
//   that every chunk would have to re-pack): each product is split over its output instead.
// 3x3 stride-1 padding-1 convolutions instead run as Winograd convolutions (ops/winograd.hpp)
// where that measured faster; see winograd_plan below.
// Chunk and group boundaries depend only on the batch size, and every output element is
// computed by the same code whichever thread runs it, so results do not depend on thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include "ctnn/layers/layer.hpp"
#include "ctnn/ops/gemm.hpp"
#include "ctnn/ops/im2col.hpp"
#include "ctnn/ops/scratch.hpp"
#include "ctnn/ops/winograd.hpp"

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
#pragma omp simd reduction(+ : s)
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
  static constexpr bool image_parallel = !pointwise && out_shape::plane >= 64;
  static constexpr int min_chunks = 8, max_groups = 8;
  // Winograd for 3x3 stride-1 padding-1 (tile 0: im2col + GEMM). Chosen from
  // `CTNN_BENCH_THREADS=2 bench_kernels --benchmark_filter=conv3x3/` (batch 100, 2 threads,
  // AMD EPYC, on a loaded machine) at VGG16's and ResNet50_layer4's shapes:
  // - fewer than 16 input channels (VGG's first layer, Cin = 3): im2col, 2-4x faster; the GEMM
  //   is cheap and transforming 3 channels into 36 points costs more than it saves.
  // - 2x2 planes (ResNet's layer3/layer4 ends, VGG's last stage): im2col, which was faster or
  //   level in 5 of 6 passes; one 4x4 tile per 2x2 output saves less than the transforms cost.
  // - planes of 8x8 and up (VGG's 32x32, 16x16, 8x8): F(4x4, 3x3) by transform point,
  //   1.4-2.5x faster than im2col.
  // - 3x3 to 7x7 planes (ResNet's 7x7 and 4x4, VGG's 4x4): F(2x2, 3x3), by transform point from
  //   256 input channels (1.6-2.7x), chunked below (1.6-2.2x in the forward, level to 1.7x in
  //   the backward). On a 4x4 plane F(4x4) would compute a 6x6 transform for one 4x4 output.
  //   ResNet's 7x7 layer would be as fast with F(4x4), but F(4x4)'s error (about 10x F(2x2)'s,
  //   tests/test_winograd.cpp) moved parity_train_step's worst ReLU flip in ResNet (a unit on
  //   the other side of the kink after layer4's BatchNorm) from 1.4e-4 of its layer's scale to
  //   4.1e-4; with F(2x2) there it stays at 1.4e-4, as with im2col. (That check's allowance is
  //   1e-4, which main's im2col build also exceeds on this machine.)
  static constexpr ops::Winograd3x3 winograd_plan() {
    const int side = std::min(In::height, In::width);
    if (K != 3 || S != 1 || P != 1 || InC < 16 || side <= 2) return {InC, OutC, In::height, In::width, 0, 0, false};
    if (side >= 8) return {InC, OutC, In::height, In::width, 0, 4, true};
    return {InC, OutC, In::height, In::width, 0, 2, InC >= 256};
  }
  static constexpr bool winograd = winograd_plan().tile != 0;

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
    if constexpr (winograd) {
      ops::winograd_forward(winograd_shape(n), x.data(), weight.value, bias.value, y.data());  // bias included
      return y;
    }
    if constexpr (image_parallel) {
      forward_image_parallel(x, y);  // bias included
      return y;
    }
    const Eigen::Index rows_all = static_cast<Eigen::Index>(n) * out_shape::plane;
    const ops::MatRef wt{weight.value, patch, OutC, patch};   // weight as (Cin*K*K x Cout)
    if constexpr (pointwise) {
      ops::gemm({x.data(), rows_all, InC, rows_all}, wt, {y.data(), rows_all, OutC, rows_all});
    } else {
      const auto g = geometry(n);
      const int nb = chunk(n);
      float* col = ops::scratch(0, static_cast<std::size_t>(nb) * out_shape::plane * patch);
      for (int n0 = 0; n0 < n; n0 += nb) {
        const int cnt = std::min(nb, n - n0);
        const Eigen::Index rows = static_cast<Eigen::Index>(cnt) * out_shape::plane;
        ops::im2col(x.data(), g, n0, cnt, col);
        ops::gemm({col, rows, patch, rows}, wt,
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
    if constexpr (winograd) {
      const auto s = winograd_shape(n);
      ops::winograd_backward_weights(s, x.data(), dy.data(), weight.grad);
      if (dx) {
        dx->resize(n);
        ops::winograd_backward_data(s, dy.data(), weight.value, dx->data());
      }
      return;
    }
    if constexpr (pointwise) {
      const ops::MatRef xm{x.data(), rows_all, InC, rows_all};
      const ops::MatRef dym{dy.data(), rows_all, OutC, rows_all};
      ops::gemm(xm.t(), dym, dwt, /*accumulate=*/true);
      if (dx) {
        dx->resize(n);
        ops::gemm(dym, wt.t(), {dx->data(), rows_all, InC, rows_all});
      }
    } else if constexpr (image_parallel) {
      backward_image_parallel(x, dy, dx);
    } else {
      const auto g = geometry(n);
      const int nb = chunk(n);
      float* col = ops::scratch(0, static_cast<std::size_t>(nb) * out_shape::plane * patch);
      if (dx) {
        dx->resize(n);
        dx->set_zero();
      }
      for (int n0 = 0; n0 < n; n0 += nb) {
        const int cnt = std::min(nb, n - n0);
        const Eigen::Index rows = static_cast<Eigen::Index>(cnt) * out_shape::plane;
        const ops::MatRef dym{dy.data() + static_cast<std::size_t>(n0) * out_shape::plane, rows,
                              OutC, rows_all};
        ops::im2col(x.data(), g, n0, cnt, col);
        ops::gemm(ops::MatRef{col, rows, patch, rows}.t(), dym, dwt, /*accumulate=*/true);
        if (dx) {
          // The patch matrix is no longer needed: reuse it for its own gradient.
          ops::gemm(dym, wt.t(), {col, rows, patch, rows});
          ops::col2im_add(col, g, n0, cnt, dx->data());
        }
      }
    }
  }

 private:
  static ops::ConvGeometry geometry(int n) {
    return {InC, In::height, In::width, K, S, P, out_shape::height, out_shape::width, n};
  }
  static ops::Winograd3x3 winograd_shape(int n) {
    auto s = winograd_plan();
    s.batch = n;
    return s;
  }
  static int chunk(int n) {
    const std::size_t per_sample = std::size_t{out_shape::plane} * patch;
    // Image-parallel layers keep at least `min_chunks` chunks so the threads stay balanced.
    const int cap = image_parallel ? std::max(1, (n + min_chunks - 1) / min_chunks) : std::max(n, 1);
    return static_cast<int>(std::clamp<std::size_t>(col_budget / per_sample, 1, cap));
  }

  void forward_image_parallel(const Batch<In>& x, Batch<out_shape>& y) const {
    const int n = x.batch();
    const auto g = geometry(n);
    const int nb = chunk(n), chunks = (n + nb - 1) / nb;
    const std::size_t col_floats = static_cast<std::size_t>(nb) * out_shape::plane * patch;
    float* cols = ops::scratch(0, col_floats * num_threads());
    const Eigen::Index rows_all = static_cast<Eigen::Index>(n) * out_shape::plane;
    const ops::MatRef wt{weight.value, patch, OutC, patch};
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < chunks; ++i) {
      float* col = cols + col_floats * thread_index();
      const int n0 = i * nb, cnt = std::min(nb, n - n0);
      const Eigen::Index rows = static_cast<Eigen::Index>(cnt) * out_shape::plane;
      float* out = y.data() + static_cast<std::size_t>(n0) * out_shape::plane;
      ops::im2col(x.data(), g, n0, cnt, col, /*threaded=*/false);
      ops::gemm_serial({col, rows, patch, rows}, wt, {out, rows, OutC, rows_all});
      for (int c = 0; c < OutC; ++c) {  // bias, while the chunk's output is still in cache
        float* p = out + c * rows_all;
        const float b = bias.value[c];
        for (Eigen::Index r = 0; r < rows; ++r) p[r] += b;
      }
    }
  }

  // Weight gradients are summed over the batch: chunks are gathered into `groups` fixed groups,
  // each group's partial sum is one thread's, and the partials are added in group order.
  void backward_image_parallel(const Batch<In>& x, const Batch<out_shape>& dy, Batch<In>* dx) {
    const int n = x.batch();
    const auto g = geometry(n);
    const int nb = chunk(n), chunks = (n + nb - 1) / nb, groups = std::min(chunks, max_groups);
    const std::size_t col_floats = static_cast<std::size_t>(nb) * out_shape::plane * patch;
    const std::size_t w_floats = std::size_t{OutC} * patch;
    float* cols = ops::scratch(0, col_floats * num_threads());
    float* partials = ops::scratch(1, w_floats * groups);
    const Eigen::Index rows_all = static_cast<Eigen::Index>(n) * out_shape::plane;
    const ops::MatRef wt{weight.value, patch, OutC, patch};
    if (dx) dx->resize(n);
#pragma omp parallel for schedule(dynamic, 1)
    for (int gi = 0; gi < groups; ++gi) {
      float* col = cols + col_floats * thread_index();
      const ops::MutMatRef dw{partials + w_floats * gi, patch, OutC, patch};
      for (int i = gi * chunks / groups; i < (gi + 1) * chunks / groups; ++i) {
        const int n0 = i * nb, cnt = std::min(nb, n - n0);
        const Eigen::Index rows = static_cast<Eigen::Index>(cnt) * out_shape::plane;
        const ops::MatRef dym{dy.data() + static_cast<std::size_t>(n0) * out_shape::plane, rows,
                              OutC, rows_all};
        ops::im2col(x.data(), g, n0, cnt, col, /*threaded=*/false);
        ops::gemm_serial(ops::MatRef{col, rows, patch, rows}.t(), dym, dw,
                         /*accumulate=*/i != gi * chunks / groups);
        if (dx) {
          for (int c = 0; c < InC; ++c)
            std::fill_n(dx->channel(c) + static_cast<std::size_t>(n0) * In::plane,
                        static_cast<std::size_t>(cnt) * In::plane, 0.0f);
          ops::gemm_serial(dym, wt.t(), {col, rows, patch, rows});
          ops::col2im_add(col, g, n0, cnt, dx->data(), /*threaded=*/false);
        }
      }
    }
#pragma omp parallel for schedule(static) if (w_floats > (1u << 15))
    for (std::size_t e = 0; e < w_floats; ++e) {
      float s = partials[e];
      for (int gi = 1; gi < groups; ++gi) s += partials[w_floats * gi + e];
      weight.grad[e] += s;
    }
  }

  static int thread_index() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
  }
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
