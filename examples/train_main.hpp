// ctnn-train's main(): the options, MPI under mpiexec, and train_run (train_cli.hpp) with the
// chosen model. Only the file with main() includes this.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "train_cli.hpp"
#ifdef CTNN_TRAIN_MPI  // ctnn-train built with MPI (CMake's CTNN_USE_MPI): runs under mpiexec too
#include <ctnn/dist/data_parallel.hpp>
#endif

namespace ctnn::cli {

// One message, one write: std::cerr is unbuffered, so a message written piece by piece (`<<`)
// interleaves with another process's on the pipe mpiexec merges them into (seen: "ctnn-train-
// smallctnn-train-small: process : process 0 of 12:  of 2..."). A write of under 4 KiB to a
// pipe is atomic.
inline void print_error(const std::string& message) {
  std::fputs(message.c_str(), stderr);
  std::fflush(stderr);
}

#ifdef CTNN_TRAIN_MPI
// Under mpiexec every process has parsed the same command line, and each comes here with its
// `status` (0: go on, 1: --help shown, 2: a usage error, `usage`). They agree: if any process
// stops, all return (0 after --help, else 2), without MPI_Abort, since none is left waiting in
// a collective call. A usage error is said once, by process 0; a process whose error differs
// from process 0's (its own --data folder, say) says its own, with its number.
inline int agree_on_options(const dist::Communicator& comm, int status, const std::string& usage,
                            const std::string& program) {
  std::vector<std::int64_t> all(static_cast<std::size_t>(comm.size()), 0);
  all[static_cast<std::size_t>(comm.rank())] = status;
  comm.allreduce_sum(all);
  const std::int64_t worst = *std::max_element(all.begin(), all.end());
  if (worst == 0) return 0;
  std::string first = usage;
  comm.broadcast(first, 0);
  if (status == 2 && (comm.rank() == 0 || usage != first)) {
    const std::string who = comm.rank() == 0 ? "" : ": process " + std::to_string(comm.rank()) + " of " +
                                                        std::to_string(comm.size());
    print_error(program + who + ": " + usage + "\n(run " + program + " --help for the options)\n");
  }
  return worst == 2 ? 2 : 1;
}
#endif

// main(): exit 0 on success, 2 for bad options (one line, then a pointer to --help), 1 for any
// other failure (missing or malformed data, an unreadable or mismatched checkpoint, a NaN),
// kInterrupted (130, the shell's status for Ctrl-C) when Ctrl-C or SIGTERM stopped the run
// after its step in progress, with the snapshot and the weights so far saved.
inline int train_main(int argc, char** argv, const std::string& program, const std::vector<CifarModel>& models) {
  // From here on the first Ctrl-C or SIGTERM asks the Trainer to stop after its step (a second
  // one stops at once; before training starts, the first still lets one step run).
  const StopSignals stop_signals;
  std::string choices;  // "vgg16|resnet50"
  for (std::size_t i = 0; i < models.size(); ++i) choices += (i == 0 ? "" : "|") + models[i].name;
#ifdef CTNN_TRAIN_MPI
  // MPI_COMM_WORLD when main() started MPI (launched by mpiexec); alone, no MPI at all.
  std::optional<dist::Communicator> comm;
  if (dist::initialized()) comm.emplace();
  const int procs = comm ? comm->size() : 1;
  std::unique_ptr<dist::TrainerReplicas> replicas;
#endif
  TrainConfig c;
  const CifarModel* model = nullptr;
  std::string checkpoint_key, strip_prefix;  // as given, "-" if not, for the processes' comparison
  // The options: 0 to go on, 1 when --help was shown; a UsageError for anything wrong.
  auto parse = [&]() -> int {
    const Args args(argc, argv,
                    {"model", "data", "epochs", "batch-size", "lr", "lr-decay-every", "lr-decay-factor", "out", "seed",
                     "threads", "max-steps", "synthetic", "load", "checkpoint-every", "checkpoint-key", "strip-prefix", "precision"},
                    {"help", "resume", "local-bn"});
    if (args.flag("help")) {
#ifdef CTNN_TRAIN_MPI
      if (comm && comm->rank() != 0) return 1;  // under mpiexec: said once
#endif
      std::cout << "usage: " << program << " --model " << choices << " [options]\n"
                << "  --data DIR              cifar-10-batches-bin folder (default " << default_data_dir()
                << ",\n                          where the build's cifar10 target puts it)\n"
                   "  --epochs N              (default 1)\n"
                   "  --batch-size N          (default 100)\n"
                   "  --lr X                  Adam learning rate (default 0.001); with --resume it replaces\n"
                   "                          the snapshot's (divided by the decays so far), and says so\n"
                   "  --lr-decay-every N      epochs between learning-rate decays (default 20)\n"
                   "  --lr-decay-factor X     divide the learning rate by X (default 3)\n"
                   "  --out DIR               checkpoints and the loss log (default .)\n"
                   "  --load CKPT             start from a checkpoint (PyTorch's or ctnn's state_dict file, or the\n"
                   "                          weights of a <model>_resume.ckpt)\n"
                   "  --checkpoint-key KEY    with --load: the state_dict's key in a nested checkpoint\n"
                   "                          (default: found, e.g. 'model_state_dict')\n"
                   "  --strip-prefix P        with --load: remove P from the keys first ('module.' of\n"
                   "                          nn.DataParallel, '_orig_mod.' of torch.compile)\n"
                   "  --resume                continue the interrupted run in --out from <model>_resume.ckpt\n"
                   "  --checkpoint-every N    steps between resume snapshots (default 100)\n"
                   "  --seed N                seed of every random choice (default 0)\n"
                   "  --threads N             worker threads (default: all cores)\n"
                   "  --max-steps N           stop after N steps (smoke runs), leaving the weights so far as\n"
                   "                          <model>_step<N>.ckpt beside the snapshot (Ctrl-C and SIGTERM\n"
                   "                          do the same after the step in progress, then exit with 130)\n"
                   "  --precision P           fp32 (default) or bf16: convolutions and linear layers multiply in\n"
                   "                          bf16 with fp32 sums (fast with AVX512_BF16 or AMX); weights stay fp32\n"
                   "  --synthetic N           train on N generated SYNTHETIC images instead of CIFAR-10, and test\n"
                   "                          on N/5 others (at least 1); files named <model>_synthetic_*\n"
                   "  --local-bn              under mpiexec: BatchNorm statistics per process (DDP's), not\n"
                   "                          over the global batch (the default, as one process computes)\n"
                   "  --help\n";
      return 1;
    }
    model = &model_option(args, models);
    c.model = model->name;
    c.data_dir = args.get("data", default_data_dir());
    c.out_dir = args.get("out", ".");
    c.load = args.get("load", "");
    c.load_options = load_options(args, !c.load.empty(), "--load");
    c.train.resume = args.flag("resume");
    // The snapshot's weights would silently replace the loaded ones.
    if (c.train.resume && !c.load.empty())
      throw UsageError("--load and --resume do not go together: --resume continues from the snapshot's weights");
    if (!c.load.empty()) io::require_readable(c.load);  // before the data set: the cheaper mistake first
    c.train.checkpoint_every = args.integer("checkpoint-every", 100, 0, 1L << 40);
    c.train.epochs = static_cast<int>(args.integer("epochs", 1, 1, 100000));
    c.train.batch_size = static_cast<int>(args.integer("batch-size", 100, 1, 50000));
    c.train.lr = args.number("lr", 1e-3, 0.0);
    // --lr with --resume replaces the snapshot's rate (scaled by the decays so far); without it
    // the snapshot's rate is kept, whatever the default says.
    c.train.resume_with_lr = c.train.resume && args.has("lr");
    c.train.lr_decay_every = static_cast<int>(args.integer("lr-decay-every", 20, 0, 100000));
    c.train.lr_decay_factor = args.number("lr-decay-factor", 3.0, 0.0);
    c.train.seed = static_cast<std::uint64_t>(args.integer("seed", 0, 0, 1L << 62));
    c.train.max_steps = args.integer("max-steps", -1, 1, 1L << 40);
    c.train.progress = isatty(STDERR_FILENO) && isatty(STDOUT_FILENO);
    c.synthetic = args.integer("synthetic", 0, 1, 1000000);
    set_num_threads(static_cast<int>(args.integer("threads", 0, 1, 1024)));
    c.local_bn = args.flag("local-bn");
    check_data_source(args);
    c.precision = precision_option(args);
    checkpoint_key = args.get("checkpoint-key", "-");
    strip_prefix = args.get("strip-prefix", "-");
    return 0;
  };
  try {
    int status = 2;  // 0: go on, 1: --help shown, 2: a usage error
    std::string usage;
    try {
      status = parse();
    } catch (const UsageError& e) {
      usage = e.what();
    }
#ifdef CTNN_TRAIN_MPI
    if (procs > 1) {
      status = agree_on_options(*comm, status, usage, program);
      usage.clear();  // said there, once
    }
#endif
    if (!usage.empty()) print_error(program + ": " + usage + "\n(run " + program + " --help for the options)\n");
    if (status != 0) return status == 1 ? 0 : 2;
#ifdef CTNN_TRAIN_MPI
    if (procs > 1) {
      // Every option that shapes the computation must agree (the thread count, the data and
      // output folders and the --load path are each process's own).
      std::ostringstream config;
      config << "--model " << c.model << "\n--epochs " << c.train.epochs << "\n--batch-size " << c.train.batch_size
             << "\n--lr " << shortest(c.train.lr) << (c.train.resume_with_lr ? " (replacing the snapshot's)" : "")
             << "\n--lr-decay-every " << c.train.lr_decay_every << "\n--lr-decay-factor "
             << shortest(c.train.lr_decay_factor) << "\n--seed " << c.train.seed << "\n--max-steps " << c.train.max_steps
             << "\n--synthetic " << c.synthetic << "\n--precision " << precision_name(c.precision) << "\n--checkpoint-every " << c.train.checkpoint_every
             << "\n--checkpoint-key " << checkpoint_key << "\n--strip-prefix " << strip_prefix
             << "\n--resume " << (c.train.resume ? "on" : "off") << "\n--local-bn "
             << (c.local_bn ? "on" : "off") << "\n--load " << (c.load.empty() ? "no" : "a file");
      dist::require_same(*comm, config.str());
      replicas = std::make_unique<dist::TrainerReplicas>(
          *comm, c.local_bn ? dist::BatchNormMode::local : dist::BatchNormMode::global);
      c.replicas = replicas.get();
      c.train.progress = c.train.progress && comm->rank() == 0;
    }
#endif
    const int code = train_run(c, *model);
#ifdef CTNN_TRAIN_MPI
    if (procs > 1) {
      // Process 0 evaluates after the last step while the others are done. They wait for it
      // here, where a SIGTERM or Ctrl-C is still caught (in MPI_Finalize it would kill the
      // process, and mpiexec then process 0's evaluation), and asleep, not spinning on a core
      // that the evaluation needs.
      comm->wait_for_all();
      const int sig = StopSignals::received();
      if (code == 0 && comm->rank() != 0 && sig != 0) {
        std::cout << program << ": process " << comm->rank() << " of " << procs << ": " << signal_name(sig)
                  << " received after the last step: nothing is lost" << std::endl;
        return kInterrupted;
      }
    }
#endif
    return code;
#ifdef CTNN_TRAIN_MPI
  } catch (const dist::CollectiveError& e) {  // raised alike by every process: said once
    if (comm->rank() == 0) print_error(program + ": " + e.what() + "\n");
    return 1;
#endif
  } catch (const UsageError& e) {
    print_error(program + ": " + e.what() + "\n(run " + program + " --help for the options)\n");
#ifdef CTNN_TRAIN_MPI
    if (procs > 1) comm->abort(2);  // as below: the others must not wait for this process
#endif
    return 2;
  } catch (const std::exception& e) {
#ifdef CTNN_TRAIN_MPI
    if (procs > 1) {  // the other processes would wait for this one forever: end the job
      print_error(program + ": process " + std::to_string(comm->rank()) + " of " + std::to_string(procs) + ": " +
                  e.what() + "\n");
      comm->abort(1);
    }
#endif
    print_error(program + ": " + e.what() + "\n");
    return 1;
  }
}

}  // namespace ctnn::cli
