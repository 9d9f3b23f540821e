// What a training run reports while it runs (TrainingObserver), and the live progress line on
// stderr that ctnn-train shows on a terminal.
#pragma once

#include <chrono>
#include <cstdio>

namespace ctnn {

// One finished training step.
struct StepReport {
  int epoch, epochs;           // 1-based epoch, of
  int batch, steps_per_epoch;  // batches of it done, of
  long total_steps;
  float loss;                  // this step's
  double running_loss;         // the epoch's mean so far
  double lr;
  int images;                  // in this step's batch (the global batch, of all processes)
  int batch_size;
  int processes = 1;           // training it together (data-parallel, ctnn/dist/)
};

class TrainingObserver {
 public:
  virtual ~TrainingObserver() = default;
  virtual void on_step(const StepReport&) {}
  // The trainer is about to write a line to its log, or has left an epoch: anything drawn on
  // the terminal should be cleared.
  virtual void on_pause() {}
  // After a complete epoch (1-based), its learning-rate decay and its checkpoints.
  virtual void on_epoch_end(int /*epoch*/) {}
};

// "epoch 1/1  step 37/500  loss 2.1034  812.3 img/s  ETA 571 s", redrawn on stderr after every
// step (for terminals).
class ProgressLine : public TrainingObserver {
 public:
  void on_step(const StepReport& r) override {
    images_ += r.images;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const double rate = secs > 0 ? static_cast<double>(images_) / secs : 0.0;
    const double eta = rate > 0 ? (static_cast<double>(r.steps_per_epoch - r.batch) * r.batch_size) / rate : 0.0;
    std::fprintf(stderr, "\r\033[Kepoch %d/%d  step %d/%d  loss %.4f  %.1f img/s  ETA %.0f s", r.epoch, r.epochs,
                 r.batch, r.steps_per_epoch, r.running_loss, rate, eta);
    if (r.processes > 1) std::fprintf(stderr, "  (%d processes)", r.processes);
    std::fflush(stderr);
  }
  void on_pause() override { std::fprintf(stderr, "\r\033[K"); }

 private:
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  long images_ = 0;
};

}  // namespace ctnn
