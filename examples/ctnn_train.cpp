// ctnn-train: train VGG16 or ResNet50_layer4 on CIFAR-10 for one epoch on the CPU, as the
// assignment's main.py does, then report the test accuracy. The program is train_main.hpp and
// train_cli.hpp, compiled here once for both networks (it sees them as a CifarNetwork); each
// network is compiled in its own file (cifar_<model>.cpp), so that no translation unit holds
// both a network and the trainer, and they build in parallel.
#include "train_main.hpp"

int main(int argc, char** argv) {
#ifdef CTNN_TRAIN_MPI
  // Under mpiexec: MPI_Init here, MPI_Finalize on return. Run alone, no MPI at all (a singleton
  // MPI start-up is slow and on some machines noisy).
  std::optional<ctnn::dist::Environment> mpi;
  if (ctnn::dist::launched_by_mpiexec()) mpi.emplace(argc, argv);
#endif
  return ctnn::cli::train_main(argc, argv, "ctnn-train", ctnn::cli::cifar_models());
}
