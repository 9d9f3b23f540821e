// What ctnn-train's program (train_cli.hpp) knows of a network: CIFAR-10 images in, 10 logits
// out, through compose/any_network.hpp. Each network's file includes this and its model alone,
// and defines the network's TrainModel::make (ctnn_train_<model>.cpp).
#pragma once

#include <cstdint>
#include <ctnn/compose/any_network.hpp>
#include <memory>
#include <string>

namespace ctnn::cli {

using CifarNetwork = AnyNetwork<Shape<3, 32, 32>, Shape<10, 1, 1>>;

// One --model choice: its name and its network, initialised from a seed.
struct TrainModel {
  std::string name;
  std::unique_ptr<CifarNetwork> (*make)(std::uint64_t seed);
};

// TrainModel::make for a Network type.
template <class Net>
std::unique_ptr<CifarNetwork> make_network(std::uint64_t seed) {
  return std::make_unique<AnyNetworkOf<Net>>(seed);
}

}  // namespace ctnn::cli
