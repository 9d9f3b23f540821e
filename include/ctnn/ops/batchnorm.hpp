// BatchNorm's kernels on channel-major batches (each channel one contiguous run of m values), for
// sizes given at run time, with PyTorch's CPU arithmetic: double sums, float mean and variance
// sum, y = x * alpha + beta. BatchNormLayer (layers/batchnorm.hpp) is a typed shell over them.
#pragma once

#include <cmath>
#include <cstddef>

#include "ctnn/core/threading.hpp"  // kThreadedWork

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

// Normalises `channels` runs of m values of x into y. With batch statistics (training) it uses
// the biased batch variance and updates the running statistics with the unbiased one; otherwise
// the running statistics. m >= 2 with batch statistics (the caller checks).
inline void batchnorm_forward(const float* x, float* y, int channels, std::size_t m, bool batch_stats,
                              const BatchNormState& st) {
#pragma omp parallel for schedule(static) if (channels * m > kThreadedWork)
  for (int c = 0; c < channels; ++c) {
    const float* px = x + c * m;
    float mean, invstd;
    if (batch_stats) {
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (std::size_t i = 0; i < m; ++i) sum += px[i];
      const double mean_d = sum / static_cast<double>(m);
      double var_sum_d = 0.0;
#pragma omp simd reduction(+ : var_sum_d)
      for (std::size_t i = 0; i < m; ++i) {
        const double d = px[i] - mean_d;
        var_sum_d += d * d;
      }
      mean = static_cast<float>(mean_d);
      const float var_sum = static_cast<float>(var_sum_d);
      invstd = static_cast<float>(1.0 / std::sqrt(var_sum / static_cast<double>(m) + batchnorm_eps));
      const float momentum = batchnorm_momentum;
      st.running_mean[c] = momentum * mean + (1 - momentum) * st.running_mean[c];
      const double unbiased = var_sum / static_cast<double>(m - 1);
      st.running_var[c] = static_cast<float>(momentum * unbiased + (1 - momentum) * st.running_var[c]);
    } else {
      mean = st.running_mean[c];
      invstd = static_cast<float>(1.0 / std::sqrt(static_cast<double>(st.running_var[c]) + batchnorm_eps));
    }
    st.save_mean[c] = mean;
    st.save_invstd[c] = invstd;
    const float alpha = invstd * st.weight[c];
    const float beta = st.bias[c] - mean * alpha;
    float* py = y + c * m;
    for (std::size_t i = 0; i < m; ++i) py[i] = px[i] * alpha + beta;
  }
}

// Adds the weight and bias gradients into dweight and dbias, and overwrites dx (unless null)
// with the input gradient; `batch_stats` as in the forward it differentiates.
inline void batchnorm_backward(const float* x, const float* dy, float* dx, int channels, std::size_t m,
                               bool batch_stats, const BatchNormState& st, float* dweight, float* dbias) {
#pragma omp parallel for schedule(static) if (channels * m > kThreadedWork)
  for (int c = 0; c < channels; ++c) {
    const float* px = x + c * m;
    const float* pg = dy + c * m;
    const float mean = st.save_mean[c], invstd = st.save_invstd[c];
    double sum = 0.0, dotp = 0.0;
#pragma omp simd reduction(+ : sum, dotp)
    for (std::size_t i = 0; i < m; ++i) {
      sum += pg[i];
      dotp += static_cast<double>(px[i] - mean) * pg[i];
    }
    dweight[c] += static_cast<float>(dotp * invstd);
    dbias[c] += static_cast<float>(sum);
    if (!dx) continue;
    float* pd = dx + c * m;
    const float w = st.weight[c];
    if (batch_stats) {
      // The mean and variance depend on x too: subtract their share of the gradient.
      const float k = static_cast<float>(dotp * invstd * invstd / static_cast<double>(m));
      const float grad_mean = static_cast<float>(sum / static_cast<double>(m));
      for (std::size_t i = 0; i < m; ++i) pd[i] = (pg[i] - grad_mean - (px[i] - mean) * k) * invstd * w;
    } else {
      for (std::size_t i = 0; i < m; ++i) pd[i] = pg[i] * invstd * w;
    }
  }
}

}  // namespace ctnn::ops
