// The assignment's training loop (main.py) as a library piece: Adam, step-decayed learning
// rate, running-mean loss lines every 100 steps, and test accuracy in evaluation mode.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <ostream>
#include <stdexcept>
#include <string>

#include "ctnn/data/loader.hpp"
#include "ctnn/train/loss.hpp"
#include "ctnn/train/optim.hpp"

namespace ctnn {

struct TrainerOptions {
  int epochs = 1;
  int batch_size = 100;
  double lr = 1e-3;
  int lr_decay_every = 20;       // epochs; main.py: every 20 epochs ...
  double lr_decay_factor = 3.0;  // ... lr /= 3
  std::uint64_t seed = 0;
  long max_steps = -1;           // stop after this many steps in total (smoke runs); -1 = all
  int log_every = 100;
  bool progress = false;         // a live progress line (for terminals)
  std::filesystem::path csv;     // per-step loss and per-epoch accuracy; empty = none
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

// Trains `net` on `train` as main.py does. Callbacks let a program save checkpoints.
template <class Net>
class Trainer {
 public:
  static constexpr int classes = Net::out_shape::channels;

  // Called after every epoch (1-based) with the current learning rate, before it decays.
  std::function<void(int epoch)> on_epoch_end;

  Trainer(Net& net, TrainerOptions o) : net_(net), o_(std::move(o)), opt_(net, {.lr = o_.lr}) {
    if (o_.epochs < 1) throw std::invalid_argument("Trainer: epochs must be at least 1");
    if (o_.batch_size < 1) throw std::invalid_argument("Trainer: batch size must be at least 1");
  }

  Adam& optimizer() { return opt_; }

  // Returns the mean loss of the last epoch.
  double fit(const data::Dataset& train, std::ostream& log) {
    data::DataLoader loader(train, data::LoaderOptions::train(o_.seed, o_.batch_size));
    const int steps_per_epoch = loader.num_batches();
    std::ofstream csv;
    if (!o_.csv.empty()) {
      csv.open(o_.csv);
      if (!csv) throw std::runtime_error("cannot write " + o_.csv.string());
      csv << "epoch,step,loss,running_loss,lr\n";
    }
    CrossEntropyLoss<classes> criterion;
    data::LoaderBatch batch;
    long total_steps = 0;
    double mean = 0.0;
    const auto t0 = std::chrono::steady_clock::now();
    net_.train();
    for (int epoch = 1; epoch <= o_.epochs; ++epoch) {
      loader.start_epoch(epoch - 1);
      double sum = 0.0;
      long images = 0;
      for (int step = 1; loader.next(batch); ++step) {
        net_.zero_grad();
        const float loss = criterion.forward(net_.forward(batch.images), batch.labels);
        net_.backward(batch.images, criterion.grad());
        opt_.step();
        sum += loss;
        images += batch.size();
        mean = sum / step;
        ++total_steps;
        if (csv) csv << epoch << ',' << step << ',' << loss << ',' << mean << ',' << opt_.lr() << '\n';
        if (o_.progress) progress_line(epoch, step, steps_per_epoch, mean, images, t0);
        if (step % o_.log_every == 0) {
          if (o_.progress) std::fprintf(stderr, "\r\033[K");
          char line[128];
          std::snprintf(line, sizeof line, "Epoch [%d/%d], Step [%d/%d] Loss: %.4f", epoch, o_.epochs, step,
                        steps_per_epoch, mean);
          log << line << std::endl;
        }
        if (o_.max_steps >= 0 && total_steps >= o_.max_steps) break;
      }
      if (o_.progress) std::fprintf(stderr, "\r\033[K");
      if (on_epoch_end) on_epoch_end(epoch);
      if (o_.lr_decay_every > 0 && epoch % o_.lr_decay_every == 0) opt_.set_lr(opt_.lr() / o_.lr_decay_factor);
      if (o_.max_steps >= 0 && total_steps >= o_.max_steps) break;
    }
    return mean;
  }

 private:
  void progress_line(int epoch, int step, int steps, double mean, long images,
                     std::chrono::steady_clock::time_point t0) const {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double rate = secs > 0 ? static_cast<double>(images) / secs : 0.0;
    const double eta = step > 0 ? secs / step * (steps - step) : 0.0;
    std::fprintf(stderr, "\r\033[Kepoch %d/%d  step %d/%d  loss %.4f  %.1f img/s  ETA %.0f s", epoch, o_.epochs, step,
                 steps, mean, rate, eta);
    std::fflush(stderr);
  }

  Net& net_;
  TrainerOptions o_;
  Adam opt_;
};

}  // namespace ctnn
