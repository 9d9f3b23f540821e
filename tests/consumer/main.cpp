// Builds against an installed ctnn: one training step of a small network.
#include <ctnn/ctnn.hpp>

#include <cstdio>

int main() {
  using Net = ctnn::Network<ctnn::Shape<3, 8, 8>,
                            ctnn::Sequential<ctnn::Conv2d<3, 4, 3, 1, 1>, ctnn::ReLU, ctnn::MaxPool2d<2>,
                                             ctnn::Flatten, ctnn::Linear<64, 10>>>;
  Net net(1);
  ctnn::Batch<ctnn::Shape<3, 8, 8>> x(2);
  x.fill(0.5f);
  const int labels[] = {1, 7};
  ctnn::CrossEntropyLoss<10> loss;
  ctnn::Adam opt(net);
  const float l = loss.forward(net.forward(x), labels);
  net.backward(x, loss.grad());
  opt.step();
  std::printf("consumer: %zu parameters, loss %.4f\n", net.num_parameters(), l);
  return l > 0.0f ? 0 : 1;
}
