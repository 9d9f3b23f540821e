// The assignment's training loop (main.py) as a library piece: Adam, step-decayed learning
// rate, running-mean loss lines every 100 steps, checkpoints named as main.py names them, exact
// resumption of an interrupted run (also after SIGKILL at any point), a stop with the step and
// the layer named when the loss or a gradient turns NaN or infinite, and test accuracy in
// evaluation mode.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ctnn/core/grad_mode.hpp"
#include "ctnn/core/hooks.hpp"
#include "ctnn/data/loader.hpp"
#include "ctnn/io/file.hpp"
#include "ctnn/io/state_dict.hpp"
#include "ctnn/layers/layer.hpp"  // layer_traits
#include "ctnn/train/loss.hpp"
#include "ctnn/train/numerics.hpp"
#include "ctnn/train/optim.hpp"

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
  EvalResult<K> r;
  const bool was_training = net.is_training();
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
  net.train(was_training);
  return r;
}

// Trains `net` as main.py does. With an out_dir it writes, like main.py, <model>_epoch<e>.ckpt
// at each learning-rate decay and <model>_final.ckpt at the end (PyTorch state_dict files), a
// CSV of the loss, and <model>_resume.ckpt: everything an interrupted run needs to continue
// exactly as if it had not stopped (weights, BatchNorm statistics, Adam's moments and step,
// learning rate, position in the epoch, dropout draw counters, running loss).
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
template <class Net>
class Trainer {
 public:
  static constexpr int classes = Net::out_shape::channels;

  // Called after every epoch (1-based), after the learning rate decays and checkpoints are saved.
  std::function<void(int epoch)> on_epoch_end;

  Trainer(Net& net, TrainerOptions o) : net_(net), o_(std::move(o)), opt_(net, {.lr = o_.lr}) {
    if (o_.epochs < 1) throw std::invalid_argument("Trainer: epochs must be at least 1");
    if (o_.batch_size < 1) throw std::invalid_argument("Trainer: batch size must be at least 1");
  }

  Adam& optimizer() { return opt_; }
  std::filesystem::path checkpoint_path(const std::string& what) const {
    return o_.out_dir / (o_.model_name + "_" + what + ".ckpt");
  }
  std::filesystem::path csv_path() const { return o_.out_dir / (o_.model_name + "_train_log.csv"); }

  // Returns the mean loss of the last epoch trained. When resuming a run that had finished,
  // trains nothing.
  double fit(const data::Dataset& train, std::ostream& log) {
    data::DataLoader loader(train, data::LoaderOptions::train(o_.seed, o_.batch_size));
    const int steps_per_epoch = loader.num_batches();
    Position at;
    if (!o_.out_dir.empty() && std::filesystem::is_directory(o_.out_dir)) {
      // Leftovers of saves that were killed half-way; never taken for checkpoints, but large.
      for (const auto& temp : io::abandoned_temp_files(o_.out_dir, o_.model_name + "_")) {
        std::error_code ec;
        if (std::filesystem::remove(temp, ec))
          log << "Removed " << temp.string() << " (left by an interrupted save)" << std::endl;
      }
    }
    if (o_.resume && !o_.out_dir.empty() && std::filesystem::exists(checkpoint_path("resume"))) {
      at = restore(checkpoint_path("resume"));
      last_saved_step_ = at.total_steps;
      log << "Resuming from " << checkpoint_path("resume").string() << ": epoch " << at.epoch << ", step "
          << at.batch << ", " << at.total_steps << " steps done" << std::endl;
    }
    open_csv(at);
    CrossEntropyLoss<classes> criterion;
    data::LoaderBatch batch;
    double mean = at.batch ? at.loss_sum / at.batch : 0.0;
    const auto t0 = std::chrono::steady_clock::now();
    long images_timed = 0;
    net_.train();
    for (; at.epoch <= o_.epochs && !stop(at); ++at.epoch, at.batch = 0, at.loss_sum = 0.0) {
      loader.start_epoch(at.epoch - 1, std::min(at.batch, steps_per_epoch));
      while (!stop(at) && loader.next(batch)) {
        net_.zero_grad();
        const float loss = criterion.forward(net_.forward(batch.images), batch.labels);
        if (!std::isfinite(loss)) [[unlikely]]
          forward_fault(at, steps_per_epoch, loss, batch);
        net_.backward(batch.images, criterion.grad());
        if (auto* hook = hooks::installed()) [[unlikely]]
          hook->step_computed();
        if (!all_finite(net_.gradients())) [[unlikely]]
          gradient_fault(at, steps_per_epoch, loss);
        opt_.step();
        ++at.batch;
        ++at.total_steps;
        at.loss_sum += loss;
        mean = at.loss_sum / at.batch;
        images_timed += batch.size();
        if (csv_) csv_ << at.epoch << ',' << at.batch << ',' << loss << ',' << mean << ',' << opt_.lr() << '\n';
        if (o_.progress) progress_line(at, steps_per_epoch, mean, images_timed, t0);
        if (at.batch % o_.log_every == 0) {
          if (o_.progress) std::fprintf(stderr, "\r\033[K");
          char line[128];
          std::snprintf(line, sizeof line, "Epoch [%d/%d], Step [%d/%d] Loss: %.4f", at.epoch, o_.epochs, at.batch,
                        steps_per_epoch, mean);
          log << line << std::endl;
        }
        if (o_.checkpoint_every > 0 && at.total_steps % o_.checkpoint_every == 0 && at.batch < steps_per_epoch)
          snapshot(at);
      }
      if (o_.progress) std::fprintf(stderr, "\r\033[K");
      if (at.batch < steps_per_epoch) {  // stopped early (max_steps): keep the place for --resume
        snapshot(at);
        break;
      }
      if (o_.lr_decay_every > 0 && at.epoch % o_.lr_decay_every == 0) {
        opt_.set_lr(opt_.lr() / o_.lr_decay_factor);
        if (!o_.out_dir.empty()) save_weights(at, checkpoint_path("epoch" + std::to_string(at.epoch)));
      }
      // The epoch is complete: the next position is the start of the next one.
      Position next = at;
      ++next.epoch;
      next.batch = 0;
      next.loss_sum = 0.0;
      snapshot(next);
      if (on_epoch_end) on_epoch_end(at.epoch);
    }
    if (csv_) csv_.flush();
    if (!o_.out_dir.empty() && at.epoch > o_.epochs) save_weights(at, checkpoint_path("final"));
    return mean;
  }

 private:
  struct Position {
    int epoch = 1;           // 1-based epoch in progress
    int batch = 0;           // batches of it done
    long total_steps = 0;
    double loss_sum = 0.0;   // sum of this epoch's losses so far (the running mean's numerator)
  };

  bool stop(const Position& at) const { return o_.max_steps >= 0 && at.total_steps >= o_.max_steps; }

  // "step 37 (epoch 1, batch 37 of 500)" for the step being trained at `at`.
  static std::string step_name(const Position& at, int steps_per_epoch) {
    return "step " + std::to_string(at.total_steps + 1) + " (epoch " + std::to_string(at.epoch) + ", batch " +
           std::to_string(at.batch + 1) + " of " + std::to_string(steps_per_epoch) + ")";
  }
  std::string last_good() const {
    if (o_.out_dir.empty()) return "";
    if (last_saved_step_ < 0) return "; no checkpoint was saved by this run";
    return ": the last good checkpoint is " + checkpoint_path("resume").string() + " (after step " +
           std::to_string(last_saved_step_) + ")";
  }

  [[noreturn]] void forward_fault(const Position& at, int steps_per_epoch, float loss, const data::LoaderBatch& batch) {
    std::string layer;
    const auto& x = batch.images;
    const std::string where = locate_forward_fault(net_, std::span<const float>(x.data(), x.size()), layer);
    throw NumericalError(step_name(at, steps_per_epoch) + ": loss is " + first_non_finite(std::span(&loss, 1)) + "; " +
                             where + "; stopped before the optimizer step" + last_good(),
                         at.total_steps + 1, layer);
  }
  [[noreturn]] void gradient_fault(const Position& at, int steps_per_epoch, float loss) {
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
  void check_state(const Position& at, const std::filesystem::path& file) {
    std::string layer;
    const std::string where = locate_bad_state(net_, layer);  // parameters and buffers, layer by layer
    if (where.empty()) [[likely]]
      return;
    throw NumericalError("after step " + std::to_string(at.total_steps) +
                             ": non-finite parameters or statistics, first in " + where + "; stopped without saving " +
                             file.string() + last_good(),
                         at.total_steps, layer);
  }
  void save_weights(const Position& at, const std::filesystem::path& file) {
    check_state(at, file);
    io::save_state_dict(net_, file);
  }

  // The resume snapshot: a PyTorch-format file (so it is as robust and inspectable as any
  // checkpoint) holding model.*, optimizer.* and trainer.* entries. Doubles travel as their
  // int64 bit patterns so that nothing is rounded.
  void snapshot(const Position& at) {
    if (o_.out_dir.empty()) return;
    check_state(at, checkpoint_path("resume"));
    if (csv_) csv_.flush();
    io::StateDict sd;
    for (const auto& [key, t] : io::state_dict(net_)) sd.insert_or_assign("model." + key, t);
    const TensorShape flat{static_cast<std::int64_t>(opt_.exp_avg().size())};
    sd.insert_or_assign("optimizer.exp_avg", io::Tensor::from_floats(flat, opt_.exp_avg()));
    sd.insert_or_assign("optimizer.exp_avg_sq", io::Tensor::from_floats(flat, opt_.exp_avg_sq()));
    sd.insert_or_assign("optimizer.step", io::Tensor::scalar_int64(opt_.steps()));
    sd.insert_or_assign("optimizer.lr_bits", io::Tensor::scalar_int64(std::bit_cast<std::int64_t>(opt_.lr())));
    sd.insert_or_assign("trainer.seed", io::Tensor::scalar_int64(static_cast<std::int64_t>(o_.seed)));
    sd.insert_or_assign("trainer.batch_size", io::Tensor::scalar_int64(o_.batch_size));
    sd.insert_or_assign("trainer.epoch", io::Tensor::scalar_int64(at.epoch));
    sd.insert_or_assign("trainer.batch", io::Tensor::scalar_int64(at.batch));
    sd.insert_or_assign("trainer.total_steps", io::Tensor::scalar_int64(at.total_steps));
    sd.insert_or_assign("trainer.loss_sum_bits", io::Tensor::scalar_int64(std::bit_cast<std::int64_t>(at.loss_sum)));
    net_.for_each_layer([&](auto& layer, const std::string& name) {
      if constexpr (layer_traits<std::decay_t<decltype(layer)>>::has_random_state) {
        sd.insert_or_assign("dropout." + name + ".seed", io::Tensor::scalar_int64(static_cast<std::int64_t>(layer.seed())));
        sd.insert_or_assign("dropout." + name + ".draws", io::Tensor::scalar_int64(static_cast<std::int64_t>(layer.draws)));
      }
    });
    io::write_checkpoint(checkpoint_path("resume"), sd);
    last_saved_step_ = at.total_steps;
  }

  Position restore(const std::filesystem::path& file) {
    const io::StateDict sd = io::read_checkpoint(file);
    auto int64 = [&](const std::string& key) {
      const io::Tensor* t = sd.find(key);
      if (!t || t->dtype() != io::DType::int64 || t->numel() != 1)
        throw io::CheckpointError(file.string(), "not a ctnn resume checkpoint: no int64 entry '" + key + "'");
      return t->int64s().front();
    };
    if (static_cast<std::uint64_t>(int64("trainer.seed")) != o_.seed || int64("trainer.batch_size") != o_.batch_size)
      throw io::CheckpointError(file.string(), "was written by a run with seed " + std::to_string(int64("trainer.seed")) +
                                                   " and batch size " + std::to_string(int64("trainer.batch_size")) +
                                                   "; resume with the same --seed and --batch-size");
    io::StateDict model;
    for (const auto& [key, t] : sd)
      if (key.rfind("model.", 0) == 0) model.insert_or_assign(key.substr(6), t);
    io::load_state_dict(net_, model, /*strict=*/true, file.string());
    auto floats = [&](const std::string& key, std::span<float> dst) {
      const io::Tensor* t = sd.find(key);
      if (!t || t->dtype() != io::DType::float32 || t->numel() != dst.size())
        throw io::CheckpointError(file.string(), "entry '" + key + "' is missing or does not fit this network's " +
                                                     std::to_string(dst.size()) + " parameters");
      t->copy_to(dst);
    };
    floats("optimizer.exp_avg", opt_.exp_avg());
    floats("optimizer.exp_avg_sq", opt_.exp_avg_sq());
    opt_.set_steps(int64("optimizer.step"));
    opt_.set_lr(std::bit_cast<double>(int64("optimizer.lr_bits")));
    net_.for_each_layer([&](auto& layer, const std::string& name) {
      if constexpr (layer_traits<std::decay_t<decltype(layer)>>::has_random_state) {
        layer.set_seed(static_cast<std::uint64_t>(int64("dropout." + name + ".seed")));
        layer.draws = static_cast<std::uint64_t>(int64("dropout." + name + ".draws"));
      }
    });
    Position at;
    at.epoch = static_cast<int>(int64("trainer.epoch"));
    at.batch = static_cast<int>(int64("trainer.batch"));
    at.total_steps = int64("trainer.total_steps");
    at.loss_sum = std::bit_cast<double>(int64("trainer.loss_sum_bits"));
    return at;
  }

  // A fresh log, or on resumption the old one cut back to the rows up to the snapshot (a run
  // killed after its last snapshot logged steps that are now trained again, and its last row
  // may be cut short). The cut log replaces the old one atomically, so a kill during the
  // rewrite cannot lose the rows already logged; new rows are appended.
  void open_csv(const Position& at) {
    if (o_.out_dir.empty()) return;
    std::filesystem::create_directories(o_.out_dir);
    const auto path = csv_path();
    std::string text = "epoch,step,loss,running_loss,lr\n";
    if (at.total_steps > 0) {
      std::ifstream old(path);
      std::string line;
      std::getline(old, line);  // header
      int last_e = 0, last_b = 0;
      // Rows were flushed before the snapshot was written, so the rows up to it are complete
      // and in order; a row cut short after it can look like an earlier position ("1,1" of
      // "1,12"), which the order test rejects.
      while (std::getline(old, line)) {
        int e = 0, b = 0;
        if (!parse_row(line, e, b)) break;
        if (e > at.epoch || (e == at.epoch && b > at.batch)) break;
        if (e < last_e || (e == last_e && b <= last_b)) break;
        last_e = e;
        last_b = b;
        text += line;
        text += '\n';
      }
    }
    io::write_file_atomically(path, [&](const io::ByteSink& sink) {
      sink(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
    });
    csv_.open(path, std::ios::app);
    if (!csv_) throw std::runtime_error("cannot write " + path.string());
  }
  // epoch,step,loss,running_loss,lr with two integers first and five fields in all.
  static bool parse_row(const std::string& line, int& e, int& b) {
    if (std::count(line.begin(), line.end(), ',') != 4) return false;
    std::istringstream ss(line);
    char c1 = 0, c2 = 0;
    if (!(ss >> e >> c1 >> b >> c2) || c1 != ',' || c2 != ',') return false;
    // The last field must be complete: a number running to the end of the line.
    const auto last = line.rfind(',');
    std::size_t used = 0;
    try {
      std::stod(line.substr(last + 1), &used);
    } catch (const std::exception&) {
      return false;
    }
    return used > 0 && last + 1 + used == line.size();
  }

  void progress_line(const Position& at, int steps, double mean, long images,
                     std::chrono::steady_clock::time_point t0) const {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double rate = secs > 0 ? static_cast<double>(images) / secs : 0.0;
    const double eta = rate > 0 ? (static_cast<double>(steps - at.batch) * o_.batch_size) / rate : 0.0;
    std::fprintf(stderr, "\r\033[Kepoch %d/%d  step %d/%d  loss %.4f  %.1f img/s  ETA %.0f s", at.epoch, o_.epochs,
                 at.batch, steps, mean, rate, eta);
    std::fflush(stderr);
  }

  Net& net_;
  TrainerOptions o_;
  Adam opt_;
  std::ofstream csv_;
  long last_saved_step_ = -1;  // the position of the resume snapshot on disk, if this run wrote or read one
};

}  // namespace ctnn
