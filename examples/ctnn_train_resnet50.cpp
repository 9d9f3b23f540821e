// ctnn-train's program instantiated for ResNet50_layer4 (see ctnn_train.cpp).
#include <ctnn/models/resnet.hpp>

#include "train_cli.hpp"

namespace ctnn::cli {
int train_resnet50(const TrainConfig& c) { return train_run<ResNet50_layer4<10>>(c); }
}  // namespace ctnn::cli
