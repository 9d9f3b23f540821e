// Shared test helpers: PyTorch-layout conversion, closeness checks, a finite-difference
// gradient checker that works on any ctnn::Network.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "ctnn/ctnn.hpp"
#include "support/golden.hpp"

// 1 in a build with AddressSanitizer (GCC's and clang's spelling), whose allocator reports
// some allocations a test makes on purpose (one too large for any memory) as errors.
#if defined(__SANITIZE_ADDRESS__)
#define CTNN_TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CTNN_TEST_UNDER_ASAN 1
#endif
#endif
#ifndef CTNN_TEST_UNDER_ASAN
#define CTNN_TEST_UNDER_ASAN 0
#endif

namespace ctnn::test {

// The bit patterns of floats, for checks that two computations agree bit for bit (-0 and NaN
// payloads included).
inline std::vector<std::uint32_t> bit_patterns(std::span<const float> v) {
  std::vector<std::uint32_t> b(v.size());
  std::transform(v.begin(), v.end(), b.begin(), [](float f) { return std::bit_cast<std::uint32_t>(f); });
  return b;
}

// A batch from a golden NCHW (or [N, F]) array.
template <class S>
Batch<S> batch_from(const Golden& g, const std::string& name) {
  const auto& a = g[name];
  REQUIRE(a.numel() % S::size == 0);
  const auto values = g.floats(name);
  Batch<S> b;
  b.from_nchw(values.data(), static_cast<int>(a.numel() / S::size));
  return b;
}

inline void set_values(std::span<float> dst, const std::vector<float>& src) {
  REQUIRE(dst.size() == src.size());
  std::copy(src.begin(), src.end(), dst.begin());
}

// A Conv2d's or Linear's weight and bias from a golden file's "weight" and "bias".
template <class L>
void set_affine(L& layer, const Golden& g) {
  set_values(layer.weight.data(), g.floats("weight"));
  set_values(layer.bias.data(), g.floats("bias"));
}

// Every element within atol + rtol * |expected|. Reports the worst element on failure.
inline void expect_close(std::span<const float> actual, const std::vector<double>& expected, double rtol,
                         double atol, const std::string& what) {
  REQUIRE_MESSAGE(actual.size() == expected.size(), what << ": size " << actual.size() << " vs " << expected.size());
  std::size_t worst = 0;
  double worst_excess = -1.0;
  bool ok = true;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double err = std::abs(static_cast<double>(actual[i]) - expected[i]);
    const double allowed = atol + rtol * std::abs(expected[i]);
    if (!(err <= allowed)) ok = false;
    const double excess = err - allowed;
    if (!(excess <= worst_excess)) {
      worst_excess = excess;
      worst = i;
    }
  }
  CHECK_MESSAGE(ok, what << ": element " << worst << " is " << actual[worst] << ", expected " << expected[worst]
                         << " (rtol " << rtol << ", atol " << atol << ")");
}
inline void expect_close(const std::vector<float>& actual, const std::vector<double>& expected, double rtol,
                         double atol, const std::string& what) {
  expect_close(std::span<const float>(actual), expected, rtol, atol, what);
}

// Float32 parity with PyTorch: both sides round every operation to float, in a possibly
// different order (GEMM blocking, vectorised sums), so values agree to a few units in the
// last place of the operands' magnitude: relative 1e-5, and an absolute floor of 1e-5 times
// the array's largest magnitude for elements that are sums cancelling to near zero.
inline void expect_parity(std::span<const float> actual, const std::vector<double>& expected,
                          const std::string& what) {
  double scale = 0.0;
  for (double v : expected) scale = std::max(scale, std::abs(v));
  expect_close(actual, expected, 1e-5, 1e-5 * scale, what);
}
inline void expect_parity(const std::vector<float>& actual, const std::vector<double>& expected,
                          const std::string& what) {
  expect_parity(std::span<const float>(actual), expected, what);
}

// Finite-difference gradient check of a Network against its backward().
//
// The scalar checked is L = sum_i r_i * y_i with fixed random weights r, so dL/dy = r and
// backward(x, r) must give dL/dx and dL/dparameters. L+ - L- is summed in double; each output
// that the perturbation moves carries float rounding of relative size 2^-24, and the central
// difference divides that by 2h: this is the absolute tolerance (times a safety factor for the
// rounding of the layers in between). The relative tolerance covers the O(h^2) truncation
// error of the central difference on smooth functions.
//
// ReLU and max pooling make L piecewise smooth. A difference quotient across a kink measures
// nothing, so each check records the network's activation pattern (every ReLU's on/off mask
// and every max pool's chosen indices) at x, x+h and x-h; if the pattern changes, h is cut by
// 10 (up to twice) and, if it still changes, the element is counted as skipped, not
// passed. require_gradients_ok() demands that at most 5% are skipped unless told otherwise.
struct GradCheckOptions {
  double h = 1e-2;
  double rtol = 2e-3;
  double safety = 64.0;
  std::size_t max_inputs = 400;   // checked elements of x (evenly spread) ...
  std::size_t max_params = 400;   // ... and of the parameters
  std::uint64_t seed = 1;
};

struct GradCheckReport {
  std::size_t checked = 0, failed = 0, skipped = 0;
  double worst_ratio = 0.0;  // max |num - ana| / allowed
  std::string worst;
};

template <class L>
struct is_relu : std::false_type {};
template <class S>
struct is_relu<ReLULayer<S>> : std::true_type {};

// A hash of which side of every kink the last forward was on.
template <class Net>
std::uint64_t activation_pattern(Net& net) {
  std::uint64_t h = 0x9e3779b97f4a7c15ULL;
  net.for_each_layer([&](auto& layer, const std::string&) {
    using L = std::decay_t<decltype(layer)>;
    if constexpr (is_relu<L>::value) {
      const auto& y = layer.output();
      for (std::size_t i = 0; i < y.size(); ++i) h = mix64(h ^ (y.data()[i] > 0.0f ? i * 2 + 1 : i * 2));
    } else if constexpr (requires { layer.indices(); }) {
      for (auto idx : layer.indices()) h = mix64(h ^ static_cast<std::uint64_t>(idx));
    }
  });
  return h;
}

template <class Net>
GradCheckReport gradient_check(Net& net, const typename Net::Input& x0, const GradCheckOptions& o = {},
                               const std::function<void()>& before_forward = {}) {
  using Out = typename Net::Output;
  typename Net::Input x = x0;
  const int n = x.batch();
  Out r(n);
  Rng rng(o.seed);
  for (std::size_t i = 0; i < r.size(); ++i) r.data()[i] = static_cast<float>(rng.uniform(-1.0, 1.0));

  // Runs the network, returns its output and the activation pattern.
  auto run = [&](std::vector<float>& y_out) {
    if (before_forward) before_forward();
    const Out& y = net.forward(x);
    y_out.assign(y.data(), y.data() + y.size());
    return activation_pattern(net);
  };

  std::vector<float> y0, yp, ym;
  const std::uint64_t base_pattern = run(y0);
  typename Net::Input dx;
  net.zero_grad();
  net.backward(x, r, dx);
  const std::vector<float> grad_x(dx.data(), dx.data() + dx.size());
  const std::vector<float> grad_p(net.gradients().begin(), net.gradients().end());

  // The analytic gradients are float sums too: allow each an error of 2^-20 (16 ulp) of the
  // largest gradient of its group, so a gradient that is zero in exact arithmetic (a bias that
  // BatchNorm cancels) and comes out as rounding noise is not a failure.
  auto largest = [](const std::vector<float>& g) {
    double m = 0.0;
    for (float v : g) m = std::max(m, std::abs(static_cast<double>(v)));
    return m;
  };
  const double floor_x = std::ldexp(largest(grad_x), -20), floor_p = std::ldexp(largest(grad_p), -20);
  double floor = floor_x;

  GradCheckReport rep;
  auto check = [&](float& v, float analytic, const std::string& label) {
    const float saved = v;
    double h = o.h;
    for (int attempt = 0; attempt < 3; ++attempt, h /= 10) {
      v = static_cast<float>(saved + h);
      const double hp = static_cast<double>(v) - saved;  // the step actually taken in float
      const std::uint64_t pp = run(yp);
      v = static_cast<float>(saved - h);
      const double hm = saved - static_cast<double>(v);
      const std::uint64_t pm = run(ym);
      v = saved;
      if (pp != base_pattern || pm != base_pattern) continue;  // crossed a kink: smaller step
      // Outputs the perturbation does not reach come out bit-identical and cancel exactly;
      // only the ones that moved carry rounding, of relative size 2^-24 each.
      double diff = 0.0, moved = 0.0;
      for (std::size_t i = 0; i < yp.size(); ++i) {
        diff += static_cast<double>(r.data()[i]) * (static_cast<double>(yp[i]) - ym[i]);
        if (yp[i] != ym[i]) moved += std::abs(static_cast<double>(r.data()[i])) * (std::abs(yp[i]) + std::abs(ym[i]));
      }
      const double numeric = diff / (hp + hm);
      const double atol = floor + o.safety * std::ldexp(moved, -24) / (hp + hm);
      const double allowed = atol + o.rtol * std::max(std::abs(numeric), std::abs(static_cast<double>(analytic)));
      const double ratio = std::abs(numeric - analytic) / allowed;
      ++rep.checked;
      if (!(ratio <= 1.0)) ++rep.failed;
      if (!(ratio <= rep.worst_ratio)) {
        rep.worst_ratio = ratio;
        rep.worst = label + ": numeric " + std::to_string(numeric) + " analytic " + std::to_string(analytic) +
                    " (h " + std::to_string(h) + ", allowed error " + std::to_string(allowed) + ")";
      }
      return;
    }
    ++rep.skipped;
  };
  const std::size_t xs = x.size();
  const std::size_t xstep = std::max<std::size_t>(1, xs / o.max_inputs);
  for (std::size_t i = 0; i < xs; i += xstep) check(x.data()[i], grad_x[i], "input[" + std::to_string(i) + "]");
  floor = floor_p;
  auto params = net.parameters();
  const std::size_t ps = params.size();
  const std::size_t pstep = std::max<std::size_t>(1, ps / o.max_params);
  for (std::size_t i = 0; i < ps; i += pstep) check(params[i], grad_p[i], "param[" + std::to_string(i) + "]");
  return rep;
}

inline void require_gradients_ok(const GradCheckReport& rep, double max_skipped_fraction = 0.05) {
  INFO("worst: " << rep.worst << " (" << rep.worst_ratio << " of the allowed error); " << rep.checked
                  << " checked, " << rep.skipped << " skipped at kinks");
  CHECK(rep.checked > 0);
  CHECK(rep.failed == 0);
  CHECK(static_cast<double>(rep.skipped) <= max_skipped_fraction * static_cast<double>(rep.checked + rep.skipped));
}

// Uniform random values in [lo, hi) but at least `gap` away from zero, for inputs of layers
// with a kink at zero (ReLU), so a finite difference never straddles it.
template <class S>
Batch<S> random_batch(int n, std::uint64_t seed, double lo = -1.0, double hi = 1.0, double gap = 0.0) {
  Batch<S> b(n);
  Rng rng(seed);
  for (std::size_t i = 0; i < b.size(); ++i) {
    double v;
    do v = rng.uniform(lo, hi);
    while (std::abs(v) < gap);
    b.data()[i] = static_cast<float>(v);
  }
  return b;
}

}  // namespace ctnn::test

namespace ctnn::test {

// Sets every parameter, buffer and counter of a network from golden arrays named
// `<prefix><state_dict key>`.
struct GoldenStateLoader : StateVisitor {
  const Golden& g;
  std::string prefix;
  GoldenStateLoader(const Golden& golden, std::string p) : g(golden), prefix(std::move(p)) {}
  void parameter(const std::string& name, const TensorShape& shape, Param& p) override {
    CHECK(g[prefix + name].shape == std::vector<long long>(shape.begin(), shape.end()));
    set_values(p.data(), g.floats(prefix + name));
  }
  void buffer(const std::string& name, const TensorShape&, std::span<float> data) override {
    set_values(data, g.floats(prefix + name));
  }
  void counter(const std::string& name, std::int64_t& value) override {
    value = static_cast<std::int64_t>(g[prefix + name].values.at(0));
  }
};

// Compares every parameter, buffer and counter with golden arrays `<prefix><key>`; `tolerance`
// may give a key its own absolute tolerance (with the reason at the call site).
struct GoldenStateComparer : StateVisitor {
  const Golden& g;
  std::string prefix;
  std::function<double(const std::string&)> atol_for;
  GoldenStateComparer(const Golden& golden, std::string p, std::function<double(const std::string&)> f = {})
      : g(golden), prefix(std::move(p)), atol_for(std::move(f)) {}
  void compare(const std::string& name, std::span<const float> v) {
    const double atol = atol_for ? atol_for(name) : 0.0;
    if (atol > 0.0) expect_close(v, g[prefix + name].values, 0.0, atol, prefix + name);
    else expect_parity(v, g[prefix + name].values, prefix + name);
  }
  void parameter(const std::string& name, const TensorShape&, Param& p) override { compare(name, p.data()); }
  void buffer(const std::string& name, const TensorShape&, std::span<float> data) override { compare(name, data); }
  void counter(const std::string& name, std::int64_t& value) override {
    const std::string key = prefix + name;
    CHECK_MESSAGE(value == static_cast<std::int64_t>(g[key].values.at(0)), key);
  }
};

}  // namespace ctnn::test
