// Non-finite values in training: a cheap test for the hot path, and, once something is wrong,
// the diagnosis that names the layer where it first appeared by its state_dict key.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>

#include "ctnn/core/state.hpp"
#include "ctnn/core/threading.hpp"
#include "ctnn/layers/leaf.hpp"

// Training stops on a NaN or infinite loss or gradient before the optimizer's step, and refuses
// NaN options and snapshot values; -ffinite-math-only (part of -ffast-math) lets the compiler
// assume no value is NaN or infinite and delete those tests, and a run would then go on with NaN
// weights. The rest of -ffast-math may stay.
#if defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__
#error "ctnn's training checks for NaN and infinity, which -ffinite-math-only (part of -ffast-math) removes: add -fno-finite-math-only"
#endif

namespace ctnn {

// True when every value is finite. A test of the exponent bits, so it vectorises; one pass over
// the data, threaded for large arrays. About 0.1 ms per million values on one core (memory
// bound).
//
// Threads share blocks, each block's lanes reduced by `simd`: not the combined `parallel for simd
// reduction(...)`, whose reduction clang 14 at -O1 and -Og compiles to keep one vector lane's
// result (a NaN at 15 of every 16 positions went unseen with AVX-512, 3 of 4 with SSE2).
inline bool all_finite(std::span<const float> v) {
  constexpr std::size_t kBlock = 4096;
  const float* p = v.data();
  const std::size_t n = v.size();
  std::uint32_t bad = 0;
  CTNN_OMP(parallel for schedule(static) reduction(| : bad) if (n > kThreadedScan))
  for (std::size_t b = 0; b < n; b += kBlock) {
    const std::size_t end = std::min(n, b + kBlock);
    std::uint32_t block = 0;
    CTNN_OMP(simd reduction(| : block))
    for (std::size_t i = b; i < end; ++i) block |= (std::bit_cast<std::uint32_t>(p[i]) & 0x7f800000u) == 0x7f800000u;
    bad |= block;
  }
  return bad == 0;
}

// "NaN", "inf" or "-inf" for the first non-finite value of v ("finite" if there is none).
inline std::string first_non_finite(std::span<const float> v) {
  for (float x : v)
    if (!std::isfinite(x)) return std::isnan(x) ? "NaN" : (x > 0 ? "inf" : "-inf");
  return "finite";
}

// Training met a NaN or an infinity. what() is the whole story, e.g.
//   step 37 (epoch 1, batch 37 of 500): loss is NaN; first non-finite value in the output of
//   features.3 (Conv2d); stopped before the optimizer step: the last good checkpoint is
//   out/vgg16_resume.ckpt (step 30)
class NumericalError : public std::runtime_error {
 public:
  NumericalError(const std::string& message, long at_step, std::string in_layer)
      : std::runtime_error(message), step(at_step), layer(std::move(in_layer)) {}
  long step;          // 1-based, counted over the whole run
  std::string layer;  // the layer's state_dict prefix ("features.3"), empty if none is to blame
};

namespace detail {

// "Conv2d" from "Conv2d(3, 64, kernel_size=3, ...)".
inline std::string short_type(const std::string& type_name) { return type_name.substr(0, type_name.find('(')); }

// The first parameter or buffer of one layer holding a non-finite value, with its gradient
// too when `gradients` is set.
struct FiniteProbe : StateVisitor {
  bool gradients = false;
  std::string found;  // "weight" (or "gradient of weight")
  std::string kind;   // NaN / inf / -inf
  std::string prefix;
  void check(const std::string& name, std::span<const float> v) {
    if (found.empty() && !all_finite(v)) {
      found = name.size() > prefix.size() && !prefix.empty() ? name.substr(prefix.size() + 1) : name;
      kind = first_non_finite(v);
    }
  }
  void parameter(const std::string& name, const TensorShape&, Param& p) override {
    check(name, gradients ? std::span<const float>(p.gradient()) : std::span<const float>(p.data()));
  }
  void buffer(const std::string& name, const TensorShape&, std::span<float> data) override {
    if (!gradients) check(name, data);
  }
};

inline std::string bad_state_of(Leaf& layer, const std::string& name, bool gradients) {
  FiniteProbe probe;
  probe.gradients = gradients;
  probe.prefix = name;
  layer.visit_state(probe, name);
  return probe.found.empty() ? std::string() : probe.found + " holds " + probe.kind;
}

}  // namespace detail

// Where the forward pass first went non-finite: the first leaf layer, in forward order, whose
// output holds a NaN or an infinity, and whether its own weights already did. Returns the
// sentence and sets `layer` to its key; empty `layer` if the input or the loss is to blame.
template <class Net>
std::string locate_forward_fault(Net& net, std::span<const float> input, std::string& layer) {
  layer.clear();
  if (!all_finite(input)) return "the input batch itself holds " + first_non_finite(input) + " values";
  std::string sentence;
  for_each_leaf(net, [&](Leaf& l, const std::string& name) {
    if (!layer.empty()) return;
    const std::span<const float> out = l.output();
    if (all_finite(out)) return;
    layer = name;
    sentence = "first non-finite value (" + first_non_finite(out) + ") in the output of " + name + " (" +
               detail::short_type(l.type_name()) + ")";
    const std::string bad = detail::bad_state_of(l, name, false);
    if (!bad.empty()) sentence += "; its " + bad + " already";
  });
  if (layer.empty()) sentence = "every layer's output is finite: the loss itself overflowed (logits too large)";
  return sentence;
}

// Where the backward pass first went non-finite: walking back from the loss, the first layer
// whose parameter gradient holds a NaN or an infinity (layers without parameters, such as ReLU,
// cannot be inspected: the culprit is this layer or one between it and the next layer after it
// that has parameters).
template <class Net>
std::string locate_gradient_fault(Net& net, std::string& layer) {
  layer.clear();
  std::string sentence;
  for_each_leaf(net, [&](Leaf& l, const std::string& name) {  // forward order; the last hit wins
    const std::string bad = detail::bad_state_of(l, name, true);
    if (bad.empty()) return;
    layer = name;
    sentence = "first non-finite gradient going back from the loss in " + name + " (" +
               detail::short_type(l.type_name()) + "): the gradient of its " + bad;
  });
  if (layer.empty()) sentence = "no parameter gradient is non-finite";
  return sentence;
}

// The first parameter or buffer of the network (state_dict order) holding a non-finite value:
// "layer4.0.conv2 (Conv2d): weight holds NaN", or empty if all are finite.
template <class Net>
std::string locate_bad_state(Net& net, std::string& layer) {
  layer.clear();
  std::string sentence;
  for_each_leaf(net, [&](Leaf& l, const std::string& name) {
    if (!layer.empty()) return;
    const std::string bad = detail::bad_state_of(l, name, false);
    if (bad.empty()) return;
    layer = name;
    sentence = name + " (" + detail::short_type(l.type_name()) + "): " + bad;
  });
  return sentence;
}

}  // namespace ctnn
