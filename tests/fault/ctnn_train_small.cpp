// ctnn-train-small: ctnn-train's program (examples/train_main.hpp: the same options, Trainer,
// files and exit codes) for the fault-injection tests (tests/fault/fault_driver.cpp), with the
// kill points of kill_hook.hpp installed from CTNN_FAULT_KILL_AT (ctnn-train itself has none).
// --model small is a network small enough that a whole run takes about a second: it has
// BatchNorm statistics, a Dropout layer's draw counter and Adam's moments to restore, like the
// real networks, and its resume snapshot is ~3 MB, written in ~60 pieces, so a kill can land
// inside a save. --model resnet50 is ctnn-train's own (examples/ctnn_train_resnet50.cpp).
#include <iostream>
#include <stdexcept>

#include <ctnn/ctnn.hpp>

#include "kill_hook.hpp"
#include "train_main.hpp"

namespace ctnn::cli {
std::unique_ptr<CifarNetwork> make_resnet50(std::uint64_t seed);  // examples/ctnn_train_resnet50.cpp
}  // namespace ctnn::cli

namespace {
using namespace ctnn;
using SmallNet =
    Network<Shape<3, 32, 32>,
            Sequential<Conv2d<3, 16, 3, 1, 1>, BatchNorm2d<16>, ReLU, MaxPool2d<2>, Conv2d<16, 32, 3, 1, 1>, ReLU,
                       MaxPool2d<4>, Flatten, Linear<512, 512>, ReLU, Dropout<>, Linear<512, 10>>>;
}  // namespace

int main(int argc, char** argv) {
#ifdef CTNN_TRAIN_MPI
  std::optional<ctnn::dist::Environment> mpi;  // as ctnn-train: MPI only under mpiexec
  if (ctnn::dist::launched_by_mpiexec()) mpi.emplace(argc, argv);
#endif
  try {
    ctnn::test::install_kill_hook();
  } catch (const std::invalid_argument& e) {
    std::cerr << "ctnn-train-small: " << e.what() << "\n";
    return 1;
  }
  return ctnn::cli::train_main(argc, argv, "ctnn-train-small",
                               {{"small", ctnn::cli::make_network<SmallNet>}, {"resnet50", ctnn::cli::make_resnet50}});
}
