// Define a small network as a type, train it with Adam on synthetic CIFAR-shaped data
// (labelled SYNTHETIC: no data set needed), and watch the loss go down.
#include <ctnn/ctnn.hpp>

#include <cstdio>

using Net = ctnn::Network<ctnn::Shape<3, 32, 32>,
                          ctnn::Sequential<ctnn::Conv2d<3, 16, 3, 1, 1>, ctnn::BatchNorm2d<16>, ctnn::ReLU,
                                           ctnn::MaxPool2d<4>, ctnn::Conv2d<16, 32, 3, 1, 1>, ctnn::ReLU,
                                           ctnn::MaxPool2d<8>, ctnn::Flatten, ctnn::Linear<32, 10>>>;

int main() {
  const auto data = ctnn::data::make_synthetic_cifar(2000, /*seed=*/1);  // SYNTHETIC images
  ctnn::data::DataLoader loader(data, ctnn::data::LoaderOptions::train(/*seed=*/0));
  Net net(/*seed=*/0);
  ctnn::Adam optimizer(net, {.lr = 1e-3});
  ctnn::CrossEntropyLoss<10> criterion;
  ctnn::data::LoaderBatch batch;
  float first = 0, last = 0;
  for (int epoch = 0; epoch < 3; ++epoch) {
    loader.start_epoch(epoch);
    for (int step = 0; loader.next(batch); ++step) {
      net.zero_grad();
      const float loss = criterion.forward(net.forward(batch.images), batch.labels);
      net.backward(batch.images, criterion.grad());
      optimizer.step();
      if (epoch == 0 && step == 0) first = loss;
      last = loss;
    }
    std::printf("epoch %d (SYNTHETIC data): loss %.4f\n", epoch + 1, last);
  }
  std::printf(last < first ? "loss went down: %.4f -> %.4f\n" : "loss did not go down: %.4f -> %.4f\n", first, last);
  return last < first ? 0 : 1;
}
