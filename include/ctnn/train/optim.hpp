// Optimizers over a network's contiguous parameter and gradient buffers.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include "ctnn/core/tensor.hpp"

namespace ctnn {

// torch.optim.Adam (weight_decay = 0, amsgrad off), with PyTorch 1.13's single-tensor update:
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The bias corrections are computed in double and applied as float scalars, as PyTorch does.
struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

class Adam {
 public:
  using Options = AdamOptions;

  Adam(std::span<float> params, std::span<const float> grads, Options o = {})
      : p_(params), g_(grads), o_(o), m_(params.size(), 0.0f), v_(params.size(), 0.0f) {
    if (params.size() != grads.size()) throw std::invalid_argument("Adam: parameter and gradient sizes differ");
  }
  template <class Net>
  explicit Adam(Net& net, Options o = {}) : Adam(net.parameters(), net.gradients(), o) {}

  void step() {
    ++step_;
    const double bc1 = 1.0 - std::pow(o_.beta1, static_cast<double>(step_));
    const double bc2 = 1.0 - std::pow(o_.beta2, static_cast<double>(step_));
    // Scalars as PyTorch forms them: 1 - beta in double, then rounded to float.
    const float b1 = static_cast<float>(o_.beta1), b2 = static_cast<float>(o_.beta2);
    const float a1 = static_cast<float>(1.0 - o_.beta1), a2 = static_cast<float>(1.0 - o_.beta2);
    const float step_size = static_cast<float>(o_.lr / bc1);
    const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    const float eps = static_cast<float>(o_.eps);
    const std::size_t n = p_.size();
    float* p = p_.data();
    const float* g = g_.data();
    float* m = m_.data();
    float* v = v_.data();
#pragma omp parallel for simd schedule(static) if (n > (1u << 16))
    for (std::size_t i = 0; i < n; ++i) {
      m[i] = std::fma(g[i], a1, m[i] * b1);   // mul_(b1).add_(g, alpha=1-b1): a fused add
      v[i] = v[i] * b2 + a2 * g[i] * g[i];     // mul_(b2).addcmul_(g, g, value=1-b2)
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      p[i] += -step_size * m[i] / denom;
    }
  }

  double lr() const { return o_.lr; }
  void set_lr(double lr) { o_.lr = lr; }
  std::int64_t steps() const { return step_; }

  // State for checkpoints and exact resumption.
  std::span<float> exp_avg() { return m_; }
  std::span<float> exp_avg_sq() { return v_; }
  void set_steps(std::int64_t s) { step_ = s; }

 private:
  std::span<float> p_;
  std::span<const float> g_;
  Options o_;
  AlignedFloats m_, v_;
  std::int64_t step_ = 0;
};

// torch.optim.SGD with momentum, dampening, weight decay and optional Nesterov momentum:
//   d = g + wd p;  buf = d (first step) or momentum buf + (1 - dampening) d;
//   d = nesterov ? d + momentum buf : buf;  p -= lr d
struct SGDOptions {
  double lr = 1e-2, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
};

class SGD {
 public:
  using Options = SGDOptions;

  SGD(std::span<float> params, std::span<const float> grads, Options o)
      : p_(params), g_(grads), o_(o), buf_(o.momentum != 0.0 ? params.size() : 0, 0.0f) {
    if (params.size() != grads.size()) throw std::invalid_argument("SGD: parameter and gradient sizes differ");
    if (o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0))
      throw std::invalid_argument("SGD: Nesterov momentum requires a momentum and zero dampening");
  }
  template <class Net>
  SGD(Net& net, Options o) : SGD(net.parameters(), net.gradients(), o) {}

  void step() {
    const float lr = static_cast<float>(o_.lr), wd = static_cast<float>(o_.weight_decay);
    const float mom = static_cast<float>(o_.momentum), damp = static_cast<float>(o_.dampening);
    const bool first = !started_;
    started_ = true;
    const std::size_t n = p_.size();
    float* p = p_.data();
    const float* g = g_.data();
    float* buf = buf_.data();
#pragma omp parallel for simd schedule(static) if (n > (1u << 16))
    for (std::size_t i = 0; i < n; ++i) {
      float d = g[i];
      if (wd != 0.0f) d += wd * p[i];
      if (mom != 0.0f) {
        buf[i] = first ? d : buf[i] * mom + (1.0f - damp) * d;
        d = o_.nesterov ? d + mom * buf[i] : buf[i];
      }
      p[i] += -lr * d;
    }
  }

  double lr() const { return o_.lr; }
  void set_lr(double lr) { o_.lr = lr; }
  std::span<float> momentum_buffer() { return buf_; }

 private:
  std::span<float> p_;
  std::span<const float> g_;
  Options o_;
  AlignedFloats buf_;
  bool started_ = false;
};

}  // namespace ctnn
