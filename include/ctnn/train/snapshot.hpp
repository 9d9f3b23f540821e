// The resume snapshot: everything an interrupted training run needs to continue exactly as if
// it had not stopped, in a PyTorch-format file (so it is as robust and inspectable as any
// checkpoint). Its entries, in file order:
//   model.<key>                   the network's state_dict
//   optimizer.<name>              the optimizer's state (its visit_state, train/optim.hpp)
//   trainer.<name>                the run: seed, batch size, position, running-loss sum,
//                                 training-set size
//   dropout.<layer>.seed|draws    every layer with random state (layers/layer.hpp)
// Every value is a tensor; doubles travel as their int64 bit patterns so that nothing is
// rounded. One table per group serves both writing and reading, but for trainer.train_size:
// written after the table and checked only where present (snapshots before session 17 lack it).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "ctnn/core/state.hpp"
#include "ctnn/io/state_dict.hpp"
#include "ctnn/layers/leaf.hpp"

namespace ctnn {

// Where a run is.
struct TrainPosition {
  int epoch = 1;          // 1-based epoch in progress
  int batch = 0;          // batches of it done
  long total_steps = 0;
  double loss_sum = 0.0;  // sum of this epoch's losses so far (the running mean's numerator)
};

namespace detail {

// The trainer.* entries: f(key, value) for each, in file order. The values are read after the
// calls, so f may either read or assign them.
template <class Seed, class BatchSize, class F>
void each_run_entry(Seed& seed, BatchSize& batch_size, TrainPosition& at, F&& f) {
  auto entry = [&](const char* key, auto& value) {
    using T = std::remove_reference_t<decltype(value)>;
    std::int64_t v;
    if constexpr (std::is_floating_point_v<T>) v = std::bit_cast<std::int64_t>(value);
    else v = static_cast<std::int64_t>(value);
    f(key, v);
    if constexpr (std::is_floating_point_v<T>) value = std::bit_cast<double>(v);
    else value = static_cast<T>(v);
  };
  entry("trainer.seed", seed);
  entry("trainer.batch_size", batch_size);
  entry("trainer.epoch", at.epoch);
  entry("trainer.batch", at.batch);
  entry("trainer.total_steps", at.total_steps);
  entry("trainer.loss_sum_bits", at.loss_sum);
}

// A trainer.* value read from `file`, refused unless a run could have written it: each field's
// range, checked on the int64 before it is narrowed (an epoch of 2^32 + 1 would become 1).
inline void check_run_entry(const std::string& file, std::string_view key, std::int64_t v) {
  constexpr std::int64_t int_max = std::numeric_limits<int>::max();
  auto refuse = [&](const std::string& what) {
    throw io::CheckpointError(file, "is corrupt: " + std::string(key) + " is " + what);
  };
  if (key == "trainer.epoch" && (v < 1 || v > int_max))
    refuse(std::to_string(v) + ", not an epoch number from 1");
  if ((key == "trainer.batch" && (v < 0 || v > int_max)) || (key == "trainer.total_steps" && v < 0))
    refuse(std::to_string(v) + ", not a count of steps");
  if (key == "trainer.loss_sum_bits") {
    const double sum = std::bit_cast<double>(v);
    if (!(sum >= 0.0) || !std::isfinite(sum))  // a sum of cross-entropy losses
      refuse("the bits of " + std::to_string(sum) + ", not a finite sum of losses");
  }
}

// The dropout.* entries, the same way.
template <class Net, class F>
void each_random_state_entry(Net& net, F&& f) {
  for_each_leaf(net, [&](Leaf& layer, const std::string& name) {
    if (!layer.has_random_state()) return;
    auto seed = static_cast<std::int64_t>(layer.seed()), draws = static_cast<std::int64_t>(*layer.draws());
    f("dropout." + name + ".seed", seed);
    f("dropout." + name + ".draws", draws);
    layer.set_seed(static_cast<std::uint64_t>(seed));
    *layer.draws() = static_cast<std::uint64_t>(draws);
  });
}

// Writes the optimizer's state into a StateDict.
struct StateWriter : StateVisitor {
  io::StateDict& sd;
  explicit StateWriter(io::StateDict& s) : sd(s) {}
  void buffer(const std::string& name, const TensorShape& shape, std::span<float> data) override {
    sd.insert_or_assign(name, io::Tensor::from_floats(shape, data));
  }
  void counter(const std::string& name, std::int64_t& value) override {
    sd.insert_or_assign(name, io::Tensor::scalar_int64(value));
  }
};

// Reads a snapshot's entries, each required with its dtype and size.
struct StateReader : StateVisitor {
  const io::StateDict& sd;
  std::string file;
  StateReader(const io::StateDict& s, std::string f) : sd(s), file(std::move(f)) {}
  void buffer(const std::string& name, const TensorShape&, std::span<float> data) override {
    const io::Tensor* t = sd.find(name);
    if (!t || t->dtype() != io::DType::float32 || t->numel() != data.size())
      throw io::CheckpointError(file, "entry '" + name + "' is missing or does not fit this network's " +
                                          std::to_string(data.size()) + " parameters");
    t->copy_to(data);
  }
  void counter(const std::string& name, std::int64_t& value) override {
    const io::Tensor* t = sd.find(name);
    if (!t || t->dtype() != io::DType::int64 || t->numel() != 1)
      throw io::CheckpointError(file, "not a ctnn resume checkpoint: no int64 entry '" + name + "'");
    value = t->int64s().front();
  }
};

// The snapshot's optimizer entries must be the ones `opt` keeps: a snapshot of another
// optimizer (Adam's moments where SGD keeps a momentum buffer, or nothing) is refused, rather
// than half-read or read in part after the weights were loaded.
template <class Optimizer>
void require_optimizer_entries(const io::StateDict& sd, const std::string& file, Optimizer& opt) {
  struct Names : StateVisitor {
    std::vector<std::string> names;
    void buffer(const std::string& name, const TensorShape&, std::span<float>) override { names.push_back(name); }
    void counter(const std::string& name, std::int64_t&) override { names.push_back(name); }
  } wanted;
  opt.visit_state(wanted, "optimizer");
  std::vector<std::string> saved;
  for (const auto& [key, t] : sd)
    if (key.rfind("optimizer.", 0) == 0) saved.push_back(key);
  std::sort(wanted.names.begin(), wanted.names.end());
  std::sort(saved.begin(), saved.end());
  if (saved == wanted.names) return;
  auto list = [](const std::vector<std::string>& v) { return v.empty() ? std::string("none") : io::key_list(v, ", "); };
  throw io::CheckpointError(file, "holds the state of another optimizer than this run's (entries " + list(saved) +
                                      "; this optimizer keeps " + list(wanted.names) + ")");
}

}  // namespace detail

// `train_size`: the images of the training set, so that a resume on another set (where the
// position within an epoch means other batches) is refused.
template <class Net, class Optimizer>
void write_snapshot(const std::filesystem::path& file, Net& net, Optimizer& opt, std::uint64_t seed, int batch_size,
                    TrainPosition at, std::int64_t train_size) {
  io::StateDict sd;
  for (const auto& [key, t] : io::state_dict(net)) sd.insert_or_assign("model." + key, t);
  detail::StateWriter writer(sd);
  opt.visit_state(writer, "optimizer");
  detail::each_run_entry(seed, batch_size, at, [&](const char* key, std::int64_t& v) { writer.counter(key, v); });
  writer.counter("trainer.train_size", train_size);
  detail::each_random_state_entry(net, [&](const std::string& key, std::int64_t& v) { writer.counter(key, v); });
  io::write_checkpoint(file, sd);
}

// The same from a snapshot already read (`sd`, read from `file`): how the processes of a
// data-parallel run restore the one snapshot process 0 read and sent them.
template <class Net, class Optimizer>
TrainPosition restore_snapshot(const io::StateDict& sd, const std::string& file, Net& net, Optimizer& opt,
                               std::uint64_t seed, int batch_size, std::int64_t train_size) {
  detail::StateReader reader(sd, file);
  std::int64_t saved_seed = 0, saved_batch_size = 0;
  TrainPosition at;
  detail::each_run_entry(saved_seed, saved_batch_size, at, [&](const char* key, std::int64_t& v) {
    reader.counter(key, v);
    detail::check_run_entry(file, key, v);  // before it is narrowed to its field's type
  });
  if (at.batch > at.total_steps)
    throw io::CheckpointError(file, "is corrupt: its position says " + std::to_string(at.batch) +
                                        " batches of this epoch are done but " + std::to_string(at.total_steps) +
                                        " steps in all");
  if (static_cast<std::uint64_t>(saved_seed) != seed || saved_batch_size != batch_size)
    throw io::CheckpointError(file, "was written by a run with seed " + std::to_string(saved_seed) +
                                                 " and batch size " + std::to_string(saved_batch_size) +
                                                 "; resume with the same --seed and --batch-size");
  if (sd.find("trainer.train_size")) {  // (snapshots written before session 17 lack it)
    std::int64_t saved_size = 0;
    reader.counter("trainer.train_size", saved_size);
    if (saved_size != train_size)
      throw io::CheckpointError(file, "was written by a run on " + std::to_string(saved_size) +
                                          " training images, and this one has " + std::to_string(train_size) +
                                          "; resume on the same data set");
  }
  detail::require_optimizer_entries(sd, file, opt);  // before anything is loaded
  io::StateDict model;
  for (const auto& [key, t] : sd)
    if (key.rfind("model.", 0) == 0) model.insert_or_assign(key.substr(6), t);
  io::load_state_dict(net, model, /*strict=*/true, file);
  opt.visit_state(reader, "optimizer");
  try {  // the optimizer's own rule for a learning rate (set_lr checks it), on the one read
    opt.set_lr(opt.lr());
  } catch (const std::invalid_argument& e) {
    throw io::CheckpointError(file, std::string("is corrupt: optimizer.lr_bits: ") + e.what());
  }
  detail::each_random_state_entry(net, [&](const std::string& key, std::int64_t& v) { reader.counter(key, v); });
  return at;
}

// Restores the network, the optimizer and the layers' random state from `file` and returns
// the position, after checking that the snapshot belongs to a run with this seed, batch size and
// training-set size.
template <class Net, class Optimizer>
TrainPosition read_snapshot(const std::filesystem::path& file, Net& net, Optimizer& opt, std::uint64_t seed,
                            int batch_size, std::int64_t train_size) {
  return restore_snapshot(io::read_checkpoint(file), file.string(), net, opt, seed, batch_size, train_size);
}

}  // namespace ctnn
