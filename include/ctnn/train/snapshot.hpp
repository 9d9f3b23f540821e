// The resume snapshot: everything an interrupted training run needs to continue exactly as if
// it had not stopped, in a PyTorch-format file (so it is as robust and inspectable as any
// checkpoint). Its entries, in file order:
//   model.<key>                   the network's state_dict
//   optimizer.<name>              the optimizer's state (its visit_state, train/optim.hpp)
//   trainer.<name>                the run: seed, batch size, position, running-loss sum,
//                                 training-set size
//   dropout.<layer>.seed|draws    every layer with random state (layers/layer.hpp)
//   optimizer_options.<name>_bits the optimizer's options (Adam's betas and eps, SGD's momentum,
//                                 ...) where it names them (visit_options), as double bits
// Every value is a tensor; doubles travel as their int64 bit patterns so that nothing is
// rounded. One table per group serves both writing and reading, but for trainer.train_size and
// optimizer_options.*: written after the table and checked only where present (snapshots before
// sessions 17 and 29 lack them). A snapshot is checked whole before anything is restored from
// it, and what is restored is put back if an entry is refused half-way: a refused snapshot
// leaves the network and the optimizer as they were.
#pragma once

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
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

// The shortest text that reads back as v, as %g lays it out (0.999, 0.0001, 1e-08).
inline std::string shortest_text(double v) {
  char b[32];
  return std::string(b, std::to_chars(b, b + sizeof b, v, std::chars_format::general).ptr);
}

// The optimizer's options as f(name, value) (Adam's beta1, beta2, eps; SGD's momentum, ...),
// where the optimizer names them: an optimizer of the user's without visit_options has none.
template <class Optimizer, class F>
void each_option(const Optimizer& opt, F&& f) {
  if constexpr (requires { opt.visit_options(f); }) opt.visit_options(f);
}

// A snapshot of a run whose optimizer had other options (Adam's betas, SGD's momentum) would
// continue as another run; PyTorch's load_state_dict would take the saved ones over silently.
// Refused instead, naming the first that differs; not checked where the snapshot holds none.
template <class Optimizer>
void require_same_options(const io::StateDict& sd, const std::string& file, const Optimizer& opt) {
  std::vector<std::string> saved, mine;
  for (const auto& [key, t] : sd)
    if (key.rfind("optimizer_options.", 0) == 0) saved.push_back(key);
  if (saved.empty()) return;
  each_option(opt, [&](const char* name, double value) {
    const std::string key = std::string("optimizer_options.") + name + "_bits";
    mine.push_back(key);
    const io::Tensor* t = sd.find(key);
    if (!t) return;  // (the lists differ: said below)
    if (t->dtype() != io::DType::int64 || t->numel() != 1)
      throw io::CheckpointError(file, "is corrupt: " + key + " is not one int64");
    const std::int64_t was = t->int64s().front();
    if (was != std::bit_cast<std::int64_t>(value))
      throw io::CheckpointError(file, "was written by a run whose optimizer had " + std::string(name) + " = " +
                                          shortest_text(std::bit_cast<double>(was)) + "; this run's has " +
                                          shortest_text(value) +
                                          ": resume with the same optimizer options");
  });
  std::sort(saved.begin(), saved.end());
  std::sort(mine.begin(), mine.end());
  if (saved != mine)
    throw io::CheckpointError(file, "holds the options of another optimizer than this run's (" +
                                        io::key_list(saved, ", ") + ")");
}

// Everything restore_snapshot changes (the network's state_dict; the optimizer's state and the
// layers' random state as snapshot entries), copied, and put back when an entry is refused after
// others were restored.
template <class Net, class Optimizer>
class RestoredState {
 public:
  RestoredState(Net& net, Optimizer& opt) : net_(net), opt_(opt), model_(io::state_dict(net)) {
    StateWriter writer(rest_);
    opt.visit_state(writer, "optimizer");
    each_random_state_entry(net, [&](const std::string& key, std::int64_t& v) { writer.counter(key, v); });
  }
  void put_back() {
    io::load_state_dict(net_, model_, /*strict=*/true, "the state before the snapshot");
    StateReader reader(rest_, "the state before the snapshot");
    opt_.visit_state(reader, "optimizer");
    each_random_state_entry(net_, [&](const std::string& key, std::int64_t& v) { reader.counter(key, v); });
  }

 private:
  Net& net_;
  Optimizer& opt_;
  io::StateDict model_, rest_;
};

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
  detail::each_option(opt, [&](const char* name, double value) {
    auto bits = std::bit_cast<std::int64_t>(value);
    writer.counter(std::string("optimizer_options.") + name + "_bits", bits);
  });
  io::write_checkpoint(file, sd);
}

// The same from a snapshot already read (`sd`, read from `file`): how the processes of a
// data-parallel run restore the one snapshot process 0 read and sent them. `check_position`
// (optional) may refuse the position, by throwing, before anything is restored.
template <class Net, class Optimizer>
TrainPosition restore_snapshot(const io::StateDict& sd, const std::string& file, Net& net, Optimizer& opt,
                               std::uint64_t seed, int batch_size, std::int64_t train_size,
                               const std::function<void(const TrainPosition&)>& check_position = {}) {
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
  if (check_position) check_position(at);
  detail::require_optimizer_entries(sd, file, opt);  // before anything is loaded
  detail::require_same_options(sd, file, opt);
  io::StateDict model;
  for (const auto& [key, t] : sd)
    if (key.rfind("model.", 0) == 0) model.insert_or_assign(key.substr(6), t);
  detail::RestoredState before(net, opt);
  try {
    io::load_state_dict(net, model, /*strict=*/true, file);  // (all checked before it loads any)
    opt.visit_state(reader, "optimizer");
    try {  // the optimizer's own rule for a learning rate (set_lr checks it), on the one read
      opt.set_lr(opt.lr());
    } catch (const std::invalid_argument& e) {
      throw io::CheckpointError(file, std::string("is corrupt: optimizer.lr_bits: ") + e.what());
    }
    detail::each_random_state_entry(net, [&](const std::string& key, std::int64_t& v) { reader.counter(key, v); });
  } catch (...) {
    before.put_back();
    throw;
  }
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
