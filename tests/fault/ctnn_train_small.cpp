// ctnn-train-small: ctnn-train's program (examples/train_main.hpp: the same options, Trainer,
// files and exit codes) for the fault-injection tests (tests/fault/fault_driver.cpp), with the
// kill points of kill_hook.hpp installed from CTNN_FAULT_KILL_AT (ctnn-train itself has none).
// --model small is a network small enough that a whole run takes about a second: it has
// BatchNorm statistics, a Dropout layer's draw counter and Adam's moments to restore, like the
// real networks, and its resume snapshot is ~3 MB, written in ~60 pieces, so a kill can land
// inside a save (small_network.cpp). --model resnet50 is ctnn-train's own
// (examples/cifar_resnet50.cpp).
#include <stdexcept>
#include <string>

#include "kill_hook.hpp"
#include "train_main.hpp"

namespace ctnn::test {
std::unique_ptr<cli::CifarNetwork> make_small(std::uint64_t seed);  // small_network.cpp
}  // namespace ctnn::test

int main(int argc, char** argv) {
#ifdef CTNN_TRAIN_MPI
  std::optional<ctnn::dist::Environment> mpi;  // as ctnn-train: MPI only under mpiexec
  if (ctnn::dist::launched_by_mpiexec()) mpi.emplace(argc, argv);
#endif
  try {
    ctnn::test::install_kill_hook();
  } catch (const std::invalid_argument& e) {
    ctnn::cli::print_error(std::string("ctnn-train-small: ") + e.what() + "\n");
    return 1;
  }
  return ctnn::cli::train_main(argc, argv, "ctnn-train-small",
                               {{"small", ctnn::test::make_small}, {"resnet50", ctnn::cli::make_resnet50}});
}
