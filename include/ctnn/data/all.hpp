// The whole CIFAR-10 data pipeline: reader, transforms, loader and the synthetic source.
#pragma once

#include "ctnn/data/cifar.hpp"
#include "ctnn/data/dataset.hpp"
#include "ctnn/data/loader.hpp"
#include "ctnn/data/synthetic.hpp"
#include "ctnn/data/transforms.hpp"
