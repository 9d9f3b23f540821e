// Where the batch a network sees sits in a larger, global batch, for data-parallel training.
//
// When several processes train one network on shares of each global batch (ctnn/dist/), two
// layers must see past their own share to compute what one process would on the whole batch:
// BatchNorm's batch statistics are sums over every image of the global batch (SyncBatchNorm),
// and Dropout's masks are keyed by each value's position in the global batch. Layers read that
// context here; ctnn::dist sets it around a step (dist::ShardScope). Core knows nothing of MPI:
// the reduction is a callback. Alone (the default) nothing changes, bit for bit.
#pragma once

#include <cstddef>

namespace ctnn {

struct BatchShard {
  int offset = 0;  // the global index of this process's first sample
  int global = 0;  // samples in the global batch; 0 = this process has the whole batch
  // Sums `count` doubles element-wise over every process holding a share, in place, the same
  // result on each. Null: BatchNorm uses its own share's statistics (PyTorch DDP's plain
  // BatchNorm). Called outside OpenMP regions, by the thread that runs the forward.
  void (*allreduce)(double* values, std::size_t count, void* context) = nullptr;
  void* context = nullptr;

  // The global batch size for a local batch of n samples.
  int global_size(int n) const { return global > 0 ? global : n; }
};

namespace detail {
// One per thread, as NoGrad's flag: two threads may train two networks at once. Layers read it
// on the thread that runs the pass, before their OpenMP regions.
inline BatchShard& current_shard_slot() {
  thread_local BatchShard shard;
  return shard;
}
}  // namespace detail

// The shard of the forward/backward pass running now.
inline const BatchShard& current_shard() { return detail::current_shard_slot(); }

// Sets the shard for a scope (one training step), restoring the previous one on exit.
class ShardScope {
 public:
  explicit ShardScope(const BatchShard& s) : saved_(detail::current_shard_slot()) { detail::current_shard_slot() = s; }
  ~ShardScope() { detail::current_shard_slot() = saved_; }
  ShardScope(const ShardScope&) = delete;
  ShardScope& operator=(const ShardScope&) = delete;

 private:
  BatchShard saved_;
};

}  // namespace ctnn
