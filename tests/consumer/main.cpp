#include <cstdio>

#include <ctnn/ctnn.hpp>
using namespace ctnn;

using Net = Network<Shape<3, 32, 32>,  // input: 3 channels, 32x32
                    Sequential<Conv2d<3, 16, 3, 1, 1>, BatchNorm2d<16>, ReLU, MaxPool2d<4>,
                               Conv2d<16, 32, 3, 1, 1>, ReLU, MaxPool2d<8>, Flatten, Linear<32, 10>>>;

int main() {
  auto data = data::make_synthetic_cifar(2000, 1);  // or data::load_cifar10(dir, data::Split::train)
  data::DataLoader loader(data, data::LoaderOptions::train(/*seed=*/0));
  Net net(/*seed=*/0);
  Adam optimizer(net, {.lr = 1e-3});
  CrossEntropyLoss<10> criterion;
  data::LoaderBatch batch;
  int step = 0;
  for (loader.start_epoch(0); loader.next(batch); ++step) {
    net.zero_grad();
    const float loss = criterion.forward(net.forward(batch.images), batch.labels);
    net.backward(batch.images, criterion.grad());
    optimizer.step();
    if (step % 5 == 4) std::printf("step %d: loss %.4f\n", step + 1, loss);
  }
}
