// ctnn-train-small: ctnn-train's program (examples/train_cli.hpp: the same options, Trainer,
// files and exit codes) around a network small enough that a whole run takes about a second,
// for the fault-injection tests (tests/fault/fault_driver.cpp). It has BatchNorm statistics,
// a Dropout layer's draw counter and Adam's moments to restore, like the real networks, and its
// resume snapshot is ~3 MB, written in ~60 pieces, so a kill can land inside a save.
#include <ctnn/ctnn.hpp>

#include "train_cli.hpp"

namespace {
using namespace ctnn;
using SmallNet =
    Network<Shape<3, 32, 32>,
            Sequential<Conv2d<3, 16, 3, 1, 1>, BatchNorm2d<16>, ReLU, MaxPool2d<2>, Conv2d<16, 32, 3, 1, 1>, ReLU,
                       MaxPool2d<4>, Flatten, Linear<512, 512>, ReLU, Dropout<>, Linear<512, 10>>>;
}  // namespace

int main(int argc, char** argv) {
  return ctnn::cli::train_main(argc, argv, "ctnn-train-small", {{"small", ctnn::cli::train_run<SmallNet>}});
}
