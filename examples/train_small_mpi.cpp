// examples/train_small.cpp made data-parallel: the lines marked "// +" are all it takes. Run with
//   mpiexec -n 2 build/bin/train_small_mpi
// Each process trains on its half of every batch of 100; the gradients are summed across the
// processes, BatchNorm normalises over the whole batch, and the run computes what one process
// would (to float rounding; see include/ctnn/dist/data_parallel.hpp).
#include <ctnn/ctnn.hpp>
#include <ctnn/dist/data_parallel.hpp>  // +

#include <cstdio>

using Net = ctnn::Network<ctnn::Shape<3, 32, 32>,
                          ctnn::Sequential<ctnn::Conv2d<3, 16, 3, 1, 1>, ctnn::BatchNorm2d<16>, ctnn::ReLU,
                                           ctnn::MaxPool2d<4>, ctnn::Conv2d<16, 32, 3, 1, 1>, ctnn::ReLU,
                                           ctnn::MaxPool2d<8>, ctnn::Flatten, ctnn::Linear<32, 10>>>;

int main(int argc, char** argv) {
  ctnn::dist::Environment mpi(argc, argv);  // +
  ctnn::dist::Communicator comm;            // +
  const auto data = ctnn::data::make_synthetic_cifar(2000, /*seed=*/1);  // SYNTHETIC images
  auto options = ctnn::data::LoaderOptions::train(/*seed=*/0);
  options.shard = ctnn::dist::shard_of(comm);  // +
  ctnn::data::DataLoader loader(data, options);
  Net net(/*seed=*/0);
  ctnn::Adam optimizer(net, {.lr = 1e-3});
  ctnn::CrossEntropyLoss<10> criterion;
  ctnn::data::LoaderBatch batch;
  double first = 0, last = 0;
  for (int epoch = 0; epoch < 3; ++epoch) {
    loader.start_epoch(epoch);
    for (int step = 0; loader.next(batch); ++step) {
      ctnn::dist::StepScope scope(comm, batch);  // +
      net.zero_grad();
      const float share = criterion.forward(net.forward(batch.images), batch.labels, batch.global_size);  // +
      net.backward(batch.images, criterion.grad());
      ctnn::dist::allreduce_gradients(comm, net.gradients());  // +
      optimizer.step();
      const double loss = ctnn::dist::global_loss(comm, share);  // +
      if (epoch == 0 && step == 0) first = loss;
      last = loss;
    }
    if (comm.rank() == 0) std::printf("epoch %d (SYNTHETIC data, %d processes): loss %.4f\n", epoch + 1, comm.size(), last);
  }
  if (comm.rank() == 0)
    std::printf(last < first ? "loss went down: %.4f -> %.4f\n" : "loss did not go down: %.4f -> %.4f\n", first, last);
  return last < first ? 0 : 1;
}
