// BatchNorm2d and BatchNorm1d, with PyTorch's CPU arithmetic.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "ctnn/layers/layer.hpp"

namespace ctnn {

// Normalises each channel over the batch (and, for 2d, the spatial plane). Training uses the
// biased batch variance and updates running_var with the unbiased one; evaluation uses the
// running statistics. The arithmetic follows PyTorch's CPU kernel step by step (double sums,
// float mean and variance sum, y = x * alpha + beta) so parity tests can be tight.
template <class In, int C, bool OneD>
class BatchNormLayer : public LeafLayer<BatchNormLayer<In, C, OneD>, In, In> {
  static_assert(detail::sizes_agree<C, In::channels>::value,
                "BatchNorm: num_features (first number) differs from the channels of its input (second)");
  static_assert(!OneD || In::plane == 1, "BatchNorm1d: its input must be a flat feature vector");

 public:
  static constexpr int num_features = C;
  static constexpr double eps = 1e-5;
  static constexpr float momentum = 0.1f;

  Param weight, bias;
  std::vector<float> running_mean = std::vector<float>(C, 0.0f);
  std::vector<float> running_var = std::vector<float>(C, 1.0f);
  std::int64_t num_batches_tracked = 0;

  static std::string type_name() {
    return std::string(OneD ? "BatchNorm1d(" : "BatchNorm2d(") + std::to_string(C) +
           ", eps=1e-05, momentum=0.1)";
  }

  void visit_state(StateVisitor& v, const std::string& prefix) {
    weight.numel = bias.numel = C;
    v.parameter(join_key(prefix, "weight"), {C}, weight);
    v.parameter(join_key(prefix, "bias"), {C}, bias);
    v.buffer(join_key(prefix, "running_mean"), {C}, running_mean);
    v.buffer(join_key(prefix, "running_var"), {C}, running_var);
    v.counter(join_key(prefix, "num_batches_tracked"), num_batches_tracked);
  }

  void reset_parameters(Rng&) {
    std::fill(weight.value, weight.value + C, 1.0f);
    std::fill(bias.value, bias.value + C, 0.0f);
    std::fill(running_mean.begin(), running_mean.end(), 0.0f);
    std::fill(running_var.begin(), running_var.end(), 1.0f);
    num_batches_tracked = 0;
  }

  const Batch<In>& forward(const Batch<In>& x) {
    auto& y = this->y_;
    y.resize(x.batch());
    const std::size_t m = x.channel_stride();
    const bool batch_stats = this->training_;
    if (batch_stats) {
      if (m < 2) throw std::invalid_argument("BatchNorm: training needs more than one value per channel");
      ++num_batches_tracked;
    }
#pragma omp parallel for schedule(static) if (x.size() > (1u << 15))
    for (int c = 0; c < C; ++c) {
      const float* px = x.channel(c);
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
        invstd = static_cast<float>(1.0 / std::sqrt(var_sum / static_cast<double>(m) + eps));
        running_mean[c] = momentum * mean + (1 - momentum) * running_mean[c];
        const double unbiased = var_sum / static_cast<double>(m - 1);
        running_var[c] = static_cast<float>(momentum * unbiased + (1 - momentum) * running_var[c]);
      } else {
        mean = running_mean[c];
        invstd = static_cast<float>(1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps));
      }
      save_mean_[c] = mean;
      save_invstd_[c] = invstd;
      const float alpha = invstd * weight.value[c];
      const float beta = bias.value[c] - mean * alpha;
      float* py = y.channel(c);
      for (std::size_t i = 0; i < m; ++i) py[i] = px[i] * alpha + beta;
    }
    return y;
  }

  void backward(const Batch<In>& x, const Batch<In>& dy, Batch<In>* dx) {
    const std::size_t m = x.channel_stride();
    if (dx) dx->resize(x.batch());
#pragma omp parallel for schedule(static) if (x.size() > (1u << 15))
    for (int c = 0; c < C; ++c) {
      const float* px = x.channel(c);
      const float* pg = dy.channel(c);
      const float mean = save_mean_[c], invstd = save_invstd_[c];
      double sum = 0.0, dotp = 0.0;
#pragma omp simd reduction(+ : sum, dotp)
      for (std::size_t i = 0; i < m; ++i) {
        sum += pg[i];
        dotp += static_cast<double>(px[i] - mean) * pg[i];
      }
      weight.grad[c] += static_cast<float>(dotp * invstd);
      bias.grad[c] += static_cast<float>(sum);
      if (!dx) continue;
      float* pd = dx->channel(c);
      const float w = weight.value[c];
      if (this->training_) {
        // The mean and variance depend on x too: subtract their share of the gradient.
        const float k = static_cast<float>(dotp * invstd * invstd / static_cast<double>(m));
        const float grad_mean = static_cast<float>(sum / static_cast<double>(m));
        for (std::size_t i = 0; i < m; ++i)
          pd[i] = (pg[i] - grad_mean - (px[i] - mean) * k) * invstd * w;
      } else {
        for (std::size_t i = 0; i < m; ++i) pd[i] = pg[i] * invstd * w;
      }
    }
  }

 private:
  std::vector<float> save_mean_ = std::vector<float>(C), save_invstd_ = std::vector<float>(C);
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
