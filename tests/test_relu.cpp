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
  CHECK(bit_patterns(net.forward(x).to_nchw()) == bit_patterns(g.floats("y")));
  Batch<In> dx;
  net.backward(x, batch_from<In>(g, "dy"), dx);
  CHECK(bit_patterns(dx.to_nchw()) == bit_patterns(g.floats("dx")));
}

TEST_CASE("ReLU passes NaN through, forward and backward, as torch.relu does") {
  // torch: relu([nan, -2, 3, -0, 0]) = [nan, 0, 3, -0, 0]; its gradient (threshold_backward,
  // `y <= 0 ? 0 : dy`) passes where the output is NaN: [1, 0, 1, 0, 0] for dy = 1.
  Network<Features<5>, Sequential<ReLU>> net;
  Batch<Features<5>> x(1), dy(1), dx;
  x(0, 0, 0, 0) = std::numeric_limits<float>::quiet_NaN();
  x(0, 1, 0, 0) = -2.0f;
  x(0, 2, 0, 0) = 3.0f;
  x(0, 3, 0, 0) = -0.0f;
  x(0, 4, 0, 0) = 0.0f;
  const auto& y = net.forward(x);
  CHECK(std::isnan(y(0, 0, 0, 0)));
  CHECK(y(0, 1, 0, 0) == 0.0f);
  CHECK(y(0, 2, 0, 0) == 3.0f);
  CHECK(std::signbit(y(0, 3, 0, 0)));
  dy.fill(1.0f);
  net.backward(x, dy, dx);
  const float want[] = {1.0f, 0.0f, 1.0f, 0.0f, 0.0f};
  for (int c = 0; c < 5; ++c) {
    CAPTURE(c);
    CHECK(dx(0, c, 0, 0) == want[c]);
  }
}

TEST_CASE("ReLU gradients agree with finite differences (inputs kept away from the kink)") {
  Network<Shape<2, 3, 3>, Sequential<ReLU>> net;
  require_gradients_ok(gradient_check(net, random_batch<Shape<2, 3, 3>>(3, 2, -1.0, 1.0, 0.05)));
}
