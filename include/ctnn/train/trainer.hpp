// The assignment's training loop (main.py) as a library piece: Adam (or another optimizer),
// step-decayed learning rate, running-mean loss lines every 100 steps, checkpoints named as
// main.py names them, exact resumption of an interrupted run (also after SIGKILL at any point;
// the snapshot format is train/snapshot.hpp, the loss log train/csv_log.hpp), a graceful stop on
// request (Ctrl-C or SIGTERM through train/stop.hpp, or max_steps) that leaves the weights so
// far as a state_dict <model>_step<N>.ckpt beside the snapshot, a stop with the
// step and the layer named when the loss or a gradient turns NaN or infinite, progress
// reported to observers (train/progress.hpp), and test accuracy in evaluation mode.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <ostream>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ctnn/core/grad_mode.hpp"
#include "ctnn/core/hooks.hpp"
#include "ctnn/core/text.hpp"
#include "ctnn/data/loader.hpp"
#include "ctnn/io/file.hpp"
#include "ctnn/io/state_dict.hpp"
#include "ctnn/train/csv_log.hpp"
#include "ctnn/train/loss.hpp"
#include "ctnn/train/numerics.hpp"
#include "ctnn/train/optim.hpp"
#include "ctnn/train/progress.hpp"
#include "ctnn/train/replicas.hpp"
#include "ctnn/train/snapshot.hpp"
#include "ctnn/train/stop.hpp"

namespace ctnn {

struct TrainerOptions {
  int epochs = 1;
  int batch_size = 100;
  double lr = 1e-3;
  int lr_decay_every = 20;       // epochs; main.py: every 20 epochs ...
  double lr_decay_factor = 3.0;  // ... lr /= 3 and a checkpoint <model>_epoch<e>.ckpt
  std::uint64_t seed = 0;        // the loader's shuffles, crops and flips
  long max_steps = -1;           // stop after this many steps in total (smoke runs); -1 = all
  int log_every = 100;
  bool progress = false;         // a live progress line on stderr (for terminals)

  // Where checkpoints and the loss log go; empty = nowhere (nothing is written).
  std::filesystem::path out_dir;
  std::string model_name = "model";
  long checkpoint_every = 100;  // steps between resume snapshots (and at every epoch end); 0 = epoch ends only
  bool resume = false;          // continue from <model>_resume.ckpt in out_dir if it exists
  // On resumption, take the learning rate from `lr` (divided by lr_decay_factor once per decay
  // the run has already gone through, as if it had started with it) instead of the snapshot's,
  // and say so in the log if that changes it: resuming with a lower rate after a NaN. Off, the
  // snapshot's rate is kept whatever `lr` is, so resuming reproduces an uninterrupted run bit
  // for bit; on with the run's own `lr` that holds too (the same divisions give the same bits).
  bool resume_with_lr = false;
};

// Accuracy and confusion matrix of a classifier over a data set, in evaluation mode.
template <int Classes>
struct EvalResult {
  long correct = 0, total = 0;
  std::array<std::array<long, Classes>, Classes> confusion{};  // [true][predicted]
  double accuracy() const { return total ? 100.0 * static_cast<double>(correct) / static_cast<double>(total) : 0.0; }
  double class_accuracy(int c) const {
    long n = 0;
    for (long v : confusion[c]) n += v;
    return n ? 100.0 * static_cast<double>(confusion[c][c]) / static_cast<double>(n) : 0.0;
  }
};

template <class Net>
auto evaluate(Net& net, const data::Dataset& test, int batch_size = 100) {
  constexpr int K = Net::out_shape::channels;
  for (const int label : test.labels)  // (training checks them in the loss)
    if (label >= K)
      throw std::invalid_argument("evaluate: " + test.description + " has label " + std::to_string(label) +
                                  " and the network only " + std::to_string(K) + " classes");
  if (test.size() == 0) throw std::invalid_argument("evaluate: the data set holds no images" +
                                (test.description.empty() ? std::string() : " (" + test.description + ")"));
  EvalResult<K> r;
  struct Restore {  // the caller's mode, also when something below throws
    Net& net;
    bool was_training;
    ~Restore() { net.train(was_training); }
  } restore{net, net.is_training()};
  net.eval();
  data::DataLoader loader(test, data::LoaderOptions::test(batch_size));
  data::LoaderBatch batch;
  loader.start_epoch(0);
  const NoGrad no_grad;  // as the assignment's `with torch.no_grad():`
  while (loader.next(batch)) {
    const auto& logits = net.forward(batch.images);
    for (int i = 0; i < batch.size(); ++i) {
      const int p = argmax(logits, i);
      ++r.confusion[batch.labels[i]][p];
      r.correct += p == batch.labels[i];
      ++r.total;
    }
  }
  return r;
}

// Trains `net` as main.py does. With an out_dir it writes, like main.py, <model>_epoch<e>.ckpt
// at each learning-rate decay and <model>_final.ckpt at the end (PyTorch state_dict files), a
// CSV of the loss (train/csv_log.hpp), and <model>_resume.ckpt: everything an interrupted run
// needs to continue exactly as if it had not stopped (train/snapshot.hpp).
//
// Crash safety: every file is replaced atomically (io::write_file_atomically), the loss log
// is cut back to the snapshot on resumption, and temporary files of writes killed half-way are
// removed, so a run killed at any instant (SIGKILL, power loss before the next snapshot)
// continues with --resume to the same bytes as a run never interrupted.
//
// Numerical safety: every step checks the loss, then all gradients (one pass over the
// contiguous gradient buffer, before the optimizer touches a weight), and every checkpoint
// checks the weights and buffers it is about to save. A NaN or an infinity throws
// NumericalError naming the step and the first layer where it appeared, and nothing computed
// from it is saved: the last checkpoint on disk stays the last good one.
//
// The optimizer is any of train/optim.hpp's (step, lr, set_lr, visit_state); by default
// Optimizer(net, {.lr = options.lr}).
template <class Net, class Optimizer = Adam>
class Trainer {
 public:
  static constexpr int classes = Net::out_shape::channels;

  Trainer(Net& net, TrainerOptions o, Optimizer opt) : net_(net), o_(std::move(o)), opt_(std::move(opt)) {
    if (o_.epochs < 1) throw std::invalid_argument("Trainer: epochs must be at least 1");
    if (o_.batch_size < 1) throw std::invalid_argument("Trainer: batch size must be at least 1");
    if (o_.log_every < 1) throw std::invalid_argument("Trainer: log_every must be at least 1");
    // Checked here, not at the first decay, which may come after many epochs of unsaved work.
    if (o_.lr_decay_every < 0)
      throw std::invalid_argument("Trainer: lr_decay_every must be >= 0 (0: no decay), got " +
                                  std::to_string(o_.lr_decay_every));
    if (o_.lr_decay_every > 0 && !(std::isfinite(o_.lr_decay_factor) && o_.lr_decay_factor > 0))
      throw std::invalid_argument("Trainer: lr_decay_factor must be a positive number, got " +
                                  std::to_string(o_.lr_decay_factor));
    if (o_.max_steps < -1) throw std::invalid_argument("Trainer: max_steps must be >= 0, or -1 for no limit");
    if (o_.checkpoint_every < 0) throw std::invalid_argument("Trainer: checkpoint_every must be >= 0 (0: epoch ends only)");
  }
  Trainer(Net& net, const TrainerOptions& o) : Trainer(net, o, Optimizer(net, {.lr = o.lr})) {}

  Optimizer& optimizer() { return opt_; }
  // Told of every step, pause and epoch end (train/progress.hpp), after the progress line of
  // TrainerOptions::progress; not owned.
  void add_observer(TrainingObserver& observer) { observers_.push_back(&observer); }
  // Data-parallel training (ctnn/dist/): this trainer is one of replicas.size() processes, each
  // training on its share of every global batch of batch_size images, with the gradients summed
  // over all before every optimizer step. Process 0 alone writes the log, the loss log, the
  // snapshots and the checkpoints and tells the observers; a resumed run restores the snapshot
  // process 0 reads, whatever the process count that wrote it. fit() first checks that all
  // processes have training sets of one size and the same weights (the same --load file) and
  // takes process 0's out_dir on every process (so checkpoint_path() names the files written).
  // Not owned (it must outlive fit(): a temporary is refused); set before fit().
  void set_replicas(const Replicas& replicas) { replicas_ = &replicas; }
  void set_replicas(const Replicas&&) = delete;
  // Polls `flag` after every step (StopSignals::flag(), train/stop.hpp: set by Ctrl-C or
  // SIGTERM): once it is not 0, fit() finishes the step, writes the resume snapshot and the
  // weights so far (<model>_step<N>.ckpt) and returns, with interrupted() true. With replicas,
  // give every process a flag (or none): the processes agree after each step whether any of
  // them was asked to stop (one number summed, every step), so a signal that reaches one process
  // stops all of them after the same step. Not owned; set before fit().
  void stop_when(const std::atomic<int>& flag) { stop_flag_ = &flag; }
  // After fit(): whether it stopped early because of stop_when's flag (not when the flag came in
  // the run's last step: the run is complete then); whether the run is complete
  // (all epochs trained, <model>_final.ckpt written); and, for a run stopped before its end (by
  // the flag or by max_steps) with an out_dir, the state_dict of the weights so far.
  bool interrupted() const { return interrupted_; }
  bool finished() const { return finished_; }
  const std::filesystem::path& stopped_weights() const { return stopped_weights_; }
  std::filesystem::path checkpoint_path(const std::string& what) const {
    return o_.out_dir / (o_.model_name + "_" + what + ".ckpt");
  }
  std::filesystem::path csv_path() const { return o_.out_dir / (o_.model_name + "_train_log.csv"); }

  // Returns the mean loss of the last epoch trained. When resuming a run that had finished,
  // trains nothing. A second fit() of one Trainer is a new run from the weights and optimizer
  // state the first left (epochs counted from 1, the learning rate as the first left it) that
  // writes the same files: give it another out_dir or model_name to keep the first run's.
  double fit(const data::Dataset& train, std::ostream& log) {
    interrupted_ = finished_ = false;
    signal_ = 0;
    last_saved_step_ = -1;  // (of this run: a second fit() must not take the first one's)
    stopped_weights_.clear();
    train_size_ = train.size();
    if (train_size_ == 0) throw std::invalid_argument("Trainer::fit: the training set holds no images" +
                                  (train.description.empty() ? std::string() : " (" + train.description + ")"));
    if (replicas_) agree_on_data();
    auto loader_options = data::LoaderOptions::train(o_.seed, o_.batch_size);
    if (replicas_) loader_options.shard = {replicas_->rank(), replicas_->size()};
    data::DataLoader loader(train, loader_options);
    const int steps_per_epoch = loader.num_batches();
    if (lead()) remove_abandoned_saves(log);
    TrainPosition at = resume(log, steps_per_epoch);
    // As DDP starts its replicas from process 0's weights; here a difference (another --load
    // file) is an error rather than overwritten.
    // And every process polls a stop flag or none: the poll after each step is a collective call.
    if (replicas_)
      replicas_->require_same("weights before training: " + state_hash() +
                              "\nstop_when: " + (stop_flag_ ? "a flag" : "none"));
    if (lead() && !o_.out_dir.empty()) {
      const long rows = csv_.open(csv_path(), at.epoch, at.batch, at.total_steps);
      if (rows != at.total_steps)  // (rows lost, or a log that is not this run's: the snapshot still counts)
        log << "warning: " << csv_path().string() << " holds " << rows << " step rows, and the snapshot was taken after "
            << at.total_steps << " steps: the log's rows go on from step " << at.total_steps + 1 << std::endl;
    }
    progress_ = ProgressLine();  // the rate counts from here
    CrossEntropyLoss<classes> criterion;
    data::LoaderBatch batch;
    double mean = at.batch ? at.loss_sum / at.batch : 0.0;
    net_.train();
    for (; at.epoch <= o_.epochs && !stop(at); ++at.epoch, at.batch = 0, at.loss_sum = 0.0) {
      loader.start_epoch(at.epoch - 1, std::min(at.batch, steps_per_epoch));
      while (!stop(at) && loader.next(batch)) {
        const float loss = step(criterion, batch, at, steps_per_epoch);
        ++at.batch;
        ++at.total_steps;
        at.loss_sum += loss;
        mean = at.loss_sum / at.batch;
        csv_.row(at.epoch, at.batch, loss, mean, opt_.lr());
        notify(&TrainingObserver::on_step, StepReport{at.epoch, o_.epochs, at.batch, steps_per_epoch, at.total_steps,
                                                      loss, mean, opt_.lr(), batch.global_size, o_.batch_size,
                                                      replicas_ ? replicas_->size() : 1});
        if (at.batch % o_.log_every == 0) log_line(log, at, steps_per_epoch, mean);
        poll_stop_flag();
        // (a run about to stop mid-epoch writes its snapshot once, below)
        if (o_.checkpoint_every > 0 && at.total_steps % o_.checkpoint_every == 0 && at.batch < steps_per_epoch &&
            !stop(at))
          snapshot(at);
      }
      notify(&TrainingObserver::on_pause);
      if (at.batch < steps_per_epoch) break;  // stopped early (max_steps, stop flag): snapshot below
      end_epoch(at);
    }
    csv_.flush();
    finished_ = at.epoch > o_.epochs;
    if (finished_) {
      interrupted_ = false;  // a flag set in the last step: nothing was left undone
      if (lead() && !o_.out_dir.empty()) save_weights(at, checkpoint_path("final"));
    } else {
      // Keep the place for --resume (mid-epoch, or before any step with max_steps 0), unless an
      // epoch's end just wrote it.
      if (last_saved_step_ != at.total_steps) snapshot(at);
      stopped(at, steps_per_epoch, log);
    }
    return mean;
  }

 private:
  // One training step on `batch`, up to (not including) the optimizer's update if anything
  // turned non-finite; returns the loss.
  float step(CrossEntropyLoss<classes>& criterion, const data::LoaderBatch& batch, const TrainPosition& at,
             int steps_per_epoch) {
    net_.zero_grad();
    float loss;
    try {
      // With replicas: the layers see the global batch, this share's loss is its part of the
      // global mean, and the parts are summed (so every process sees the same loss).
      const ShardScope scope(replicas_ ? replicas_->shard(batch) : BatchShard{});
      loss = criterion.forward(net_.forward(batch.images), batch.labels, replicas_ ? batch.global_size : 0);
      const bool share_finite = std::isfinite(loss);
      if (replicas_) loss = static_cast<float>(replicas_->sum(static_cast<double>(loss)));
      if (!std::isfinite(loss)) [[unlikely]]
        forward_fault(at, steps_per_epoch, loss, batch, share_finite);
      net_.backward(batch.images, criterion.grad());
    } catch (const std::invalid_argument& e) {
      // A batch a layer cannot take (BatchNorm1d in training, as PyTorch's, refuses a last
      // batch of one image): said with the step and the batch's size, which the layer does not know.
      const int n = batch.images.batch();
      throw std::invalid_argument(step_name(at, steps_per_epoch) + ", a batch of " + std::to_string(n) +
                                  (n == 1 ? " image: " : " images: ") + e.what() + last_good());
    }
    if (replicas_) replicas_->sum(net_.gradients());
    if (auto* hook = hooks::installed()) [[unlikely]]
      hook->step_computed();
    if (!all_finite(net_.gradients())) [[unlikely]]
      gradient_fault(at, steps_per_epoch, loss);
    opt_.step();
    return loss;
  }

  // main.py's line every log_every steps.
  void log_line(std::ostream& log, const TrainPosition& at, int steps_per_epoch, double mean) {
    if (!lead()) return;
    notify(&TrainingObserver::on_pause);
    char line[128];
    std::snprintf(line, sizeof line, "Epoch [%d/%d], Step [%d/%d] Loss: %.4f", at.epoch, o_.epochs, at.batch,
                  steps_per_epoch, mean);
    log << line << std::endl;
  }

  // A complete epoch: the learning rate decays (with main.py's checkpoint), and the snapshot
  // moves to the start of the next epoch.
  void end_epoch(const TrainPosition& at) {
    if (o_.lr_decay_every > 0 && at.epoch % o_.lr_decay_every == 0) {
      opt_.set_lr(opt_.lr() / o_.lr_decay_factor);
      if (lead() && !o_.out_dir.empty()) save_weights(at, checkpoint_path("epoch" + std::to_string(at.epoch)));
    }
    snapshot(TrainPosition{at.epoch + 1, 0, at.total_steps, 0.0});
    csv_.flush();  // observers may read the log of the whole epoch (ctnn-train draws it)
    notify(&TrainingObserver::on_epoch_end, at.epoch);
  }

  template <class... A>
  void notify(void (TrainingObserver::*event)(A...), const std::remove_cvref_t<A>&... args) {
    if (!lead()) return;
    if (o_.progress) (progress_.*event)(args...);
    for (TrainingObserver* o : observers_) (o->*event)(args...);
  }

  bool lead() const { return !replicas_ || replicas_->rank() == 0; }
  bool stop(const TrainPosition& at) const {
    return interrupted_ || (o_.max_steps >= 0 && at.total_steps >= o_.max_steps);
  }
  // Once per step, on every process alike (with replicas it is a collective call).
  void poll_stop_flag() {
    if (!stop_flag_) return;
    signal_ = stop_flag_->load(std::memory_order_relaxed);
    interrupted_ = replicas_ ? replicas_->sum(signal_ != 0 ? 1.0 : 0.0) > 0 : signal_ != 0;
  }

  // A run that stops before its end (max_steps, the stop flag) leaves its weights so far as a
  // state_dict that ctnn-eval and PyTorch's load_state_dict take, named by the step so that it
  // is never taken for a finished run's <model>_final.ckpt; the snapshot is already on disk.
  void stopped(const TrainPosition& at, int steps_per_epoch, std::ostream& log) {
    if (!lead()) return;
    std::string why = "max_steps reached";
    if (interrupted_)
      why = signal_ == 0                          ? std::string("another process was asked to stop")
            : stop_flag_ == &StopSignals::flag() ? signal_name(signal_) + " received (a second one stops at once)"
                                                 : signal_name(signal_) + " received";
    log << "Stopped after step " << at.total_steps << " of "
        << static_cast<long>(steps_per_epoch) * o_.epochs << ": " << why << std::endl;
    if (o_.out_dir.empty()) return;
    stopped_weights_ = checkpoint_path("step" + std::to_string(at.total_steps));
    save_weights(at, stopped_weights_);
    log << "Weights after step " << at.total_steps << ": " << stopped_weights_.string()
        << " (a PyTorch state_dict; the run is not finished: --resume continues it from "
        << checkpoint_path("resume").string() << ")" << std::endl;
  }

  // With replicas, before the first collective call that depends on the data: every process
  // must train on a set of one size (else the process with fewer steps leaves the others waiting
  // in a collective call for ever), whose last batch leaves each process an image. The files are
  // process 0's, in its out_dir, which every process takes (the others write nothing), so that
  // their messages name the files that exist and they all agree on whether there are any.
  void agree_on_data() {
    replicas_->require_same("training set: " + std::to_string(train_size_) + " images");
    const std::string mine = o_.out_dir.string();
    std::vector<std::uint8_t> dir(mine.begin(), mine.end());
    replicas_->broadcast(dir);
    o_.out_dir = std::string(dir.begin(), dir.end());
    const int b = o_.batch_size, last = train_size_ % b == 0 ? b : train_size_ % b, n = replicas_->size();
    if (train_size_ > 0 && last < n)
      throw std::invalid_argument("ctnn::Trainer: " + std::to_string(train_size_) + " training images in batches of " +
                                  std::to_string(b) + " leave a last batch of " + std::to_string(last) +
                                  ", fewer than the " + std::to_string(n) +
                                  " processes that share every batch: choose a batch size that leaves at least " +
                                  std::to_string(n));
  }
  // The weights, buffers and counters, hashed (64-bit FNV-1a over their 32-bit words), in hex.
  std::string state_hash() {
    struct Hasher : StateVisitor {
      std::uint64_t h = 0xcbf29ce484222325ULL;
      void word(std::uint64_t w) { h = (h ^ w) * 0x100000001b3ULL; }
      void floats(std::span<const float> v) {
        for (const float f : v) word(std::bit_cast<std::uint32_t>(f));
      }
      void parameter(const std::string&, const TensorShape&, Param& p) override { floats(p.data()); }
      void buffer(const std::string&, const TensorShape&, std::span<float> d) override { floats(d); }
      void counter(const std::string&, std::int64_t& c) override { word(static_cast<std::uint64_t>(c)); }
    } hasher;
    net_.visit_state(hasher);
    return hex(hasher.h, 16);
  }

  // Leftovers of saves that were killed half-way; never taken for checkpoints, but large.
  void remove_abandoned_saves(std::ostream& log) const {
    if (o_.out_dir.empty() || !std::filesystem::is_directory(o_.out_dir)) return;
    for (const auto& temp : io::abandoned_temp_files(o_.out_dir, o_.model_name + "_")) {
      std::error_code ec;
      if (std::filesystem::remove(temp, ec))
        log << "Removed " << temp.string() << " (left by an interrupted save)" << std::endl;
    }
  }

  // Where to start: the resume snapshot's position if asked to resume and there is one. A new
  // run removes an earlier run's snapshot, whose loss log it is about to rewrite: left there, a
  // --resume after this run stopped before its own first snapshot would continue the earlier run
  // under this run's log.
  TrainPosition resume(std::ostream& log, int steps_per_epoch) {
    if (o_.out_dir.empty()) return {};
    const auto file = checkpoint_path("resume");
    if (!o_.resume) {
      std::error_code ec;
      if (lead() && std::filesystem::remove(file, ec))
        log << "Removed " << file.string() << ", an earlier run's snapshot (a new run starts; --resume continues one)"
            << std::endl;
      return {};
    }
    // Process 0 reads the file; with replicas, every process restores those bytes.
    bool found = lead() && std::filesystem::exists(file);
    std::vector<std::uint8_t> bytes;
    if (found) bytes = io::read_file(file);
    if (replicas_) {
      found = replicas_->sum(found ? 1.0 : 0.0) > 0;
      replicas_->broadcast(bytes);
    }
    if (!found) {  // said, so that a mistyped --out or model is not taken for a resumption
      if (lead()) log << "No " << file.string() << " to resume from: starting a new run" << std::endl;
      return {};
    }
    // The position is checked against this run before anything is restored: a refused snapshot
    // leaves the network and the optimizer as they were.
    auto check_position = [&](const TrainPosition& at) {
      if (at.batch > steps_per_epoch)  // (the same data set and batch size: restore_snapshot checks them)
        throw io::CheckpointError(file.string(), "is corrupt: it holds a run at batch " + std::to_string(at.batch) +
                                                     " of an epoch of " + std::to_string(steps_per_epoch) + " batches");
      if (at.epoch > o_.epochs + (at.batch == 0 ? 1 : 0))  // (epochs + 1, batch 0: a finished run's)
        throw io::CheckpointError(file.string(), "holds a run at epoch " + std::to_string(at.epoch) + ", batch " +
                                                     std::to_string(at.batch) + ", beyond this run's " +
                                                     std::to_string(o_.epochs) + " epoch(s); resume with as many epochs");
    };
    const TrainPosition at =
        restore_snapshot(io::parse_checkpoint(std::make_shared<const std::vector<std::uint8_t>>(std::move(bytes)),
                                              file.string()),
                         file.string(), net_, opt_, o_.seed, o_.batch_size, train_size_, check_position);
    last_saved_step_ = at.total_steps;
    if (lead())
      log << "Resuming from " << file.string() << ": epoch " << at.epoch << ", step " << at.batch
          << ", " << at.total_steps << " steps done" << std::endl;
    if (o_.resume_with_lr) resume_lr(at, log);
    return at;
  }

  // TrainerOptions::resume_with_lr: the rate `lr` would have reached at `at`, in place of the
  // snapshot's. Every process computes the same; process 0 logs a change.
  void resume_lr(const TrainPosition& at, std::ostream& log) {
    const int decays = o_.lr_decay_every > 0 ? (at.epoch - 1) / o_.lr_decay_every : 0;
    double lr = o_.lr;
    for (int i = 0; i < decays; ++i) lr /= o_.lr_decay_factor;  // as end_epoch divides it
    const double was = opt_.lr();
    if (lr == was) return;
    opt_.set_lr(lr);
    if (!lead()) return;
    log << "Learning rate " << (lr < was ? "lowered" : "raised") << " from " << number(was) << " to " << number(lr)
        << " on resume";
    if (decays > 0)
      log << " (" << number(o_.lr) << " divided by " << number(o_.lr_decay_factor)
          << (decays == 1 ? std::string(" at the decay") : " at each of the " + std::to_string(decays) + " decays")
          << " so far)";
    log << std::endl;
  }
  // Six significant digits, as the loss log has them (0.0001, 3.33333e-05).
  static std::string number(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.6g", v);
    return b;
  }

  // "step 37 (epoch 1, batch 37 of 500)" for the step being trained at `at`.
  static std::string step_name(const TrainPosition& at, int steps_per_epoch) {
    return "step " + std::to_string(at.total_steps + 1) + " (epoch " + std::to_string(at.epoch) + ", batch " +
           std::to_string(at.batch + 1) + " of " + std::to_string(steps_per_epoch) + ")";
  }
  std::string last_good() const {
    if (o_.out_dir.empty()) return "";
    if (last_saved_step_ < 0) return "; no checkpoint was saved by this run";
    return ": the last good checkpoint is " + checkpoint_path("resume").string() + " (after step " +
           std::to_string(last_saved_step_) + ")";
  }

  [[noreturn]] void forward_fault(const TrainPosition& at, int steps_per_epoch, float loss,
                                  const data::LoaderBatch& batch, bool share_finite) {
    std::string layer;
    const std::span<const float> input(batch.images.data(), batch.images.size());
    std::string where = locate_forward_fault(net_, input, layer);
    // With replicas, a process whose share of the batch stayed finite did not overflow: another
    // process's share made the summed loss non-finite, and that process's message names the layer.
    if (replicas_ && share_finite && layer.empty() && all_finite(input))
      where = "this process's share of the batch gave finite outputs and a finite loss: another process's share did "
              "not (its message names the layer)";
    throw NumericalError(step_name(at, steps_per_epoch) + ": loss is " + first_non_finite(std::span(&loss, 1)) + "; " +
                             where + "; stopped before the optimizer step" + last_good(),
                         at.total_steps + 1, layer);
  }
  [[noreturn]] void gradient_fault(const TrainPosition& at, int steps_per_epoch, float loss) {
    std::string layer;
    const std::string where = locate_gradient_fault(net_, layer);
    char loss_text[32];
    std::snprintf(loss_text, sizeof loss_text, "%.4f", static_cast<double>(loss));
    throw NumericalError(step_name(at, steps_per_epoch) + ": gradient is " + first_non_finite(net_.gradients()) +
                             " (the loss, " + loss_text + ", is finite); " + where +
                             "; stopped before the optimizer step" + last_good(),
                         at.total_steps + 1, layer);
  }
  // Before any file is written: the weights and buffers about to be saved must be finite (the
  // optimizer step can overflow even from finite gradients).
  void check_state(const TrainPosition& at, const std::filesystem::path& file) {
    std::string layer;
    const std::string where = locate_bad_state(net_, layer);  // parameters and buffers, layer by layer
    if (where.empty()) [[likely]]
      return;
    throw NumericalError("after step " + std::to_string(at.total_steps) +
                             ": non-finite parameters or statistics, first in " + where + "; stopped without saving " +
                             file.string() + last_good(),
                         at.total_steps, layer);
  }
  void save_weights(const TrainPosition& at, const std::filesystem::path& file) {
    check_state(at, file);
    io::save_state_dict(net_, file);
  }
  void snapshot(const TrainPosition& at) {
    if (o_.out_dir.empty()) return;
    if (lead()) {
      check_state(at, checkpoint_path("resume"));
      csv_.sync();  // the log's rows up to the snapshot are on disk before it is
      write_snapshot(checkpoint_path("resume"), net_, opt_, o_.seed, o_.batch_size, at, train_size_);
    }
    last_saved_step_ = at.total_steps;  // on every process: their messages name process 0's file
  }

  Net& net_;
  TrainerOptions o_;
  Optimizer opt_;
  CsvLog csv_;
  ProgressLine progress_;  // told first, when o_.progress
  std::vector<TrainingObserver*> observers_;
  const Replicas* replicas_ = nullptr;
  const std::atomic<int>* stop_flag_ = nullptr;
  int signal_ = 0;            // this process's stop flag when last polled
  bool interrupted_ = false;  // some process's flag was set: stop after this step
  bool finished_ = false;
  std::filesystem::path stopped_weights_;
  std::int64_t train_size_ = 0;  // images in fit()'s training set, for the snapshot
  long last_saved_step_ = -1;  // the position of the resume snapshot on disk, if this run wrote or read one
};

}  // namespace ctnn
