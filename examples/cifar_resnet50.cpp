// ResNet50_layer4 for ctnn-train and ctnn-eval (see cifar_network.hpp).
#include <ctnn/models/resnet.hpp>

#include "cifar_network.hpp"

namespace ctnn::cli {
std::unique_ptr<CifarNetwork> make_resnet50(std::uint64_t seed) { return make_network<ResNet50_layer4<10>>(seed); }
}  // namespace ctnn::cli
