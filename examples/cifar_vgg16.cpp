// VGG16 for ctnn-train and ctnn-eval (see cifar_network.hpp).
#include <ctnn/models/vgg.hpp>

#include "cifar_network.hpp"

namespace ctnn::cli {
std::unique_ptr<CifarNetwork> make_vgg16(std::uint64_t seed) { return make_network<VGG16>(seed); }
}  // namespace ctnn::cli
