// ctnn-train: train VGG16 or ResNet50_layer4 on CIFAR-10 for one epoch on the CPU, as the
// assignment's main.py does, then report the test accuracy. The program is train_cli.hpp.
#include <ctnn/ctnn.hpp>

#include "train_cli.hpp"

int main(int argc, char** argv) {
  return ctnn::cli::train_main(argc, argv, "ctnn-train",
                               {{"vgg16", ctnn::cli::train_run<ctnn::VGG16>},
                                {"resnet50", ctnn::cli::train_run<ctnn::ResNet50_layer4<10>>}});
}
