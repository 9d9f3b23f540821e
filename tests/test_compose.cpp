// Composition: Sequential, Named, Residual, Flatten, Identity, and the Network around them.
#include "support/check.hpp"

#include <optional>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <sstream>
#include <thread>
#include <vector>

using namespace ctnn;
using namespace ctnn::test;

namespace {
struct Names : StateVisitor {
  std::vector<std::string> names;
  void parameter(const std::string& n, const TensorShape&, Param&) override { names.push_back(n); }
  void buffer(const std::string& n, const TensorShape&, std::span<float>) override { names.push_back(n); }
  void counter(const std::string& n, std::int64_t&) override { names.push_back(n); }
};

// Both networks' backward for (x, dy), from zeroed gradients: the same bits in every parameter
// gradient and in the input gradient.
template <class A, class B, class X, class DY>
void expect_same_backward(A& a, B& b, const X& x, const DY& dy) {
  X dx_a, dx_b;
  a.zero_grad();
  b.zero_grad();
  a.backward(x, dy, dx_a);
  b.backward(x, dy, dx_b);
  CHECK(bit_patterns(a.gradients()) == bit_patterns(b.gradients()));
  CHECK(bit_patterns(dx_a.to_nchw()) == bit_patterns(dx_b.to_nchw()));
}
}  // namespace

TEST_CASE("Sequential threads the shape through its layers at compile time") {
  using L = Sequential<Conv2d<3, 8, 3, 2, 1>, ReLU, MaxPool2d<2>, Flatten, Linear<32, 5>>::bind<Shape<3, 8, 8>>;
  static_assert(std::is_same_v<L::out_shape, Features<5>>);
  static_assert(std::is_same_v<std::decay_t<decltype(std::declval<L&>().get<2>())>::out_shape, Shape<8, 2, 2>>);
}

TEST_CASE("State names follow PyTorch's module tree: indices, Named children, nesting") {
  using Net = Network<Shape<2, 4, 4>,
                      Sequential<Named<"stem", Sequential<Conv2d<2, 3, 1>, BatchNorm2d<3>>>, ReLU,
                                 Residual<Named<"layer", Sequential<Conv2d<3, 3, 3, 1, 1>>>,
                                          Named<"shortcut", Conv2d<3, 3, 1>>>,
                                 Flatten, Named<"fc", Linear<48, 2>>>>;
  Net net;
  Names v;
  net.visit_state(v);
  const std::vector<std::string> expected{
      "stem.0.weight", "stem.0.bias", "stem.1.weight", "stem.1.bias", "stem.1.running_mean", "stem.1.running_var",
      "stem.1.num_batches_tracked", "2.layer.0.weight", "2.layer.0.bias", "2.shortcut.weight", "2.shortcut.bias",
      "fc.weight", "fc.bias"};
  CHECK(v.names == expected);
  // Parameters are laid out contiguously in that order.
  const auto& e = net.state_entries();
  CHECK(e[0].offset == 0);
  CHECK(e[1].offset == 6);
  CHECK(e[7].offset == 6 + 3 + 3 + 3);
  CHECK(net.num_parameters() == 6 + 3 + 3 + 3 + 81 + 3 + 9 + 3 + 96 + 2);
}

// Children whose state_dict keys coincide do not compile (tests/compile_fail/duplicate_child_key.cpp):
// the first such pair, by position.
using Pair = std::pair<std::size_t, std::size_t>;
static_assert(detail::clashing_children<Named<"a", ReLU>, ReLU, Named<"a", ReLU>>() == Pair{0, 2});
static_assert(detail::clashing_children<Named<"1", ReLU>, ReLU>() == Pair{0, 1});  // "1" is the second's index
static_assert(detail::clashing_children<ReLU, Named<"0", ReLU>>() == Pair{0, 1});
static_assert(detail::clashing_children<Named<"01", ReLU>, ReLU>() == Pair{0, 0});  // no index is written "01"
static_assert(detail::clashing_children<ReLU, ReLU, Named<"x", ReLU>, Named<"y", ReLU>>() == Pair{0, 0});

TEST_CASE("Residual adds its branches; its input gradient is the sum of both branches'") {
  using In = Shape<2, 3, 3>;
  Network<In, Sequential<Residual<Sequential<Conv2d<2, 2, 3, 1, 1>>, Identity>>> res(1);
  Network<In, Sequential<Conv2d<2, 2, 3, 1, 1>>> body(1);
  // Same seed, same single conv: identical parameters.
  REQUIRE(std::equal(res.parameters().begin(), res.parameters().end(), body.parameters().begin()));
  const auto x = random_batch<In>(2, 3);
  const auto y = res.forward(x);
  const auto b = body.forward(x);
  for (std::size_t i = 0; i < y.size(); ++i) CHECK(y.data()[i] == doctest::Approx(b.data()[i] + x.data()[i]));
  const auto dy = random_batch<In>(2, 4);
  Batch<In> dres, dbody;
  res.backward(x, dy, dres);
  body.backward(x, dy, dbody);
  for (std::size_t i = 0; i < x.size(); ++i) CHECK(dres.data()[i] == doctest::Approx(dbody.data()[i] + dy.data()[i]));
}

TEST_CASE("A network's output fed back as its input gives what a copy of it gives") {
  // The last layer, a Linear, would otherwise multiply in place, reading sums it has written
  // (with 512 inputs: two blocks of k, the second reading what the first wrote).
  using Net = Network<Features<512>, Sequential<Linear<512, 512>>>;
  const auto x = random_batch<Features<512>>(64, 21);
  for (const bool grad : {false, true}) {
    Net fed(3), copied(3);
    std::optional<NoGrad> no_grad;
    if (!grad) no_grad.emplace();
    const Batch<Features<512>> once = copied.forward(x);
    const auto expected = copied.forward(once).to_nchw();
    const auto& again = fed.forward(fed.forward(x));
    CHECK(bit_patterns(again.to_nchw()) == bit_patterns(expected));
  }
}

TEST_CASE("Flatten orders features as PyTorch's view(N, -1): channel, then row, then column") {
  using In = Shape<2, 2, 3>;
  Network<In, Sequential<Flatten>> net;
  Batch<In> x(2);
  std::vector<float> nchw(x.size());
  for (std::size_t i = 0; i < nchw.size(); ++i) nchw[i] = static_cast<float>(i);
  x.from_nchw(nchw.data(), 2);
  const auto& y = net.forward(x);
  // The flattened (N, 12) tensor in row-major order is exactly the NCHW buffer.
  CHECK(y.to_nchw() == nchw);
  Batch<In> dx;
  net.backward(x, y, dx);
  CHECK(dx.to_nchw() == nchw);
}

TEST_CASE("Nested stacks pass finite-difference gradient checks (gradient buffers reused)") {
  using Net = Network<Shape<2, 4, 4>, Sequential<Conv2d<2, 3, 3, 1, 1>, Sequential<Conv2d<3, 3, 1>, ReLU>,
                                                 Residual<Conv2d<3, 3, 3, 1, 1>, Identity>, AvgPool2d<2>,
                                                 Flatten, Linear<12, 4>>>;
  Net net(8);
  GradCheckOptions o;
  o.h = 1e-3;
  require_gradients_ok(gradient_check(net, random_batch<Shape<2, 4, 4>>(3, 9), o));
}

TEST_CASE("summary prints one row per layer with output shape and parameters, then the total") {
  Network<Shape<1, 4, 4>, Sequential<Conv2d<1, 2, 3>, ReLU, Flatten, Linear<8, 3>>> net;
  std::ostringstream os;
  net.summary(os);
  const std::string s = os.str();
  CHECK(s.find("Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))") != std::string::npos);
  CHECK(s.find("2x2x2") != std::string::npos);
  CHECK(s.find("Linear(in_features=8, out_features=3, bias=True)") != std::string::npos);
  CHECK(s.find("trainable parameters: 47") != std::string::npos);
}

TEST_CASE("NoGrad: the same outputs, intermediate outputs given back as soon as read, no backward") {
  using Net = Network<Shape<2, 6, 6>,
                      Sequential<Named<"stem", Sequential<Conv2d<2, 4, 3, 1, 1>, BatchNorm2d<4>, ReLU>>,
                                 Residual<Named<"layer", Sequential<Conv2d<4, 4, 3, 1, 1>, ReLU>>,
                                          Named<"shortcut", Identity>>,
                                 MaxPool2d<2>, Flatten, Named<"fc", Linear<36, 3>>>>;
  Net net(7);
  net.eval();
  Rng rng(8);
  Batch<Shape<2, 6, 6>> x(5);
  for (std::size_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(rng.uniform(-1, 1));
  const std::vector<float> kept = net.forward(x).to_nchw();
  auto& stem = net.root().get<0>();
  CHECK(stem.get<0>().output().batch() == 5);  // outside NoGrad every output stays for backward

  auto spares = [] {
    std::vector<const float*> p;
    for (const auto& s : detail::spare_storage()) p.push_back(s.data());
    std::sort(p.begin(), p.end());
    return p;
  };
  std::vector<const float*> after_first;
  for (int pass = 0; pass < 3; ++pass) {
    const NoGrad no_grad;
    CHECK_FALSE(is_grad_enabled());
    const auto& y = net.forward(x);
    CHECK(y.to_nchw() == kept);  // bit for bit: the same arithmetic
    // Read and released: the stem's conv and batch-norm outputs, the residual's branches.
    CHECK(stem.get<0>().output().batch() == 0);
    CHECK(stem.get<1>().output().batch() == 0);
    CHECK(net.root().get<1>().body.output().batch() == 0);
    CHECK(net.root().get<1>().shortcut.output().batch() == 0);
    CHECK(net.root().get<4>().output().batch() == 5);  // the network's output is the caller's
    // The same sizes in the same order: later passes reuse exactly the storage of the first.
    if (pass == 0) after_first = spares();
    CHECK(!after_first.empty());
    CHECK(spares() == after_first);
  }
  CHECK(is_grad_enabled());
  Batch<Net::out_shape> dy(5);
  dy.fill(1.0f);
  {
    const NoGrad no_grad;
    net.forward(x);
  }
  CHECK_THROWS_WITH_AS(net.backward(x, dy), doctest::Contains("NoGrad"), std::logic_error);
  net.forward(x);  // outside NoGrad again: backward works
  CHECK_NOTHROW(net.backward(x, dy));
  CHECK(stem.get<0>().output().batch() == 5);
}

TEST_CASE("NoGrad: from the second pass on, an evaluation allocates nothing, not even the spares' list") {
  // On a thread of its own, whose spares' list (thread_local) is new, as a program's first
  // evaluation finds it: the list grew on the second pass before it reserved its room.
  std::vector<const void*> lists;
  std::thread([&] {
    using Net = Network<Shape<2, 8, 8>, Sequential<Conv2d<2, 4, 3, 1, 1>, BatchNorm2d<4>, ReLU, Conv2d<4, 4, 3, 1, 1>,
                                                   ReLU, MaxPool2d<2>, Conv2d<4, 8, 3, 1, 1>, ReLU, MaxPool2d<2>,
                                                   Flatten, Linear<32, 3>>>;
    Net net(0);
    net.eval();
    Batch<Shape<2, 8, 8>> x(2);
    x.fill(0.5f);
    for (int pass = 0; pass < 3; ++pass) {
      const NoGrad no_grad;
      net.forward(x);
      lists.push_back(detail::spare_storage().data());
    }
  }).join();
  REQUIRE(lists.size() == 3);
  CHECK(lists[1] == lists[0]);
  CHECK(lists[2] == lists[0]);
}

TEST_CASE("Fusions: ReLU in the forward of the Conv2d or BatchNorm before it, a BatchNorm (and ReLU) in the forward of the Conv2d before it (evaluation under NoGrad); the bits of separate passes") {
  // Identity between two layers keeps them apart: the reference, computed unfused.
  using In = Shape<3, 6, 6>;
  using Fused = Network<In, Sequential<Conv2d<3, 4, 3, 1, 1>, ReLU, Conv2d<4, 4, 1>, BatchNorm2d<4>, ReLU, Flatten,
                                       Linear<144, 8>, BatchNorm1d<8>, ReLU, Linear<8, 3>>>;
  using Apart = Network<In, Sequential<Conv2d<3, 4, 3, 1, 1>, Identity, ReLU, Conv2d<4, 4, 1>, Identity, BatchNorm2d<4>,
                                       Identity, ReLU, Flatten, Linear<144, 8>, BatchNorm1d<8>, Identity, ReLU,
                                       Linear<8, 3>>>;
  Fused fused(5);
  Apart apart(5);
  std::copy(fused.parameters().begin(), fused.parameters().end(), apart.parameters().begin());
  const auto x = random_batch<In>(4, 9);
  for (int step = 0; step < 2; ++step) {  // the second: storage and views reused
    CAPTURE(step);
    const auto y = fused.forward(x).to_nchw();
    CHECK(bit_patterns(y) == bit_patterns(apart.forward(x).to_nchw()));
    // Fused: the ReLU's output is the convolution's own storage (as torch's inplace ReLU), and
    // the convolution's output holds the ReLU'd values.
    auto& conv = fused.root().get<0>();
    CHECK(fused.root().get<1>().output().data() == conv.output().data());
    CHECK(apart.root().get<2>().output().data() != apart.root().get<0>().output().data());
    CHECK(bit_patterns({conv.output().data(), conv.output().size()}) ==
          bit_patterns({apart.root().get<2>().output().data(), apart.root().get<2>().output().size()}));
    CHECK(std::count(conv.output().data(), conv.output().data() + conv.output().size(), 0.0f) > 0);
    expect_same_backward(fused, apart, x, random_batch<Fused::out_shape>(4, static_cast<std::uint64_t>(step) + 1));
  }
  fused.eval();
  apart.eval();
  const auto y_eval = fused.forward(x).to_nchw();
  CHECK(bit_patterns(y_eval) == bit_patterns(apart.forward(x).to_nchw()));
  // A backward in evaluation (frozen statistics, saliency): BatchNorm's weight gradient reads the
  // convolution's output, so with gradients on the BatchNorm is not folded into it.
  expect_same_backward(fused, apart, x, random_batch<Fused::out_shape>(4, 3));
  {
    // Under NoGrad the 1x1 convolution applies the BatchNorm and ReLU after it: the same bits.
    const NoGrad no_grad;
    CHECK(bit_patterns(fused.forward(x).to_nchw()) == bit_patterns(y_eval));
    // Released together: the adopted ReLU and the convolution whose storage it viewed.
    CHECK(fused.root().get<0>().output().batch() == 0);
    CHECK(fused.root().get<1>().output().batch() == 0);
    CHECK(fused.root().get<2>().output().batch() == 0);
    CHECK(fused.root().get<3>().output().batch() == 0);
    CHECK(fused.root().get<4>().output().batch() == 0);
  }
  // Where it is the network's output, the folded BatchNorm's and ReLU's outputs are views of the
  // convolution's storage (as the bits above show, holding their values).
  using Tail = Network<In, Sequential<Conv2d<3, 4, 1>, BatchNorm2d<4>, ReLU>>;
  Tail tail(6);
  for (int step = 0; step < 2; ++step) tail.forward(x);  // training: running statistics of its own
  tail.eval();
  const auto tail_eval = tail.forward(x).to_nchw();
  CHECK(tail.root().get<1>().output().data() != tail.root().get<0>().output().data());
  {
    const NoGrad no_grad;
    CHECK(bit_patterns(tail.forward(x).to_nchw()) == bit_patterns(tail_eval));
    CHECK(tail.root().get<1>().output().data() == tail.root().get<0>().output().data());
    CHECK(tail.root().get<2>().output().data() == tail.root().get<0>().output().data());
  }
  CHECK(bit_patterns(tail.forward(x).to_nchw()) == bit_patterns(tail_eval));  // its own storage again
  CHECK(tail.root().get<1>().output().data() != tail.root().get<0>().output().data());
}

TEST_CASE("BatchNorm does the backward of the ReLU after it (first layer, last layer, and in between): the bits of a ReLU pass") {
  using In = Shape<3, 5, 5>;
  using Fused = Network<In, Sequential<BatchNorm2d<3>, ReLU, Conv2d<3, 4, 3, 1, 1>, BatchNorm2d<4>, ReLU>>;
  using Apart = Network<In, Sequential<BatchNorm2d<3>, Identity, ReLU, Conv2d<3, 4, 3, 1, 1>, BatchNorm2d<4>, Identity, ReLU>>;
  Fused fused(11);
  Apart apart(11);
  std::copy(fused.parameters().begin(), fused.parameters().end(), apart.parameters().begin());
  const auto x = random_batch<In>(3, 12);
  const auto dy = random_batch<Fused::out_shape>(3, 13);
  for (const bool training : {true, false}) {
    CAPTURE(training);
    fused.train(training);
    apart.train(training);
    CHECK(bit_patterns(fused.forward(x).to_nchw()) == bit_patterns(apart.forward(x).to_nchw()));
    expect_same_backward(fused, apart, x, dy);
  }
}
