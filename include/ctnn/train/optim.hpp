// Optimizers over a network's contiguous parameter and gradient buffers.
//
// An optimizer has step(), lr() and set_lr(double), and visit_state(v, prefix): everything a
// snapshot needs to continue exactly, through the StateVisitor of core/state.hpp (buffers for
// per-parameter state, counters for 0-d int64 values; the learning rate travels as the int64
// bit pattern of its double, so that nothing is rounded). Trainer takes any such optimizer;
// one with visit_options(f) (f(name, value) for each option) has its options kept in snapshots
// too, and a resume with other options refused.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "ctnn/core/state.hpp"
#include "ctnn/core/tensor.hpp"
#include "ctnn/core/threading.hpp"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace ctnn {

namespace detail {
// What every optimizer has: the two buffers, its options (with lr) and the steps taken.
template <class Options>
class OptimizerBase {
 public:
  double lr() const { return o_.lr; }
  void set_lr(double lr) {
    check_lr(lr, "set_lr");
    o_.lr = lr;
  }
  std::int64_t steps() const { return step_; }

 protected:
  OptimizerBase(std::span<float> params, std::span<const float> grads, Options o, const char* name)
      : p_(params), g_(grads), o_(o) {
    if (params.size() != grads.size())
      throw std::invalid_argument(std::string(name) + ": parameter and gradient sizes differ");
    check_lr(o.lr, name);
  }
  // PyTorch's optimizers refuse these too ("Invalid learning rate", ...), rather than train on NaNs.
  static void check_lr(double lr, const char* who) {
    if (!(lr >= 0.0) || !std::isfinite(lr))
      throw std::invalid_argument(std::string(who) + ": the learning rate must be finite and >= 0, got " + std::to_string(lr));
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
// Its CPU kernels fuse both moments' updates (add_ with alpha and addcmul_ are one fused
// multiply-add each, fma(g, 1-b1, b1 m) and fma((1-b2) g, g, b2 v)); the rest is unfused. The
// fused products are written as fma here: left to the compiler, `b2 v + (1-b2) g g` became
// fma(v, b2, ...) and missed PyTorch's v by an ulp in 3 of 10 elements.
struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

namespace detail {
struct AdamScalars {
  float b1, b2, a1, a2, step_size, bc2_sqrt, eps;
};

// Adam's update of one element.
inline void adam_element(float& p, float g, float& m, float& v, const AdamScalars& s) {
  m = std::fma(g, s.a1, m * s.b1);     // mul_(b1).add_(g, alpha=1-b1): a fused add
  v = std::fma(s.a2 * g, g, v * s.b2);  // mul_(b2).addcmul_(g, g, value=1-b2): fused too
  const float denom = std::sqrt(v) / s.bc2_sqrt + s.eps;
  p += -s.step_size * m / denom;
}

// The vector the update below runs on where the compiler targets AVX-512 or AVX2, with the two
// operations that are not arithmetic operators on it.
#if defined(__AVX512F__)
#define CTNN_ADAM_VECTOR 1
using AdamVector = __m512;
inline AdamVector adam_sqrt(AdamVector v) { return _mm512_sqrt_ps(v); }
inline AdamVector adam_fma(AdamVector a, AdamVector b, AdamVector c) { return _mm512_fmadd_ps(a, b, c); }
#elif defined(__AVX2__) && defined(__FMA__)
#define CTNN_ADAM_VECTOR 1
using AdamVector = __m256;
inline AdamVector adam_sqrt(AdamVector v) { return _mm256_sqrt_ps(v); }
inline AdamVector adam_fma(AdamVector a, AdamVector b, AdamVector c) { return _mm256_fmadd_ps(a, b, c); }
#endif

// Elements [begin, end), 16 or 8 at a time where the compiler targets AVX-512 or AVX2: the same
// operations on vector types (test_optim checks the bits against adam_element), fused where
// adam_element fuses, sqrt and division correctly rounded in both.
// Written out because std::sqrt may set errno, which kept the compiler's own vectoriser off
// the loop: scalar Adam was 5.7 % of a VGG16 and 13 % of a ResNet50_layer4 bf16 training step.
inline void adam_update(float* p, const float* g, float* m, float* v, std::size_t begin, std::size_t end,
                        const AdamScalars& s) {
  std::size_t i = begin;
#if CTNN_ADAM_VECTOR
  using V = AdamVector;
  constexpr std::size_t lanes = sizeof(V) / sizeof(float);
  const V a1 = V{} + s.a1;
  for (; i + lanes <= end; i += lanes) {
    V gv, mv, vv, pv;
    std::memcpy(&gv, g + i, sizeof(V));
    std::memcpy(&mv, m + i, sizeof(V));
    std::memcpy(&vv, v + i, sizeof(V));
    std::memcpy(&pv, p + i, sizeof(V));
    mv = adam_fma(gv, a1, mv * s.b1);
    vv = adam_fma(s.a2 * gv, gv, vv * s.b2);
    const V denom = adam_sqrt(vv) / s.bc2_sqrt + s.eps;
    pv += -s.step_size * mv / denom;
    std::memcpy(m + i, &mv, sizeof(V));
    std::memcpy(v + i, &vv, sizeof(V));
    std::memcpy(p + i, &pv, sizeof(V));
  }
#endif
  for (; i < end; ++i) adam_element(p[i], g[i], m[i], v[i], s);
}
}  // namespace detail

class Adam : public detail::OptimizerBase<AdamOptions> {
 public:
  using Options = AdamOptions;

  Adam(std::span<float> params, std::span<const float> grads, Options o = {})
      : OptimizerBase(params, grads, o, "Adam"), m_(params.size(), 0.0f), v_(params.size(), 0.0f) {
    if (!(o.beta1 >= 0.0 && o.beta1 < 1.0) || !(o.beta2 >= 0.0 && o.beta2 < 1.0))
      throw std::invalid_argument("Adam: betas must be in [0, 1), got " + std::to_string(o.beta1) + " and " +
                                  std::to_string(o.beta2));
    if (!(o.eps >= 0.0)) throw std::invalid_argument("Adam: eps must be >= 0, got " + std::to_string(o.eps));
  }
  template <class Net>
  explicit Adam(Net& net, Options o = {}) : Adam(net.parameters(), net.gradients(), o) {}

  void step() {
    ++step_;
    const double bc1 = 1.0 - std::pow(o_.beta1, static_cast<double>(step_));
    const double bc2 = 1.0 - std::pow(o_.beta2, static_cast<double>(step_));
    // Scalars as PyTorch forms them: 1 - beta in double, then rounded to float.
    const detail::AdamScalars s{static_cast<float>(o_.beta1),     static_cast<float>(o_.beta2),
                                static_cast<float>(1.0 - o_.beta1), static_cast<float>(1.0 - o_.beta2),
                                static_cast<float>(o_.lr / bc1),    static_cast<float>(std::sqrt(bc2)),
                                static_cast<float>(o_.eps)};
    const std::size_t n = p_.size(), block = 4096, blocks = (n + block - 1) / block;
    CTNN_OMP(parallel for schedule(static) if (n > kThreadedStream))
    for (std::size_t b = 0; b < blocks; ++b)
      detail::adam_update(p_.data(), g_.data(), m_.data(), v_.data(), b * block, std::min(n, (b + 1) * block), s);
  }

  // The options a snapshot keeps (and a resume checks), as f(name, value); lr is state.
  template <class F>
  void visit_options(F&& f) const {
    f("beta1", o_.beta1);
    f("beta2", o_.beta2);
    f("eps", o_.eps);
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
// Each `x + alpha y` is PyTorch 1.13's `add(y, alpha=...)`, whose CPU kernel is one fused
// multiply-add, fma(y, alpha, x); the products are written as std::fma, not left to the
// compiler's contraction (which GCC and clang apply differently, and not always to the term
// PyTorch fuses). Scalars: `1 - dampening` in double, then rounded to float, as PyTorch forms it.
struct SGDOptions {
  double lr = 1e-2, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
};

class SGD : public detail::OptimizerBase<SGDOptions> {
 public:
  using Options = SGDOptions;

  SGD(std::span<float> params, std::span<const float> grads, Options o)
      : OptimizerBase(params, grads, o, "SGD"), buf_(o.momentum != 0.0 ? params.size() : 0, 0.0f) {
    if (!(o.momentum >= 0.0) || !(o.weight_decay >= 0.0))
      throw std::invalid_argument("SGD: momentum and weight_decay must be >= 0");
    if (o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0))
      throw std::invalid_argument("SGD: Nesterov momentum requires a momentum and zero dampening");
  }
  template <class Net>
  SGD(Net& net, Options o) : SGD(net.parameters(), net.gradients(), o) {}

  void step() {
    const float lr = static_cast<float>(o_.lr), wd = static_cast<float>(o_.weight_decay);
    const float mom = static_cast<float>(o_.momentum), undamped = static_cast<float>(1.0 - o_.dampening);
    const bool first = step_++ == 0;
    const std::size_t n = p_.size();
    float* p = p_.data();
    const float* g = g_.data();
    float* buf = buf_.data();
    CTNN_OMP(parallel for simd schedule(static) if (n > kThreadedStream))
    for (std::size_t i = 0; i < n; ++i) {
      float d = g[i];
      if (wd != 0.0f) d = std::fma(p[i], wd, d);
      if (mom != 0.0f) {
        buf[i] = first ? d : std::fma(d, undamped, buf[i] * mom);
        d = o_.nesterov ? std::fma(buf[i], mom, d) : buf[i];
      }
      p[i] = std::fma(d, -lr, p[i]);
    }
  }

  // The options a snapshot keeps (and a resume checks), as f(name, value); lr is state.
  template <class F>
  void visit_options(F&& f) const {
    f("momentum", o_.momentum);
    f("dampening", o_.dampening);
    f("weight_decay", o_.weight_decay);
    f("nesterov", o_.nesterov ? 1.0 : 0.0);
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
