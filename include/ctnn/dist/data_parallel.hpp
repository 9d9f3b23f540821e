// Data-parallel training over MPI processes, as PyTorch's DistributedDataParallel, with the same
// numbers as one process on the whole batch.
//
// Every process holds a replica of the network (same seed, so the same initial weights) and
// trains it on its contiguous share of each global batch (data::LoaderOptions::shard). One step:
//
//   dist::StepScope step(comm, batch);                    // BatchNorm and Dropout see the global batch
//   net.zero_grad();
//   float share = criterion.forward(net.forward(batch.images), batch.labels, batch.global_size);
//   net.backward(batch.images, criterion.grad());
//   dist::allreduce_gradients(comm, net.gradients());     // one MPI_Allreduce of every gradient
//   optimizer.step();                                     // identical on every process
//
// Why the results match one process: the loss of each share is its sum divided by the global
// batch size, so the shares' gradients add up to the gradient of the global mean loss, and the
// all-reduce adds them. BatchNorm's batch statistics are all-reduced in forward and backward
// (SyncBatchNorm; BatchNormMode::local gives DDP's per-process statistics instead), and Dropout
// keys its masks by position in the global batch. What differs is the order of float additions
// where a sum over the batch is split between processes (weight gradients, the all-reduce), so
// a multi-process run agrees with a one-process run to float rounding, not bit for bit; runs
// with the same process count are bit-identical (the all-reduce of two values is commutative,
// and MPI gives every process the same sum).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "ctnn/core/shard.hpp"
#include "ctnn/data/loader.hpp"
#include "ctnn/dist/mpi.hpp"
#include "ctnn/train/replicas.hpp"

namespace ctnn::dist {

// BatchNorm's training statistics: over the global batch (SyncBatchNorm: a one-process run
// reproduced) or over each process's share (DDP's default: cheaper, and the running statistics
// of each replica then differ; checkpoints take process 0's).
enum class BatchNormMode { global, local };

// The shard of `comm`'s process, for data::LoaderOptions::shard.
inline data::LoaderOptions::Shard shard_of(const Communicator& comm) { return {comm.rank(), comm.size()}; }

namespace detail {
inline void sum_doubles(double* v, std::size_t n, void* comm) {
  static_cast<const Communicator*>(comm)->allreduce_sum(std::span<double>(v, n));
}
}  // namespace detail

// What the layers must know of this process's share of `batch` (core/shard.hpp): its place in
// the global batch, and with BatchNormMode::global the exchange of BatchNorm's sums.
inline BatchShard shard_for(const Communicator& comm, const data::LoaderBatch& batch,
                            BatchNormMode bn = BatchNormMode::global) {
  BatchShard s;
  s.offset = batch.offset;
  s.global = batch.global_size > 0 ? batch.global_size : batch.size();
  if (bn == BatchNormMode::global && comm.size() > 1) {
    s.allreduce = &detail::sum_doubles;
    s.context = const_cast<Communicator*>(&comm);  // only read through
  }
  return s;
}

// For one training step (forward, loss and backward): the layers see this process's batch as its
// share of the global batch.
class StepScope {
 public:
  StepScope(const Communicator& comm, const data::LoaderBatch& batch, BatchNormMode bn = BatchNormMode::global)
      : scope_(shard_for(comm, batch, bn)) {}

 private:
  ShardScope scope_;
};

// After backward: every process's gradients become the sum over all processes (the gradient of
// the global batch's mean loss when each share's loss was divided by the global batch size).
inline void allreduce_gradients(const Communicator& comm, std::span<float> gradients) {
  if (comm.size() > 1) comm.allreduce_sum(gradients);
}

// The global batch's mean loss from every process's share of it (what each
// CrossEntropyLoss::forward(..., mean_over = global size) returned).
inline double global_loss(const Communicator& comm, float share) {
  double v = share;
  comm.allreduce_sum(std::span<double>(&v, 1));
  return v;
}

// The Trainer's view of the other processes (train/replicas.hpp), over `comm`:
//   dist::TrainerReplicas replicas(comm);
//   trainer.set_replicas(replicas);
class TrainerReplicas : public Replicas {
 public:
  explicit TrainerReplicas(const Communicator& comm, BatchNormMode bn = BatchNormMode::global) : comm_(comm), bn_(bn) {}
  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  BatchShard shard(const data::LoaderBatch& batch) const override { return shard_for(comm_, batch, bn_); }
  void sum(std::span<float> values) const override { allreduce_gradients(comm_, values); }
  double sum(double value) const override {
    comm_.allreduce_sum(std::span<double>(&value, 1));
    return value;
  }
  void broadcast(std::vector<std::uint8_t>& bytes) const override {
    std::string s(bytes.begin(), bytes.end());
    comm_.broadcast(s, 0);
    bytes.assign(s.begin(), s.end());
  }
  void require_same(const std::string& lines) const override;

 private:
  const Communicator& comm_;
  BatchNormMode bn_;
};

// An error every process raised together (the same message on each): reported once.
struct CollectiveError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Checks that every process was started with the same settings (`config`: one setting per line,
// e.g. the command line's options). If not, throws CollectiveError on every process, naming the
// first process that differs, its setting and process 0's ("the processes <subject>: process 1
// has '...' where process 0 has '...'"). A mismatch would otherwise be a silent divergence or a
// collective call that never completes.
inline void require_same(const Communicator& comm, const std::string& config,
                         const std::string& subject = "were started with different settings") {
  std::string reference = config;
  comm.broadcast(reference, 0);
  auto lines = [](const std::string& s) {
    std::vector<std::string> out;
    std::size_t at = 0;
    while (at <= s.size()) {
      const std::size_t end = s.find('\n', at);
      out.push_back(s.substr(at, end == std::string::npos ? std::string::npos : end - at));
      if (end == std::string::npos) break;
      at = end + 1;
    }
    return out;
  };
  std::string mine, theirs;  // the first differing line: this process's and process 0's
  if (config != reference) {
    const auto a = lines(config), b = lines(reference);
    for (std::size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
      mine = i < a.size() ? a[i] : "(nothing)";
      theirs = i < b.size() ? b[i] : "(nothing)";
      if (mine != theirs) break;
    }
  }
  std::vector<std::int64_t> differs(static_cast<std::size_t>(comm.size()), 0);
  differs[static_cast<std::size_t>(comm.rank())] = config != reference;
  comm.allreduce_sum(differs);
  int first = -1;
  for (int r = 0; r < comm.size() && first < 0; ++r)
    if (differs[static_cast<std::size_t>(r)]) first = r;
  if (first < 0) return;
  std::string pair = mine + '\n' + theirs;
  comm.broadcast(pair, first);
  const std::size_t cut = pair.find('\n');
  throw CollectiveError("ctnn::dist: the processes " + subject + ": process " +
                        std::to_string(first) + " has '" + pair.substr(0, cut) + "' where process 0 has '" +
                        pair.substr(cut + 1) + "'");
}

// What the Trainer checks before its first step (the data set's size, the weights).
inline void TrainerReplicas::require_same(const std::string& lines) const {
  dist::require_same(comm_, lines, "do not start alike");
}

// Runs body() (which returns an exit code) on every process. A CollectiveError is printed once,
// by process 0, and every process returns 1. Any other exception is this process's alone: it is
// printed with the process number and the whole job is aborted (MPI_Abort), because the other
// processes would wait for this one in their next collective call forever.
template <class F>
int run_or_abort(const Communicator& comm, const char* program, F&& body) {
  try {
    return body();
  } catch (const CollectiveError& e) {
    if (comm.rank() == 0) std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: process %d of %d: %s\n", program, comm.rank(), comm.size(), e.what());
    std::fflush(stderr);
    comm.abort(1);
  }
}

}  // namespace ctnn::dist
