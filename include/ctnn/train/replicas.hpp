// The other processes of a data-parallel training run, as the Trainer sees them. The Trainer
// knows nothing of MPI: ctnn::dist::TrainerReplicas (dist/data_parallel.hpp) implements this
// over a communicator. Every call is collective: all processes make it, in the same order.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ctnn/core/shard.hpp"
#include "ctnn/data/loader.hpp"

namespace ctnn {

class Replicas {
 public:
  virtual ~Replicas() = default;
  virtual int rank() const = 0;  // this process, 0 .. size() - 1; process 0 writes the files
  virtual int size() const = 0;
  // What the layers must know of this process's share of `batch` (core/shard.hpp).
  virtual BatchShard shard(const data::LoaderBatch& batch) const = 0;
  // Element-wise sums over all processes, in place (gradients), and of one number (a loss).
  virtual void sum(std::span<float> values) const = 0;
  virtual double sum(double value) const = 0;
  // Process 0's bytes on every process (the resume snapshot it read).
  virtual void broadcast(std::vector<std::uint8_t>& bytes) const = 0;
  // Returns if every process passes the same `lines` (one fact a line) as process 0; otherwise
  // throws on every process alike, naming the first process that differs and the first line in
  // which it does, with process 0's.
  virtual void require_same(const std::string& lines) const = 0;
};

}  // namespace ctnn
