// The fuzzers' tiny network-shaped object: a "0" layer with weight [2, 2] and bias [2] and a
// BatchNorm-like "1" with running_mean [2] and num_batches_tracked. It needs no Eigen (the layer
// headers need a newer clang than Debian's), so fuzz_checkpoint can load into it, and
// make_seeds writes its state as the seed `tiny.ckpt`.
#pragma once

#include <cstdint>
#include <vector>

#include "ctnn/core/state.hpp"

namespace ctnn::fuzz {

struct TinyNet {
  std::vector<float> weight = {0.5f, -0.25f, 1.5f, 2.0f}, bias = {-1.0f, 3.0f}, grad = std::vector<float>(6),
                     mean = {0.25f, -0.75f};
  std::int64_t count = 7;
  Param w{weight.data(), grad.data(), 4}, b{bias.data(), grad.data() + 4, 2};
  void visit_state(StateVisitor& v) {
    v.parameter("0.weight", {2, 2}, w);
    v.parameter("0.bias", {2}, b);
    v.buffer("1.running_mean", {2}, mean);
    v.counter("1.num_batches_tracked", count);
  }
};

}  // namespace ctnn::fuzz
