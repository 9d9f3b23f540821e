// ReLU: PyTorch parity, NaN propagation and finite-difference gradients.
#include "support/check.hpp"

#include <limits>

using namespace ctnn;
using namespace ctnn::test;

TEST_CASE("ReLU matches PyTorch") {
  using In = Shape<3, 4, 4>;
  Golden g("relu");
  Network<In, Sequential<ReLU>> net;
  const auto x = batch_from<In>(g, "x");
  expect_parity(net.forward(x).to_nchw(), g["y"].values, "y");
  Batch<In> dx;
  net.backward(x, batch_from<In>(g, "dy"), dx);
  expect_parity(dx.to_nchw(), g["dx"].values, "dx");
}

TEST_CASE("ReLU passes NaN through, as torch.relu does") {
  Network<Features<3>, Sequential<ReLU>> net;
  Batch<Features<3>> x(1);
  x(0, 0, 0, 0) = std::numeric_limits<float>::quiet_NaN();
  x(0, 1, 0, 0) = -2.0f;
  x(0, 2, 0, 0) = 3.0f;
  const auto& y = net.forward(x);
  CHECK(std::isnan(y(0, 0, 0, 0)));
  CHECK(y(0, 1, 0, 0) == 0.0f);
  CHECK(y(0, 2, 0, 0) == 3.0f);
}

TEST_CASE("ReLU gradients agree with finite differences (inputs kept away from the kink)") {
  Network<Shape<2, 3, 3>, Sequential<ReLU>> net;
  require_gradients_ok(gradient_check(net, random_batch<Shape<2, 3, 3>>(3, 2, -1.0, 1.0, 0.05)));
}
