// ctnn-train-small's --model small (see ctnn_train_small.cpp), in a file of its own as
// ctnn-train's networks are (examples/cifar_network.hpp).
#include <ctnn/ctnn.hpp>

#include "cifar_network.hpp"

namespace ctnn::test {
using SmallNet =
    Network<Shape<3, 32, 32>,
            Sequential<Conv2d<3, 16, 3, 1, 1>, BatchNorm2d<16>, ReLU, MaxPool2d<2>, Conv2d<16, 32, 3, 1, 1>, ReLU,
                       MaxPool2d<4>, Flatten, Linear<512, 512>, ReLU, Dropout<>, Linear<512, 10>>>;

std::unique_ptr<cli::CifarNetwork> make_small(std::uint64_t seed) { return cli::make_network<SmallNet>(seed); }
}  // namespace ctnn::test
