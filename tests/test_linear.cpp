// Linear: PyTorch parity and finite-difference gradients.
#include "support/check.hpp"

using namespace ctnn;
using namespace ctnn::test;

TEST_CASE("Linear matches PyTorch: forward, input, weight and bias gradients") {
  using In = Features<6>;
  Golden g("linear");
  Network<In, Sequential<Linear<6, 4>>> net;
  auto& fc = net.root().get<0>();
  set_affine(fc, g);
  const auto x = batch_from<In>(g, "x");
  expect_parity(net.forward(x).to_nchw(), g["y"].values, "y");
  Batch<In> dx;
  net.zero_grad();
  net.backward(x, batch_from<Features<4>>(g, "dy"), dx);
  expect_parity(dx.to_nchw(), g["dx"].values, "dx");
  expect_parity(fc.weight.gradient(), g["dweight"].values, "dweight");
  expect_parity(fc.bias.gradient(), g["dbias"].values, "dbias");
}

TEST_CASE("Linear gradients agree with finite differences") {
  Network<Features<7>, Sequential<Linear<7, 5>>> net(3);
  require_gradients_ok(gradient_check(net, random_batch<Features<7>>(4, 5)));
}

TEST_CASE("Linear accumulates gradients across backward calls, as PyTorch does") {
  Network<Features<3>, Sequential<Linear<3, 2>>> net(1);
  const auto x = random_batch<Features<3>>(2, 9);
  Batch<Features<2>> dy(2);
  dy.fill(1.0f);
  net.forward(x);
  net.zero_grad();
  net.backward(x, dy);
  const std::vector<float> once(net.gradients().begin(), net.gradients().end());
  net.backward(x, dy);
  for (std::size_t i = 0; i < once.size(); ++i) CHECK(net.gradients()[i] == doctest::Approx(2 * once[i]));
  net.zero_grad();
  for (float v : net.gradients()) CHECK(v == 0.0f);
}
