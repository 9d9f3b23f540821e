// BatchNorm's kernels on channel-major batches (each channel one contiguous run of m values), for
// sizes given at run time, with PyTorch's CPU arithmetic: double sums, float mean and variance
// sum, y = x * alpha + beta. BatchNormLayer (layers/batchnorm.hpp) is a typed shell over them.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <cstddef>
#include <vector>

#include "ctnn/core/threading.hpp"  // kThreadedWork
#include "ctnn/ops/elementwise.hpp"

namespace ctnn::ops {

struct BatchNormState {
  const float* weight;
  const float* bias;
  float* running_mean;
  float* running_var;
  float* save_mean;    // per channel: what backward needs of this forward
  float* save_invstd;
};

inline constexpr double batchnorm_eps = 1e-5;
inline constexpr float batchnorm_momentum = 0.1f;

// Values per channel over every process's share of the batch, and how to sum across them
// (SyncBatchNorm, ctnn/dist/); the default is one process with the whole batch.
struct BatchNormSync {
  std::size_t total = 0;  // values per channel in the global batch; 0 = this share is the batch
  void (*allreduce)(double* values, std::size_t count, void* context) = nullptr;
  void* context = nullptr;
  bool active() const { return allreduce != nullptr; }
};

namespace detail {
// py = px * alpha + beta over one channel's run, then relu() with `relu` (a following ReLU, fused).
// One fused multiply-add where the target has FMA (Eigen's scalar pmadd), whatever the compiler's
// contraction setting: the bits of a convolution that applies this map itself (ops::ChannelMap).
inline void scale_shift(const float* px, float* py, std::size_t m, float alpha, float beta, bool relu) {
  if (relu)
    for (std::size_t i = 0; i < m; ++i) py[i] = ops::relu(Eigen::internal::pmadd(px[i], alpha, beta));
  else
    for (std::size_t i = 0; i < m; ++i) py[i] = Eigen::internal::pmadd(px[i], alpha, beta);
}
// Channel c's alpha and beta from the running statistics (evaluation), saving what backward needs.
// PyTorch 1.13's arithmetic (batch_norm_cpu_collect_linear_and_constant_terms): the inverse
// standard deviation in float (the batch statistics' is in double), beta = bias - mean * alpha
// as one fused multiply-add; with scale_shift's fused x * alpha + beta, an evaluation forward
// gives PyTorch's bits (test_batchnorm). Until session 28 the double inverse missed them in 7-9
// of 10 outputs of a 64-channel layer by an ulp or so.
inline void running_affine(const BatchNormState& st, int c, float& alpha, float& beta) {
  const float mean = st.running_mean[c];
  const float invstd = 1.0f / std::sqrt(st.running_var[c] + static_cast<float>(batchnorm_eps));
  st.save_mean[c] = mean;
  st.save_invstd[c] = invstd;
  alpha = invstd * st.weight[c];
  beta = std::fma(-mean, alpha, st.bias[c]);
}
inline double channel_sum(const float* p, std::size_t m) {
  double sum = 0.0;
  CTNN_OMP(simd reduction(+ : sum))
  for (std::size_t i = 0; i < m; ++i) sum += p[i];
  return sum;
}
// PyTorch's: each deviation from the float mean, and its square, in float; summed in double.
inline double channel_squared_deviations(const float* p, std::size_t m, double mean_d) {
  const float mean = static_cast<float>(mean_d);
  double s = 0.0;
  CTNN_OMP(simd reduction(+ : s))
  for (std::size_t i = 0; i < m; ++i) {
    const float d = p[i] - mean;
    s += static_cast<double>(d * d);
  }
  return s;
}
// Channel c from its batch mean and sum of squared deviations over `total` values: running
// statistics, what backward needs, and y. PyTorch 1.13's CPU arithmetic, operation for operation
// (batch_norm_cpu_update_stats_template): the variance and the unbiased variance are float
// divisions of the float sum, widened to double for the square root and the running update; the
// running mean is updated in float, each product rounded (its file is built without FMA, and
// GCC would contract `a * b + c * d` here into one: `volatile` keeps the roundings). Until
// session 27 ctnn squared double deviations and divided in double: 11 % of a BatchNorm2d's
// outputs then lay one unit in the last place from PyTorch's, and now none do.
inline void batchnorm_batch_channel(const float* px, float* py, std::size_t m, std::size_t total, int c,
                                    double mean_d, double var_sum_d, const BatchNormState& st, bool relu) {
  const float mean = static_cast<float>(mean_d);
  const float var_sum = static_cast<float>(var_sum_d);
  const float var = var_sum / static_cast<float>(total);
  const float invstd = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var) + batchnorm_eps));
  const float momentum = batchnorm_momentum;
  const volatile float new_part = momentum * mean, old_mean = (1 - momentum) * st.running_mean[c];
  st.running_mean[c] = new_part + old_mean;
  const double unbiased = var_sum / static_cast<float>(total - 1);
  const volatile double new_var = momentum * unbiased;
  const volatile float old_var = (1 - momentum) * st.running_var[c];
  st.running_var[c] = static_cast<float>(new_var + static_cast<double>(old_var));
  st.save_mean[c] = mean;
  st.save_invstd[c] = invstd;
  const float alpha = invstd * st.weight[c];
  // PyTorch's kernel fuses this one, as in running_affine: written as fma, not left to the
  // compiler (GCC at -O1 or with -ffp-contract=off kept the two roundings: y an ulp off).
  const float beta = std::fma(-mean, alpha, st.bias[c]);
  scale_shift(px, py, m, alpha, beta, relu);
}
}  // namespace detail

// Normalises `channels` runs of m values of x into y. With batch statistics (training) it uses
// the biased batch variance and updates the running statistics with the unbiased one; otherwise
// the running statistics. m >= 2 with batch statistics (the caller checks). With an active
// `sync` the statistics are those of the global batch: the per-channel sums are all-reduced
// (two exchanges of `channels` doubles), so every process normalises as one process would.
// With `relu`, y = relu(y) in the same pass (BatchNormLayer::forward_relu).
inline void batchnorm_forward(const float* x, float* y, int channels, std::size_t m, bool batch_stats,
                              const BatchNormState& st, const BatchNormSync& sync = {}, bool relu = false) {
  [[maybe_unused]] const bool parallel = channels * m > kThreadedWork;
  if (batch_stats && sync.active()) {
    const std::size_t total = sync.total;
    std::vector<double> sums(static_cast<std::size_t>(channels)), devs(sums.size());
    CTNN_OMP(parallel for schedule(static) if (parallel))
    for (int c = 0; c < channels; ++c) sums[c] = detail::channel_sum(x + c * m, m);
    sync.allreduce(sums.data(), sums.size(), sync.context);
    CTNN_OMP(parallel for schedule(static) if (parallel))
    for (int c = 0; c < channels; ++c)
      devs[c] = detail::channel_squared_deviations(x + c * m, m, sums[c] / static_cast<double>(total));
    sync.allreduce(devs.data(), devs.size(), sync.context);
    CTNN_OMP(parallel for schedule(static) if (parallel))
    for (int c = 0; c < channels; ++c)
      detail::batchnorm_batch_channel(x + c * m, y + c * m, m, total, c, sums[c] / static_cast<double>(total),
                                      devs[c], st, relu);
    return;
  }
  CTNN_OMP(parallel for schedule(static) if (parallel))
  for (int c = 0; c < channels; ++c) {
    const float* px = x + c * m;
    if (batch_stats) {
      const double mean_d = detail::channel_sum(px, m) / static_cast<double>(m);
      detail::batchnorm_batch_channel(px, y + c * m, m, m, c, mean_d,
                                      detail::channel_squared_deviations(px, m, mean_d), st, relu);
      continue;
    }
    float alpha, beta;
    detail::running_affine(st, c, alpha, beta);
    detail::scale_shift(px, y + c * m, m, alpha, beta, relu);
  }
}

// Evaluation's map, y = x * scale[c] + shift[c], from the running statistics as
// batchnorm_forward computes it (and what its backward would need, as it saves it): for a
// convolution before to apply in its own pass (Conv2dLayer::forward_folded).
inline void batchnorm_eval_map(int channels, const BatchNormState& st, float* scale, float* shift) {
  for (int c = 0; c < channels; ++c) detail::running_affine(st, c, scale[c], shift[c]);
}

// Adds the weight and bias gradients into dweight and dbias, and overwrites dx (unless null)
// with the input gradient; `batch_stats` and `sync` as in the forward it differentiates. Under an
// active sync, dweight and dbias get this share's part (the gradient all-reduce adds the
// shares), while dx needs the global sums, which are all-reduced once (2 x channels doubles).
// With `relu_y` (the forward's output after a following ReLU), dy is the gradient of that ReLU's
// output, masked here as the ReLU's backward would (relu_y > 0) instead of in a pass of its own.
// dx may be dy: each value is read before it is overwritten.
inline void batchnorm_backward(const float* x, const float* dy, float* dx, int channels, std::size_t m,
                               bool batch_stats, const BatchNormState& st, float* dweight, float* dbias,
                               const BatchNormSync& sync = {}, const float* relu_y = nullptr) {
  [[maybe_unused]] const bool parallel = channels * m > kThreadedWork;
  const bool synced = batch_stats && sync.active() && dx;
  std::vector<double> sums(synced ? 2 * static_cast<std::size_t>(channels) : 0);
  // The input gradient of channel c from the (global) sums of dy and of (x - mean) * dy.
  auto input_grad = [&](int c, double sum, double dotp, std::size_t total) {
    const float* px = x + c * m;
    const float* pg = dy + c * m;
    const float* py = relu_y ? relu_y + c * m : nullptr;
    float* pd = dx + c * m;
    const float mean = st.save_mean[c], invstd = st.save_invstd[c], w = st.weight[c];
    if (batch_stats) {
      // The mean and variance depend on x too: subtract their share of the gradient.
      const float k = static_cast<float>(dotp * invstd * invstd / static_cast<double>(total));
      const float grad_mean = static_cast<float>(sum / static_cast<double>(total));
      if (py)
        for (std::size_t i = 0; i < m; ++i) pd[i] = (relu_grad(py[i], pg[i]) - grad_mean - (px[i] - mean) * k) * invstd * w;
      else
        for (std::size_t i = 0; i < m; ++i) pd[i] = (pg[i] - grad_mean - (px[i] - mean) * k) * invstd * w;
    } else if (py) {
      for (std::size_t i = 0; i < m; ++i) pd[i] = relu_grad(py[i], pg[i]) * invstd * w;
    } else {
      for (std::size_t i = 0; i < m; ++i) pd[i] = pg[i] * invstd * w;
    }
  };
  CTNN_OMP(parallel for schedule(static) if (parallel))
  for (int c = 0; c < channels; ++c) {
    const float* px = x + c * m;
    const float* pg = dy + c * m;
    const float mean = st.save_mean[c], invstd = st.save_invstd[c];
    double sum = 0.0, dotp = 0.0;
    if (relu_y) {
      const float* py = relu_y + c * m;
      CTNN_OMP(simd reduction(+ : sum, dotp))
      for (std::size_t i = 0; i < m; ++i) {
        const float g = relu_grad(py[i], pg[i]);
        sum += g;
        dotp += static_cast<double>(px[i] - mean) * g;
      }
    } else {
      CTNN_OMP(simd reduction(+ : sum, dotp))
      for (std::size_t i = 0; i < m; ++i) {
        sum += pg[i];
        dotp += static_cast<double>(px[i] - mean) * pg[i];
      }
    }
    dweight[c] += static_cast<float>(dotp * invstd);
    dbias[c] += static_cast<float>(sum);
    if (synced) {
      sums[2 * c] = sum;
      sums[2 * c + 1] = dotp;
    } else if (dx) {
      input_grad(c, sum, dotp, m);
    }
  }
  if (!synced) return;
  sync.allreduce(sums.data(), sums.size(), sync.context);
  CTNN_OMP(parallel for schedule(static) if (parallel))
  for (int c = 0; c < channels; ++c) input_grad(c, sums[2 * c], sums[2 * c + 1], sync.total);
}

}  // namespace ctnn::ops
