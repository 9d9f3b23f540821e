// Batch loader: shuffles per epoch, augments in parallel, and prefetches the next batch.
//
//   ctnn::data::DataLoader train(train_set, ctnn::data::LoaderOptions::train(seed));
//   ctnn::data::LoaderBatch b;
//   for (int epoch = 0; epoch < epochs; ++epoch) {
//     train.start_epoch(epoch);
//     while (train.next(b)) step(b.images, b.labels);
//   }
//
// Reproducibility. Batch k of epoch e is a pure function of (seed, e, k):
//  - the epoch's order is a Fisher-Yates shuffle driven by Rng::stream(seed, e);
//  - the crop offsets and flip of the sample at position p of the epoch come from a stream
//    keyed by (seed, e, p), so no generator is shared between threads.
// Hence the same seed gives the same batches byte for byte with any thread count, with or
// without prefetching, and however long the consumer takes between batches.
//
// Parallelism. The samples of a batch are independent, so an OpenMP loop splits them over
// threads (LoaderOptions::threads).
//
// Prefetching. With `prefetch`, one background thread builds batch k + 1 while the caller
// trains on batch k. It reads only state that is fixed for the epoch (the dataset and the
// epoch's order) and writes only a buffer the caller cannot see until next() hands it over;
// next() waits for it, so there is nothing to race on. An exception thrown while building a
// batch is rethrown by the next() that asks for it, and the thread is joined when the loader
// is destroyed.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ctnn/core/random.hpp"
#include "ctnn/core/threading.hpp"
#include "ctnn/data/dataset.hpp"
#include "ctnn/data/transforms.hpp"

namespace ctnn::data {

struct LoaderOptions {
  int batch_size = 100;
  bool shuffle = true;     // a new order every epoch; false = dataset order
  bool augment = true;     // RandomCrop + RandomHorizontalFlip before ToTensor + Normalize
  bool drop_last = false;  // drop the last batch when it is smaller than batch_size
  std::uint64_t seed = 0;  // the one seed every random choice derives from
  bool prefetch = true;    // build the next batch on a background thread
  // Threads that build one batch. 0 = automatic: 1 when prefetching, ctnn::num_threads() when
  // not. Why 1: the prefetch runs while the training step keeps every core busy, and a batch
  // takes about 0.2 ms on one core, far below a step. A parallel loop that short is fragile on
  // contended cores: its barrier waits for whichever thread the OS has descheduled (on a
  // 2-core machine with other load we measured 2-thread batches 30x slower than 1-thread
  // ones). The values never depend on this setting.
  int threads = 0;
  Normalize normalize = Normalize::cifar10();
  // Data-parallel training (ctnn/dist/): this process is `rank` of `count`, and each batch it
  // yields is its contiguous share of the global batch (batch_size samples, split as evenly as
  // possible: rank r takes [n r / count, n (r + 1) / count)). Every process draws the same
  // shuffle and the same augmentation for each global position, so the global batch is the
  // same at any process count.
  struct Shard {
    int rank = 0, count = 1;
  } shard;

  // The assignment's training loader: shuffled, augmented.
  static LoaderOptions train(std::uint64_t seed, int batch_size = 100) {
    LoaderOptions o;
    o.seed = seed;
    o.batch_size = batch_size;
    return o;
  }
  // The assignment's test loader: fixed order, ToTensor + Normalize only.
  static LoaderOptions test(int batch_size = 100) {
    LoaderOptions o;
    o.batch_size = batch_size;
    o.shuffle = false;
    o.augment = false;
    return o;
  }
};

// One batch as the networks consume it, with its labels.
struct LoaderBatch {
  ImageBatch images;         // (C, N, H, W) channel-major, normalised
  std::vector<int> labels;   // labels[n] is the class of sample n
  std::vector<int> indices;  // indices[n] is sample n's index in the Dataset
  int epoch = 0;
  int index = 0;             // batch number within the epoch
  int offset = 0;            // position of sample 0 in the global batch (LoaderOptions::shard)
  int global_size = 0;       // samples in the global batch (size() when not sharded)

  int size() const { return images.batch(); }
};

namespace detail {

// A single background thread that runs one job at a time: submit() hands it a job, wait()
// blocks until the job is done and rethrows what it threw. Kept minimal on purpose: one job
// in flight, no queue, so the only shared state is the job slot below, always under the mutex.
class BackgroundWorker {
 public:
  BackgroundWorker() = default;
  BackgroundWorker(const BackgroundWorker&) = delete;
  BackgroundWorker& operator=(const BackgroundWorker&) = delete;

  // Lets a running job finish, then joins. A submitted job not yet started is not run.
  ~BackgroundWorker() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  bool busy() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return busy_;
  }

  // Precondition: not busy (call wait() first).
  void submit(std::function<void()> job) {
    if (busy()) throw std::logic_error("ctnn::data::BackgroundWorker: submit while a job is in flight");
    // Started on first use, so loaders that never prefetch never create a thread; before the
    // job slot is taken, so that a thread that cannot start (EAGAIN) leaves the worker usable.
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = std::move(job);
      busy_ = true;
      error_ = nullptr;
    }
    cv_.notify_all();
  }

  // Blocks until the submitted job (if any) has finished; rethrows its exception once.
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return !busy_; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || static_cast<bool>(job_); });
      if (stop_) return;
      std::function<void()> job = std::exchange(job_, nullptr);
      lock.unlock();
      std::exception_ptr error;
      try {
        job();
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      error_ = error;
      busy_ = false;
      cv_.notify_all();
    }
  }

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::function<void()> job_;  // submitted, not yet picked up
  bool busy_ = false;          // submitted and not yet finished
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace detail

// Not thread-safe itself: one thread calls start_epoch() and next(); the background thread is
// internal.
class DataLoader {
 public:
  // The loader keeps a reference to `data`, which must outlive it.
  explicit DataLoader(const Dataset& data, LoaderOptions options = {})
      : data_(&data), options_(options), transform_(options.augment, options.normalize) {
    if (options_.batch_size <= 0)
      throw std::invalid_argument("ctnn::data::DataLoader: batch_size must be positive, got " +
                                  std::to_string(options_.batch_size));
    data.validate(data.description.empty() ? std::string("ctnn::data::DataLoader: dataset") : data.description);
    const int n = data.size();
    const int b = options_.batch_size;
    num_batches_ = n / b + (!options_.drop_last && n % b != 0);  // (n + b - 1) / b overflows for b near INT_MAX
    epoch_size_ = options_.drop_last ? num_batches_ * b : n;
    const auto& sh = options_.shard;
    if (sh.count < 1 || sh.rank < 0 || sh.rank >= sh.count)
      throw std::invalid_argument("ctnn::data::DataLoader: shard " + std::to_string(sh.rank) + " of " +
                                  std::to_string(sh.count) + " does not exist");
    const int smallest = num_batches_ == 0 ? b : static_cast<int>(epoch_size_ - std::int64_t{num_batches_ - 1} * b);
    if (num_batches_ > 0 && smallest < sh.count)
      throw std::invalid_argument("ctnn::data::DataLoader: a batch of " + std::to_string(smallest) +
                                  " samples cannot be shared by " + std::to_string(sh.count) +
                                  " processes (a larger batch_size, or drop_last)");
  }
  // A temporary Dataset would dangle; keep the data set in a variable instead.
  DataLoader(const Dataset&&, LoaderOptions = {}) = delete;

  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The worker is declared last so it is destroyed (joined) first, while everything a
  // running job touches is still alive.
  ~DataLoader() = default;

  // Begins epoch `epoch` at batch `first_batch` (any order of epochs is allowed; the batches
  // depend only on the numbers, so a resumed run sees exactly the batches it would have seen).
  // Abandons the rest of the current epoch.
  void start_epoch(int epoch, int first_batch = 0) {
    if (first_batch < 0 || first_batch > num_batches_)
      throw std::invalid_argument("ctnn::data::DataLoader: batch " + std::to_string(first_batch) +
                                  " is outside an epoch of " + std::to_string(num_batches_) + " batches");
    finish_in_flight();
    epoch_ = epoch;
    order_ = order(epoch);
    next_batch_ = first_batch;
    started_ = true;
    if (options_.prefetch && first_batch < num_batches_) request(first_batch);
  }

  // The next batch of the epoch into `out` (whose buffers are reused); false once the epoch is
  // exhausted. Starts epoch 0 if no epoch was started. If building the batch throws, the
  // exception propagates here and a later call retries the same batch.
  bool next(LoaderBatch& out) {
    if (!started_) start_epoch(0);
    if (next_batch_ >= num_batches_) return false;
    if (options_.prefetch) {
      if (!in_flight_) request(next_batch_);
      in_flight_ = false;
      worker_.wait();
      std::swap(out, ready_);
    } else {
      build(next_batch_, resolved_threads(), out);
    }
    ++next_batch_;
    if (options_.prefetch && next_batch_ < num_batches_) request(next_batch_);
    return true;
  }

  int num_batches() const { return num_batches_; }
  int epoch_size() const { return epoch_size_; }  // images per epoch (after drop_last)
  int epoch() const { return epoch_; }
  const Dataset& dataset() const { return *data_; }
  const LoaderOptions& options() const { return options_; }

  // Dataset indices in the order epoch `epoch` visits them (all of them, before drop_last).
  std::vector<int> order(int epoch) const {
    std::vector<int> idx(static_cast<std::size_t>(data_->size()));
    std::iota(idx.begin(), idx.end(), 0);
    if (options_.shuffle) {
      Rng rng = Rng::stream(options_.seed, static_cast<std::uint64_t>(epoch));
      for (std::size_t i = idx.size(); i > 1; --i) std::swap(idx[i - 1], idx[rng.below(i)]);
    }
    return idx;
  }

  // The crop and flip applied to the sample at `position` of epoch `epoch`.
  AugmentParams augment_params(int epoch, int position) const {
    Rng rng = Rng::stream(augment_key(options_.seed, epoch), static_cast<std::uint64_t>(position));
    return transform_.draw(rng);
  }

 private:
  // Separates the per-sample augmentation streams from the shuffle stream of the same epoch.
  static std::uint64_t augment_key(std::uint64_t seed, int epoch) {
    return mix64(mix64(seed ^ 0x61756720637270ULL) + static_cast<std::uint64_t>(epoch));
  }

  int resolved_threads() const {
    if (options_.threads > 0) return options_.threads;
    return options_.prefetch ? 1 : ctnn::num_threads();
  }

  // Batch k of the current epoch into `out`: the samples are independent, so they are split
  // over `threads` threads with no effect on the values. Nothing in the loop can throw (the
  // drawn crop offsets are always in range), which matters because an exception may not leave
  // an OpenMP region.
  void build(int k, int threads, LoaderBatch& out) const {
    const int global_n = std::min(options_.batch_size, data_->size() - k * options_.batch_size);
    const auto& sh = options_.shard;
    const int lo = static_cast<int>(static_cast<long>(global_n) * sh.rank / sh.count);
    const int hi = static_cast<int>(static_cast<long>(global_n) * (sh.rank + 1) / sh.count);
    const int begin = k * options_.batch_size + lo;
    const int n = hi - lo;
    out.offset = lo;
    out.global_size = global_n;
    out.images.resize(n);
    out.labels.resize(static_cast<std::size_t>(n));
    out.indices.resize(static_cast<std::size_t>(n));
    out.epoch = epoch_;
    out.index = k;
    const Dataset& data = *data_;
    CTNN_OMP(parallel for num_threads(threads) if (threads > 1) schedule(static))
    for (int s = 0; s < n; ++s) {
      const int position = begin + s;
      const int idx = order_[static_cast<std::size_t>(position)];
      const AugmentParams p = augment_params(epoch_, position);
      transform_(data.image(idx), p, out.images, s);
      out.labels[static_cast<std::size_t>(s)] = data.label(idx);
      out.indices[static_cast<std::size_t>(s)] = idx;
    }
    (void)threads;
  }

  // Starts building batch k on the worker. The thread count is read here, on the caller's
  // thread, because OpenMP's setting does not carry over to other threads.
  void request(int k) {
    const int threads = resolved_threads();
    worker_.submit([this, k, threads] { build(k, threads, ready_); });
    in_flight_ = true;
  }

  // Waits for an abandoned prefetch; its result (or error) is no longer wanted.
  void finish_in_flight() {
    if (!in_flight_) return;
    in_flight_ = false;
    try {
      worker_.wait();
    } catch (...) {
    }
  }

  const Dataset* data_;
  LoaderOptions options_;
  CifarTransform transform_;
  int num_batches_ = 0;
  int epoch_size_ = 0;
  int epoch_ = 0;
  int next_batch_ = 0;
  bool started_ = false;
  bool in_flight_ = false;
  std::vector<int> order_;
  LoaderBatch ready_;                // written only by the worker while in_flight_
  detail::BackgroundWorker worker_;  // last: joined before the members above are destroyed
};

}  // namespace ctnn::data
