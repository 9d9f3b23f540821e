// Adam and SGD: three training steps of a small network match PyTorch's parameters, buffers and
// losses; plus the update rules on hand-checkable values.
#include "support/check.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <vector>

using namespace ctnn;
using namespace ctnn::test;

namespace {

// The fixture's torch.nn.Sequential: Conv2d(3,4,3,padding=1), BatchNorm2d(4), ReLU,
// MaxPool2d(2,2), Flatten, Linear(16,10). Indices (and so state_dict keys) match PyTorch's.
using SmallNet = Network<Shape<3, 4, 4>, Sequential<Conv2d<3, 4, 3, 1, 1>, BatchNorm2d<4>, ReLU, MaxPool2d<2, 2>,
                                                    Flatten, Linear<16, 10>>>;

template <class Opt, class Options>
void three_steps(const char* name, Options options, const std::function<double(const std::string&)>& atol_for) {
  Golden g(name);
  SmallNet net;
  GoldenStateLoader load(g, "init.");
  net.visit_state(load);
  Opt opt(net, options);
  CrossEntropyLoss<10> criterion;
  const auto x = batch_from<Shape<3, 4, 4>>(g, "x");
  std::vector<int> labels;
  for (double v : g["labels"].values) labels.push_back(static_cast<int>(v));
  for (int step = 1; step <= 3; ++step) {
    net.zero_grad();
    const float loss = criterion.forward(net.forward(x), labels);
    CHECK(loss == doctest::Approx(g["loss_step" + std::to_string(step)].values[0]).epsilon(1e-5));
    net.backward(x, criterion.grad());
    opt.step();
    if (step == 1) {
      GoldenStateComparer cmp(g, "after1.", atol_for);
      net.visit_state(cmp);
    }
  }
  GoldenStateComparer cmp(g, "after3.", atol_for);
  net.visit_state(cmp);
}

}  // namespace

TEST_CASE("Adam: three steps of a small network match PyTorch") {
  // The conv bias (0.bias) feeds straight into BatchNorm, which cancels it: its exact gradient
  // is 0 and the computed one is float rounding noise (1e-9..1e-8, in PyTorch and here alike).
  // Adam divides by sqrt(v) ~ |g|, so any noise becomes a step of up to lr in a random
  // direction: compare it only to 3 steps of lr. The BatchNorm running_mean averages that bias
  // in, so it gets the same allowance scaled by the momentum. Every other tensor is compared at
  // float parity.
  three_steps<Adam>("adam_small_net", Adam::Options{.lr = 1e-3}, [](const std::string& key) {
    if (key == "0.bias") return 3 * 1e-3;
    if (key == "1.running_mean") return 3 * 1e-3 * 0.1 * 3;
    return 0.0;
  });
}

TEST_CASE("SGD with momentum and weight decay: three steps of a small network match PyTorch") {
  three_steps<SGD>("sgd_small_net", SGD::Options{.lr = 0.1, .momentum = 0.9, .weight_decay = 5e-4}, {});
}

namespace {
// Three steps of `Opt` alone on the fixture's flat parameter and gradients; the parameter and
// the optimizer's state (named as torch.optim's) against PyTorch's, bit for bit. With
// `decay_after`, the learning rate is divided by 3 after that step (main.py's update_lr).
template <class Opt>
void optimizer_alone(const Golden& g, const std::string& label, typename Opt::Options options, int decay_after = 0) {
  std::vector<float> p = g.floats("p0"), grad(p.size());
  Opt opt(p, grad, options);
  for (int step = 1; step <= 3; ++step) {
    const std::vector<float> gs = g.floats("g" + std::to_string(step));
    REQUIRE(gs.size() == grad.size());
    std::copy(gs.begin(), gs.end(), grad.begin());  // in place: the optimizer holds a span of it
    opt.step();
    if (step == decay_after) opt.set_lr(opt.lr() / 3);
  }
  CHECK_MESSAGE(bit_patterns(p) == bit_patterns(g.floats(label + ".param")), label);
  struct Bits : StateVisitor {
    const Golden& g;
    std::string label;
    int buffers = 0;
    Bits(const Golden& golden, std::string l) : g(golden), label(std::move(l)) {}
    void buffer(const std::string& name, const TensorShape&, std::span<float> data) override {
      ++buffers;
      const std::vector<float> ours(data.begin(), data.end());
      const std::string key = label + "." + name;
      CHECK_MESSAGE(bit_patterns(ours) == bit_patterns(g.floats(key)), key);
    }
  } bits(g, label);
  opt.visit_state(bits, "");
  CHECK(bits.buffers > 0);
}
}  // namespace

TEST_CASE("Adam and SGD alone give PyTorch's bits, parameters and state") {
  // The fixture's gradients span six decades; 101 elements leave a scalar tail after the vector
  // loops (ctnn's and PyTorch's). Adam's v missed PyTorch's in 3 of 10 elements by an ulp while
  // the compiler chose which product to fuse.
  const Golden g("optim_steps");
  optimizer_alone<Adam>(g, "adam", {.lr = 1e-3});
  optimizer_alone<Adam>(g, "adam_decay", {.lr = 1e-3}, /*decay_after=*/2);
  optimizer_alone<Adam>(g, "adam_custom", {.lr = 0.02, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6});
  optimizer_alone<SGD>(g, "sgd", {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 5e-4});
  optimizer_alone<SGD>(g, "nesterov", {.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-4, .nesterov = true});
}

TEST_CASE("Adam's first step moves each parameter by about lr against its gradient") {
  std::vector<float> p{1.0f, -2.0f, 0.5f}, g{0.3f, -4.0f, 0.0f};
  Adam opt(p, g, {.lr = 0.01});
  opt.step();
  CHECK(p[0] == doctest::Approx(1.0 - 0.01).epsilon(1e-5));
  CHECK(p[1] == doctest::Approx(-2.0 + 0.01).epsilon(1e-5));
  CHECK(p[2] == 0.5f);  // zero gradient: m = 0, no move
  CHECK(opt.steps() == 1);
  opt.set_lr(0.0);
  const std::vector<float> before = p;
  opt.step();
  CHECK(p == before);
}

TEST_CASE("Adam's vector loop gives the bits of its one-element update, tail included") {
  // 16 or 8 elements at a time where the compiler targets AVX-512 or AVX2 (this build: the CPU
  // it runs on), then one at a time: 1003 elements from 2 on leave a tail either way.
  const std::size_t n = 1005;
  Rng rng(5);
  std::vector<float> p(n), g(n), m(n), v(n);
  for (std::size_t i = 0; i < n; ++i) {
    p[i] = static_cast<float>(rng.uniform(-1, 1));
    g[i] = static_cast<float>(rng.uniform(-1e-2, 1e-2));
    m[i] = static_cast<float>(rng.uniform(-1e-3, 1e-3));
    v[i] = static_cast<float>(rng.uniform(0, 1e-5));
  }
  const detail::AdamScalars s{0.9f, 0.999f, 0.1f, 0.001f, 0.0123f, 0.0316f, 1e-8f};
  auto p1 = p, m1 = m, v1 = v;
  for (int step = 0; step < 3; ++step) {
    detail::adam_update(p.data(), g.data(), m.data(), v.data(), 2, n, s);
    for (std::size_t i = 2; i < n; ++i) detail::adam_element(p1[i], g[i], m1[i], v1[i], s);
  }
  CHECK(bit_patterns(m) == bit_patterns(m1));
  CHECK(bit_patterns(v) == bit_patterns(v1));
  CHECK(bit_patterns(p) == bit_patterns(p1));
  CHECK(p[0] == p1[0]);  // before `begin`: untouched by both
}

TEST_CASE("SGD: plain, momentum and Nesterov updates") {
  std::vector<float> p{1.0f}, g{0.5f};
  SGD plain(p, g, {.lr = 0.1});
  plain.step();
  CHECK(p[0] == doctest::Approx(0.95));
  SGD mom(p, g, {.lr = 0.1, .momentum = 0.9});
  mom.step();  // buf = g
  mom.step();  // buf = 0.9 g + g
  CHECK(p[0] == doctest::Approx(0.95 - 0.05 - 0.1 * 0.95));
  std::vector<float> q{1.0f};
  SGD nest(q, g, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
  nest.step();  // d = g + 0.9 g
  CHECK(q[0] == doctest::Approx(1.0 - 0.1 * 0.95));
  CHECK_THROWS_AS(SGD(q, g, {.lr = 0.1, .nesterov = true}), std::invalid_argument);
}

TEST_CASE("Optimizers refuse options PyTorch refuses, instead of training on NaNs") {
  SmallNet net(0);
  CHECK_THROWS_WITH_AS(Adam(net, {.lr = -1e-3}), doctest::Contains("learning rate"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Adam(net, {.beta1 = 1.0}), doctest::Contains("betas must be in [0, 1)"), std::invalid_argument);
  CHECK_THROWS_AS(Adam(net, {.beta2 = -0.1}), std::invalid_argument);
  CHECK_THROWS_AS(Adam(net, {.eps = -1e-8}), std::invalid_argument);
  CHECK_THROWS_AS(SGD(net, {.lr = 0.1, .momentum = -0.9}), std::invalid_argument);
  CHECK_THROWS_AS(SGD(net, {.lr = std::numeric_limits<double>::infinity()}), std::invalid_argument);
  Adam adam(net, {.lr = 0.0});  // a zero rate is allowed, as in PyTorch
  CHECK_THROWS_AS(adam.set_lr(-1.0), std::invalid_argument);
  CHECK_THROWS_AS(adam.set_lr(std::numeric_limits<double>::quiet_NaN()), std::invalid_argument);
  adam.set_lr(1e-4);
  CHECK(adam.lr() == 1e-4);
}
