// ctnn-train's program instantiated for VGG16 (see ctnn_train.cpp).
#include <ctnn/models/vgg.hpp>

#include "train_cli.hpp"

namespace ctnn::cli {
int train_vgg16(const TrainConfig& c) { return train_run<VGG16>(c); }
}  // namespace ctnn::cli
