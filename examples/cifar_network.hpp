// What ctnn-train's and ctnn-eval's programs know of a network: CIFAR-10 images in, 10 logits
// out, through compose/any_network.hpp. Each network is compiled in a file of its own that
// includes this and its model alone (examples/cifar_<model>.cpp), once for both programs' sakes:
// no translation unit holds both a network and a program.
#pragma once

#include <cstdint>
#include <ctnn/compose/any_network.hpp>
#include <memory>
#include <string>
#include <vector>

namespace ctnn::cli {

using CifarNetwork = AnyNetwork<Shape<3, 32, 32>, Shape<10, 1, 1>>;

// One --model choice: its name and its network, initialised from a seed.
struct CifarModel {
  std::string name;
  std::unique_ptr<CifarNetwork> (*make)(std::uint64_t seed);
};

// CifarModel::make for a Network type.
template <class Net>
std::unique_ptr<CifarNetwork> make_network(std::uint64_t seed) {
  return std::make_unique<AnyNetworkOf<Net>>(seed);
}

std::unique_ptr<CifarNetwork> make_vgg16(std::uint64_t seed);     // cifar_vgg16.cpp
std::unique_ptr<CifarNetwork> make_resnet50(std::uint64_t seed);  // cifar_resnet50.cpp

// The assignment's two networks, as ctnn-train and ctnn-eval offer them.
inline std::vector<CifarModel> cifar_models() { return {{"vgg16", make_vgg16}, {"resnet50", make_resnet50}}; }

}  // namespace ctnn::cli
