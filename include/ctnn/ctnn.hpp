// ctnn: compile-time neural networks. The umbrella header.
#pragma once

#include "ctnn/core/random.hpp"
#include "ctnn/core/shape.hpp"
#include "ctnn/core/state.hpp"
#include "ctnn/core/tensor.hpp"
#include "ctnn/core/threading.hpp"
#include "ctnn/core/grad_mode.hpp"
#include "ctnn/core/shard.hpp"

#include "ctnn/ops/precision.hpp"

#include "ctnn/layers/batchnorm.hpp"
#include "ctnn/layers/conv2d.hpp"
#include "ctnn/layers/dropout.hpp"
#include "ctnn/layers/flatten.hpp"
#include "ctnn/layers/identity.hpp"
#include "ctnn/layers/linear.hpp"
#include "ctnn/layers/pooling.hpp"
#include "ctnn/layers/relu.hpp"

#include "ctnn/compose/any_network.hpp"
#include "ctnn/compose/network.hpp"
#include "ctnn/compose/residual.hpp"
#include "ctnn/compose/sequential.hpp"

#include "ctnn/models/resnet.hpp"
#include "ctnn/models/vgg.hpp"

#include "ctnn/train/loss.hpp"
#include "ctnn/train/optim.hpp"

#include "ctnn/data/all.hpp"

#include "ctnn/io/state_dict.hpp"
#include "ctnn/io/svg.hpp"

#include "ctnn/train/trainer.hpp"
