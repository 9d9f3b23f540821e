// ctnn-train's program for one network: the data, the Trainer, the accuracy line and the exit
// codes (train_run); train_main.hpp adds the options and MPI. The program sees the network as a
// CifarNetwork (compose/any_network.hpp), so it is compiled once, beside main(), and each network
// in a file of its own that defines its CifarModel::make (examples/cifar_<model>.cpp);
// tests/fault builds the same program around a small network, so the crash and resume tests kill
// exactly this code in seconds.
#pragma once

#include <chrono>
#include <cstdio>
#include <ctnn/io/svg.hpp>
#include <ctnn/ops/gemm.hpp>
#include <ctnn/train/stop.hpp>
#include <ctnn/train/trainer.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "cifar_network.hpp"
#include "cli.hpp"

namespace ctnn::cli {

// The exit status of a run stopped by Ctrl-C or SIGTERM (the shell's for Ctrl-C: 128 + SIGINT).
inline constexpr int kInterrupted = 130;

struct TrainConfig {
  std::string model, data_dir, out_dir, load;
  io::LoadOptions load_options;  // how --load reads its file: --checkpoint-key, --strip-prefix
  TrainerOptions train;
  long synthetic = 0;
  Precision precision = Precision::fp32;  // --precision
  bool local_bn = false;               // --local-bn: BatchNorm statistics per process
  const Replicas* replicas = nullptr;  // under mpiexec with 2+ processes (ctnn/dist/)
};

// Redraws <model>_train.svg from the loss log at the end of every epoch, so that a long run has
// its picture long before it ends (the Trainer flushes the log before telling its observers).
struct TrainingSvg : TrainingObserver {
  std::filesystem::path csv, svg;
  std::string title;
  TrainingSvg(std::filesystem::path c, std::filesystem::path s, std::string t)
      : csv(std::move(c)), svg(std::move(s)), title(std::move(t)) {}
  void on_epoch_end(int) override { draw(); }
  // A picture that cannot be drawn (its path taken by a directory, a full disk) is said, and the
  // run goes on: the weights and the evaluation matter more than the drawing.
  bool draw() const {
    try {
      io::write_training_svg(csv, svg, title);
      return true;
    } catch (const std::exception& e) {
      std::cerr << "warning: the loss curve is not drawn: " << e.what() << std::endl;
      return false;
    }
  }
};

inline int train_run(const TrainConfig& c, const CifarModel& model) {
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  // Of several processes, process 0 alone speaks and evaluates (each loads its own data).
  const bool lead = !c.replicas || c.replicas->rank() == 0;
  std::ostream silent(nullptr);
  std::ostream& out = lead ? std::cout : silent;
  out << ops::gemm_backend_summary() << "\n" << precision_summary(c.precision) << "\n";
  const Autocast autocast(c.precision);  // training and the final evaluation alike
  if (c.replicas)
    out << "Data-parallel: " << c.replicas->size() << " processes x " << num_threads() << " threads, global batch "
        << c.train.batch_size << " (its share on each), " << (c.local_bn ? "BatchNorm per process" : "BatchNorm over the global batch")
        << "\n";
  if (c.synthetic > 0)
    out << "*** SYNTHETIC DATA: training on " << c.synthetic
              << " generated images, not CIFAR-10; accuracy says nothing about the real task ***\n";
  const data::Dataset train_set = dataset(c.synthetic, c.train.seed, c.data_dir, data::Split::train);
  const data::Dataset test_set = dataset(c.synthetic, c.train.seed, c.data_dir, data::Split::test);
  TrainerOptions o = c.train;
  o.out_dir = c.out_dir;
  // A run on generated data names its files <model>_synthetic_*: a trial with --synthetic in a
  // real run's folder (the default is the current one) must not replace its checkpoints.
  o.model_name = c.model + (c.synthetic > 0 ? "_synthetic" : "");
  const std::unique_ptr<CifarNetwork> network = model.make(c.train.seed);
  CifarNetwork& net = *network;
  if (!c.load.empty()) {
    load_checkpoint(net, c.load, c.load_options, out);
    out << "Loaded " << c.load << "\n";
  }
  Trainer<CifarNetwork> trainer(net, o);
  if (c.replicas) trainer.set_replicas(*c.replicas);
  trainer.stop_when(StopSignals::flag());  // train_main handles Ctrl-C and SIGTERM
  // The loss curve, drawn from the log (so the picture is whatever the log says, on resumption
  // too): at each epoch's end, and once more at the end with the test accuracy.
  TrainingSvg picture(trainer.csv_path(), trainer.csv_path().parent_path() / (o.model_name + "_train.svg"),
                      c.model + (c.synthetic > 0 ? " (SYNTHETIC data)" : ""));
  trainer.add_observer(picture);
  trainer.fit(train_set, out);
  const double train_seconds = seconds();
  if (trainer.interrupted()) {  // Ctrl-C or SIGTERM: the snapshot and the weights are saved; no evaluation
    if (!lead) return kInterrupted;
    if (picture.draw()) std::cout << "Loss curve: " << picture.svg.string() << "\n";
    return kInterrupted;
  }
  if (!lead) return 0;
  const auto r = evaluate(net, test_set);
  std::cout << "Accuracy of the model on the test images: " << python_float(r.accuracy()) << " %" << std::endl;
  std::printf("wall time: train %.1f s, total %.1f s (%d threads)\n", train_seconds, seconds(), num_threads());
  std::ofstream(trainer.csv_path(), std::ios::app) << "# test accuracy," << python_float(r.accuracy()) << "\n";
  if (picture.draw()) std::cout << "Loss curve: " << picture.svg.string() << "\n";
  if (const int sig = StopSignals::received()) {  // after the last step: everything is saved
    std::cout << signal_name(sig) << " received after the last step: "
              << (trainer.finished() ? "the run is complete" : "its weights and snapshot are saved") << "\n";
    return kInterrupted;
  }
  return 0;
}

}  // namespace ctnn::cli
