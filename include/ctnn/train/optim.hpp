// Optimizers over a network's contiguous parameter and gradient buffers.
//
// An optimizer has step(), lr() and set_lr(double), and visit_state(v, prefix): everything a
// snapshot needs to continue exactly, through the StateVisitor of core/state.hpp (buffers for
// per-parameter state, counters for 0-d int64 values; the learning rate travels as the int64
// bit pattern of its double, so that nothing is rounded). Trainer takes any such optimizer.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "ctnn/core/state.hpp"
#include "ctnn/core/tensor.hpp"
#include "ctnn/core/threading.hpp"

namespace ctnn {

namespace detail {
// What every optimizer has: the two buffers, its options (with lr) and the steps taken.
template <class Options>
class OptimizerBase {
 public:
  double lr() const { return o_.lr; }
  void set_lr(double lr) { o_.lr = lr; }
  std::int64_t steps() const { return step_; }

 protected:
  OptimizerBase(std::span<float> params, std::span<const float> grads, Options o, const char* name)
      : p_(params), g_(grads), o_(o) {
    if (params.size() != grads.size())
      throw std::invalid_argument(std::string(name) + ": parameter and gradient sizes differ");
  }
  // The last entries of visit_state: step, then the learning rate as the int64 bits of its
  // double (read, and written back).
  void visit_step_and_lr(StateVisitor& v, const std::string& prefix) {
    v.counter(join_key(prefix, "step"), step_);
    auto bits = std::bit_cast<std::int64_t>(o_.lr);
    v.counter(join_key(prefix, "lr_bits"), bits);
    o_.lr = std::bit_cast<double>(bits);
  }

  std::span<float> p_;
  std::span<const float> g_;
  Options o_;
  std::int64_t step_ = 0;
};
}  // namespace detail

// torch.optim.Adam (weight_decay = 0, amsgrad off), with PyTorch 1.13's single-tensor update:
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The bias corrections are computed in double and applied as float scalars, as PyTorch does.
struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

class Adam : public detail::OptimizerBase<AdamOptions> {
 public:
  using Options = AdamOptions;

  Adam(std::span<float> params, std::span<const float> grads, Options o = {})
      : OptimizerBase(params, grads, o, "Adam"), m_(params.size(), 0.0f), v_(params.size(), 0.0f) {}
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
#pragma omp parallel for simd schedule(static) if (n > kThreadedStream)
    for (std::size_t i = 0; i < n; ++i) {
      m[i] = std::fma(g[i], a1, m[i] * b1);   // mul_(b1).add_(g, alpha=1-b1): a fused add
      v[i] = v[i] * b2 + a2 * g[i] * g[i];     // mul_(b2).addcmul_(g, g, value=1-b2)
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      p[i] += -step_size * m[i] / denom;
    }
  }

  // torch.optim.Adam's state names: exp_avg, exp_avg_sq, step; then lr_bits.
  void visit_state(StateVisitor& v, const std::string& prefix) {
    const TensorShape flat{static_cast<std::int64_t>(m_.size())};
    v.buffer(join_key(prefix, "exp_avg"), flat, m_);
    v.buffer(join_key(prefix, "exp_avg_sq"), flat, v_);
    visit_step_and_lr(v, prefix);
  }

 private:
  AlignedFloats m_, v_;
};

// torch.optim.SGD with momentum, dampening, weight decay and optional Nesterov momentum:
//   d = g + wd p;  buf = d (first step) or momentum buf + (1 - dampening) d;
//   d = nesterov ? d + momentum buf : buf;  p -= lr d
struct SGDOptions {
  double lr = 1e-2, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
};

class SGD : public detail::OptimizerBase<SGDOptions> {
 public:
  using Options = SGDOptions;

  SGD(std::span<float> params, std::span<const float> grads, Options o)
      : OptimizerBase(params, grads, o, "SGD"), buf_(o.momentum != 0.0 ? params.size() : 0, 0.0f) {
    if (o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0))
      throw std::invalid_argument("SGD: Nesterov momentum requires a momentum and zero dampening");
  }
  template <class Net>
  SGD(Net& net, Options o) : SGD(net.parameters(), net.gradients(), o) {}

  void step() {
    const float lr = static_cast<float>(o_.lr), wd = static_cast<float>(o_.weight_decay);
    const float mom = static_cast<float>(o_.momentum), damp = static_cast<float>(o_.dampening);
    const bool first = step_++ == 0;
    const std::size_t n = p_.size();
    float* p = p_.data();
    const float* g = g_.data();
    float* buf = buf_.data();
#pragma omp parallel for simd schedule(static) if (n > kThreadedStream)
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

  // torch.optim.SGD's state name momentum_buffer (with momentum only), the steps taken (the
  // first step starts the buffer), then lr_bits.
  void visit_state(StateVisitor& v, const std::string& prefix) {
    if (!buf_.empty()) v.buffer(join_key(prefix, "momentum_buffer"), {static_cast<std::int64_t>(buf_.size())}, buf_);
    visit_step_and_lr(v, prefix);
  }

 private:
  AlignedFloats buf_;
};

}  // namespace ctnn
