// ctnn-bench-dist: data-parallel training throughput under mpiexec, and where the exchange's time
// goes. Each process trains its share of every global batch (as ctnn::dist prescribes) on
// synthetic data; process 0 prints one key=value line:
//
//   mpiexec -n 2 build/bin/ctnn-bench-dist --model resnet50 --threads 1     # 2 processes x 1 thread
//   mpiexec -n 1 build/bin/ctnn-bench-dist --model resnet50 --threads 2     # 1 process x 2 threads
//
// images_per_s counts global images; allreduce_ms is the gradient all-reduce of a step,
// bn_sync_ms the BatchNorm statistics exchanges (SyncBatchNorm) of a step, both measured on
// process 0 around the MPI calls (waiting for the slower process included), and *_bytes what one
// process sends into each per step.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctnn/ctnn.hpp>
#include <ctnn/dist/data_parallel.hpp>
#include <ctnn/ops/gemm.hpp>
#include <string>
#include <vector>

#include "cli.hpp"

using namespace ctnn;
using Clock = std::chrono::steady_clock;

namespace {

struct Timing {
  const dist::Communicator* comm;
  double seconds = 0.0;
  std::size_t bytes = 0;
};

// The BatchNorm exchange of dist::StepScope, timed.
void timed_sum(double* v, std::size_t n, void* context) {
  auto* t = static_cast<Timing*>(context);
  const auto t0 = Clock::now();
  t->comm->allreduce_sum(std::span<double>(v, n));
  t->seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  t->bytes += n * sizeof(double);
}

template <class Net>
int run(const dist::Communicator& comm, const std::string& model, int batch, int steps, int warmup, bool local_bn) {
  const data::Dataset set = data::make_synthetic_cifar(batch * (steps + warmup), 1);
  auto lo = data::LoaderOptions::train(1, batch);
  lo.shard = dist::shard_of(comm);
  data::DataLoader loader(set, lo);
  auto net = std::make_unique<Net>(1);
  Adam optimizer(*net, {.lr = 1e-3});
  CrossEntropyLoss<10> criterion;
  data::LoaderBatch b;
  std::vector<double> step_s, reduce_s, bn_s;
  std::size_t bn_bytes = 0;
  for (loader.start_epoch(0); loader.next(b);) {
    Timing bn{&comm};
    BatchShard shard;
    shard.offset = b.offset;
    shard.global = b.global_size;
    if (!local_bn && comm.size() > 1) {
      shard.allreduce = &timed_sum;
      shard.context = &bn;
    }
    comm.barrier();  // every step starts together: the time is the job's, not one process's
    const auto t0 = Clock::now();
    double reduce = 0.0;
    {
      ShardScope scope(shard);
      net->zero_grad();
      criterion.forward(net->forward(b.images), b.labels, b.global_size);
      net->backward(b.images, criterion.grad());
      const auto t1 = Clock::now();
      dist::allreduce_gradients(comm, net->gradients());
      reduce = std::chrono::duration<double>(Clock::now() - t1).count();
      optimizer.step();
    }
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (warmup-- > 0) continue;
    step_s.push_back(s);
    reduce_s.push_back(reduce);
    bn_s.push_back(bn.seconds);
    bn_bytes = bn.bytes;
  }
  if (comm.rank() != 0) return 0;
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double med = median(step_s), best = *std::min_element(step_s.begin(), step_s.end());
  std::printf(
      "model=%s procs=%d threads=%d batch=%d steps=%zu bn=%s images_per_s=%.1f images_per_s_best=%.1f "
      "step_ms_median=%.1f allreduce_ms=%.2f bn_sync_ms=%.2f allreduce_bytes=%zu bn_sync_bytes=%zu gemm=%s\n",
      model.c_str(), comm.size(), num_threads(), batch, step_s.size(), local_bn ? "local" : "global", batch / med,
      batch / best, 1e3 * med, 1e3 * median(reduce_s), 1e3 * median(bn_s), net->gradients().size() * sizeof(float),
      bn_bytes, ops::backend_name(ops::gemm_backend()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  dist::Environment env(argc, argv);
  dist::Communicator comm;
  return dist::run_or_abort(comm, "ctnn-bench-dist", [&] {
    const ctnn::cli::Args args(argc, argv, {"model", "batch-size", "threads", "steps", "warmup"}, {"local-bn"});
    const std::string model = args.get("model", "resnet50");
    const int batch = static_cast<int>(args.integer("batch-size", 100, 1, 100000));
    const int steps = static_cast<int>(args.integer("steps", 10, 1, 100000));
    const int warmup = static_cast<int>(args.integer("warmup", 2, 0, 100000));
    set_num_threads(static_cast<int>(args.integer("threads", 0, 0, 1024)));
    dist::require_same(comm, "model " + model + "\nbatch " + std::to_string(batch) + "\nsteps " +
                                 std::to_string(steps) + "\nwarmup " + std::to_string(warmup) + "\nlocal-bn " +
                                 std::to_string(args.flag("local-bn")));
    if (model == "vgg16") return run<VGG16>(comm, model, batch, steps, warmup, args.flag("local-bn"));
    if (model == "resnet50") return run<ResNet50_layer4<10>>(comm, model, batch, steps, warmup, args.flag("local-bn"));
    throw ctnn::cli::UsageError("--model must be vgg16 or resnet50, not " + model);
  });
}
