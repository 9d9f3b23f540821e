// DataLoader: coverage and order per epoch, batch contents and layout, partial batches,
// reproducibility across thread counts and prefetching, and the background worker.
#include <doctest/doctest.h>

#include "support/temp_dir.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctnn/core/threading.hpp"
#include "ctnn/data/cifar.hpp"
#include "ctnn/data/loader.hpp"
#include "ctnn/data/synthetic.hpp"

using namespace ctnn::data;
namespace fs = std::filesystem;

namespace {

struct TempDir : ctnn::test::TempDir {
  TempDir() : ctnn::test::TempDir("ctnn_test_loader") {}
};

// Restores the thread count a test changed.
struct ThreadsGuard {
  int saved = ctnn::num_threads();
  ~ThreadsGuard() { ctnn::set_num_threads(saved); }
};

// Everything a loader produced for some epochs, flattened for byte comparison.
struct Run {
  std::vector<float> images;
  std::vector<int> labels, indices, sizes;
  bool operator==(const Run& o) const {
    return images.size() == o.images.size() &&
           std::memcmp(images.data(), o.images.data(), images.size() * sizeof(float)) == 0 && labels == o.labels &&
           indices == o.indices && sizes == o.sizes;
  }
};

Run collect(const Dataset& data, const LoaderOptions& opts, int epochs) {
  DataLoader loader(data, opts);
  Run run;
  LoaderBatch b;
  for (int e = 0; e < epochs; ++e) {
    loader.start_epoch(e);
    while (loader.next(b)) {
      run.images.insert(run.images.end(), b.images.data(), b.images.data() + b.images.size());
      run.labels.insert(run.labels.end(), b.labels.begin(), b.labels.end());
      run.indices.insert(run.indices.end(), b.indices.begin(), b.indices.end());
      run.sizes.push_back(b.size());
    }
  }
  return run;
}

// Whether sample s of the batch equals image `idx` of `data` through `tf` with params `p`.
bool sample_matches(const LoaderBatch& b, int s, const Dataset& data, int idx, const CifarTransform& tf,
                    const AugmentParams& p) {
  std::vector<float> expected(kImageBytes);
  tf(data.image(idx), p, expected.data(), kImagePlane);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x)
        if (b.images(s, c, y, x) != expected[static_cast<std::size_t>(c * kImagePlane + y * kImageSide + x)]) return false;
  return true;
}

}  // namespace

TEST_CASE("The training loader yields every image exactly once per epoch, in a new order each epoch") {
  const Dataset data = make_synthetic_cifar(250, 3);
  DataLoader loader(data, LoaderOptions::train(11));  // batch 100: 100, 100, 50
  CHECK(loader.num_batches() == 3);
  CHECK(loader.epoch_size() == 250);

  std::vector<std::vector<int>> orders;
  LoaderBatch b;
  for (int e = 0; e < 3; ++e) {
    loader.start_epoch(e);
    std::vector<int> seen;
    std::vector<int> sizes;
    int k = 0;
    while (loader.next(b)) {
      CHECK(b.epoch == e);
      CHECK(b.index == k++);
      CHECK(b.images.batch() == b.size());
      REQUIRE(b.labels.size() == static_cast<std::size_t>(b.size()));
      REQUIRE(b.indices.size() == static_cast<std::size_t>(b.size()));
      for (int s = 0; s < b.size(); ++s) CHECK(b.labels[static_cast<std::size_t>(s)] == data.label(b.indices[static_cast<std::size_t>(s)]));
      seen.insert(seen.end(), b.indices.begin(), b.indices.end());
      sizes.push_back(b.size());
    }
    CHECK(sizes == std::vector<int>{100, 100, 50});
    CHECK(seen == loader.order(e));
    std::vector<int> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int> all(250);
    for (int i = 0; i < 250; ++i) all[static_cast<std::size_t>(i)] = i;
    CHECK(sorted == all);  // each image exactly once
    CHECK(seen != all);    // and actually shuffled
    orders.push_back(seen);
  }
  CHECK(orders[0] != orders[1]);
  CHECK(orders[1] != orders[2]);
  CHECK(orders[0] != orders[2]);
  CHECK_FALSE(loader.next(b));  // the epoch stays exhausted until the next start_epoch

  // An epoch's order depends only on (seed, epoch).
  DataLoader same(data, LoaderOptions::train(11));
  CHECK(same.order(1) == orders[1]);
  DataLoader other(data, LoaderOptions::train(12));
  CHECK(other.order(1) != orders[1]);
}

TEST_CASE("Each training sample is its dataset image through the transform with its drawn crop and flip") {
  const Dataset data = make_synthetic_cifar(120, 5);
  DataLoader loader(data, LoaderOptions::train(99, 50));
  const CifarTransform tf = CifarTransform::train();
  LoaderBatch b;
  int flips = 0, shifted = 0, total = 0;
  for (int e = 0; e < 2; ++e) {
    loader.start_epoch(e);
    int position = 0;
    while (loader.next(b)) {
      for (int s = 0; s < b.size(); ++s, ++position) {
        const AugmentParams p = loader.augment_params(e, position);
        CHECK(sample_matches(b, s, data, b.indices[static_cast<std::size_t>(s)], tf, p));
        flips += p.flip;
        shifted += !(p.crop == CropParams{4, 4});
        ++total;
      }
    }
  }
  CHECK(total == 240);
  CHECK(flips > 80);  // about half of 240
  CHECK(flips < 160);
  CHECK(shifted > 200);  // 80 of 81 offset pairs move the image
  // Different epochs draw different augmentations for the same position.
  int differ = 0;
  for (int p = 0; p < 50; ++p) differ += !(loader.augment_params(0, p) == loader.augment_params(1, p));
  CHECK(differ > 40);
}

TEST_CASE("The last partial batch is kept by default and dropped with drop_last") {
  const Dataset data = make_synthetic_cifar(250, 1);
  LoaderOptions opts = LoaderOptions::train(1);
  opts.drop_last = true;
  DataLoader loader(data, opts);
  CHECK(loader.num_batches() == 2);
  CHECK(loader.epoch_size() == 200);
  LoaderBatch b;
  std::vector<int> seen;
  while (loader.next(b)) {
    CHECK(b.size() == 100);
    seen.insert(seen.end(), b.indices.begin(), b.indices.end());
  }
  CHECK(seen.size() == 200);
  std::sort(seen.begin(), seen.end());
  CHECK(std::adjacent_find(seen.begin(), seen.end()) == seen.end());

  LoaderOptions exact = LoaderOptions::test(50);
  exact.drop_last = true;
  CHECK(DataLoader(data, exact).num_batches() == 5);
  CHECK(DataLoader(data, LoaderOptions::test(50)).num_batches() == 5);
  CHECK(DataLoader(data, LoaderOptions::test(1000)).num_batches() == 1);
  LoaderOptions too_big = LoaderOptions::test(1000);
  too_big.drop_last = true;
  DataLoader none(data, too_big);
  CHECK(none.num_batches() == 0);
  CHECK_FALSE(none.next(b));
  // A batch as large as an int holds the whole set ((n + b - 1) / b would overflow).
  DataLoader huge(data, LoaderOptions::test(std::numeric_limits<int>::max()));
  CHECK(huge.num_batches() == 1);
  REQUIRE(huge.next(b));
  CHECK(b.size() == 250);
}

TEST_CASE("The test loader keeps the dataset order and only applies ToTensor + Normalize") {
  const Dataset data = make_synthetic_cifar(130, 8);
  DataLoader loader(data, LoaderOptions::test());
  const CifarTransform tf = CifarTransform::test();
  LoaderBatch b;
  for (int e = 0; e < 2; ++e) {
    loader.start_epoch(e);
    int position = 0;
    while (loader.next(b)) {
      for (int s = 0; s < b.size(); ++s, ++position) {
        CHECK(b.indices[static_cast<std::size_t>(s)] == position);
        CHECK(sample_matches(b, s, data, position, tf, tf.identity()));
      }
    }
    CHECK(position == 130);
  }
  // By hand, for one pixel: (v / 255 - mean) / std.
  loader.start_epoch(0);
  REQUIRE(loader.next(b));
  const int v = data.pixel(7, 2, 30, 1);
  CHECK(b.images(7, 2, 30, 1) == doctest::Approx((v / 255.0 - 0.4465) / 0.2010).epsilon(1e-6));
}

TEST_CASE("Images read from a CIFAR file reach the batch in (n, c, y, x) order") {
  TempDir tmp;
  const fs::path file = tmp.path / "test_batch.bin";
  {
    std::ofstream out(file, std::ios::binary);
    for (int r = 0; r < 3; ++r) {
      out.put(static_cast<char>(r + 4));
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 32; ++y)
          for (int x = 0; x < 32; ++x) out.put(static_cast<char>((r * 60 + c * 80 + y * 5 + x) & 0xFF));
    }
  }
  const Dataset data = read_cifar_batch(file);
  LoaderOptions opts = LoaderOptions::test(2);
  DataLoader loader(data, opts);
  const Normalize norm;
  LoaderBatch b;
  int record = 0;
  while (loader.next(b)) {
    for (int s = 0; s < b.size(); ++s, ++record) {
      CHECK(b.labels[static_cast<std::size_t>(s)] == record + 4);
      bool ok = true;
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 32; ++y)
          for (int x = 0; x < 32; ++x) {
            const auto v = static_cast<std::uint8_t>((record * 60 + c * 80 + y * 5 + x) & 0xFF);
            ok = ok && b.images(s, c, y, x) == norm(c, static_cast<float>(v) / 255.0f);
          }
      CHECK(ok);
    }
    // Channel-major: channel 1 of the whole batch is one contiguous run after channel 0.
    CHECK(b.images.channel(1) == b.images.data() + static_cast<std::size_t>(b.size()) * kImagePlane);
  }
  CHECK(record == 3);
}

TEST_CASE("The same seed gives identical batches at 1 and 2 threads, with or without prefetching") {
  ThreadsGuard guard;
  const Dataset data = make_synthetic_cifar(230, 21);
  LoaderOptions base = LoaderOptions::train(1234, 64);

  std::vector<Run> runs;
  for (int threads : {1, 2}) {
    for (bool prefetch : {false, true}) {
      ctnn::set_num_threads(threads);
      LoaderOptions o = base;
      o.prefetch = prefetch;
      runs.push_back(collect(data, o, 2));
    }
  }
  // An explicit per-loader thread count, independent of the global setting.
  ctnn::set_num_threads(1);
  for (bool prefetch : {false, true}) {
    LoaderOptions explicit_two = base;
    explicit_two.threads = 2;
    explicit_two.prefetch = prefetch;
    runs.push_back(collect(data, explicit_two, 2));
  }

  REQUIRE(runs[0].sizes == std::vector<int>{64, 64, 64, 38, 64, 64, 64, 38});
  for (std::size_t i = 1; i < runs.size(); ++i) {
    CAPTURE(i);
    CHECK(runs[i] == runs[0]);
  }

  LoaderOptions other = base;
  other.seed = 1235;
  CHECK_FALSE(collect(data, other, 2) == runs[0]);

  // The test loader too.
  ctnn::set_num_threads(1);
  const Run t1 = collect(data, LoaderOptions::test(64), 1);
  ctnn::set_num_threads(2);
  const Run t2 = collect(data, LoaderOptions::test(64), 1);
  CHECK(t1 == t2);
}

TEST_CASE("Restarting an epoch mid-way, skipping epochs and destroying mid-epoch are safe") {
  const Dataset data = make_synthetic_cifar(300, 4);
  const LoaderOptions opts = LoaderOptions::train(77, 40);
  const Run reference = collect(data, opts, 1);

  LoaderBatch b;
  {
    DataLoader loader(data, opts);
    CHECK(loader.next(b));  // starts epoch 0 implicitly
    CHECK(b.epoch == 0);
    CHECK(loader.next(b));
    loader.start_epoch(0);  // abandons the prefetched third batch
    Run again;
    while (loader.next(b)) {
      again.images.insert(again.images.end(), b.images.data(), b.images.data() + b.images.size());
      again.labels.insert(again.labels.end(), b.labels.begin(), b.labels.end());
      again.indices.insert(again.indices.end(), b.indices.begin(), b.indices.end());
      again.sizes.push_back(b.size());
    }
    CHECK(again == reference);

    // Epochs may be visited in any order: epoch 5 is the same whether or not 1..4 were seen.
    loader.start_epoch(5);
    REQUIRE(loader.next(b));
    const std::vector<int> first_of_5 = b.indices;
    DataLoader fresh(data, opts);
    fresh.start_epoch(5);
    LoaderBatch f;
    REQUIRE(fresh.next(f));
    CHECK(f.indices == first_of_5);
    CHECK(std::memcmp(f.images.data(), b.images.data(), f.images.size() * sizeof(float)) == 0);
    // Destroyed here with a prefetch in flight: it must join; a hang or a crash fails the run.
  }
}

TEST_CASE("The loader rejects bad options and inconsistent data") {
  const Dataset data = make_synthetic_cifar(10, 1);
  LoaderOptions zero = LoaderOptions::test(0);
  CHECK_THROWS_AS(DataLoader(data, zero), std::invalid_argument);

  Dataset bad = data;
  bad.labels[3] = 12;
  bad.description = "hand-made set";
  try {
    DataLoader loader(bad, LoaderOptions::test());
    FAIL("no DataError thrown");
  } catch (const DataError& e) {
    const std::string msg = e.what();
    CHECK(msg.find("hand-made set") != std::string::npos);
    CHECK(msg.find("image 3: label 12 is above 9") != std::string::npos);
  }
  Dataset short_pixels = data;
  short_pixels.pixels.pop_back();
  CHECK_THROWS_AS(DataLoader(short_pixels, LoaderOptions::test()), DataError);
}

TEST_CASE("BackgroundWorker runs jobs off the caller's thread and rethrows their exceptions") {
  detail::BackgroundWorker worker;
  const auto caller = std::this_thread::get_id();
  std::thread::id ran_on;
  worker.submit([&] { ran_on = std::this_thread::get_id(); });
  worker.wait();
  CHECK(ran_on != caller);

  worker.submit([] { throw std::runtime_error("batch 7 failed"); });
  CHECK_THROWS_WITH_AS(worker.wait(), "batch 7 failed", std::runtime_error);
  worker.wait();  // the error is reported once, then the worker is idle again

  int value = 0;
  std::atomic<bool> release{false};
  worker.submit([&] {
    while (!release) std::this_thread::yield();
    value = 42;
  });
  CHECK(worker.busy());
  CHECK_THROWS_AS(worker.submit([] {}), std::logic_error);  // one job at a time
  release = true;
  worker.wait();
  CHECK(value == 42);
  CHECK_FALSE(worker.busy());

  // Destroyed while a slow job runs: the destructor waits for it.
  std::atomic<bool> started{false}, finished{false};
  {
    detail::BackgroundWorker w;
    w.submit([&] {
      started = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      finished = true;
    });
    while (!started) std::this_thread::yield();
  }
  CHECK(finished);
  // A job submitted but not yet started when the worker is destroyed may be skipped; either
  // way destruction returns.
  {
    detail::BackgroundWorker w;
    w.submit([] {});
  }
}

TEST_CASE("BackgroundWorker: a thread that cannot start leaves the worker usable") {
  // Review finding: submit() took the job slot before starting its thread, so after one
  // EAGAIN every later submit said "submit while a job is in flight" and wait() hung. Run in a
  // child process, as user nobody when the tests run as root, with no processes allowed to the
  // user (RLIMIT_NPROC 0: thread creation fails), then the limit lifted again.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(3);
    rlimit limit{};
    if (::getrlimit(RLIMIT_NPROC, &limit) != 0) ::_exit(4);
    const rlimit none{0, limit.rlim_max};
    if (::setrlimit(RLIMIT_NPROC, &none) != 0) ::_exit(5);
    detail::BackgroundWorker worker;
    bool refused = false;
    try {
      worker.submit([] {});
    } catch (const std::system_error&) {
      refused = true;
    }
    if (!refused) ::_exit(6);  // (the limit did not hold: nothing tested)
    if (worker.busy()) ::_exit(7);
    if (::setrlimit(RLIMIT_NPROC, &limit) != 0) ::_exit(8);
    int value = 0;
    try {
      worker.submit([&] { value = 42; });
      worker.wait();
    } catch (const std::exception&) {
      ::_exit(9);
    }
    ::_exit(value == 42 ? 0 : 10);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("Starting an epoch at batch k yields exactly that epoch's batches from k on") {
  const Dataset data = make_synthetic_cifar(300, 5);
  const LoaderOptions opts = LoaderOptions::train(3, 40);
  DataLoader full(data, opts), resumed(data, opts);
  LoaderBatch a, b;
  full.start_epoch(2);
  for (int k = 0; k < 3; ++k) REQUIRE(full.next(a));
  resumed.start_epoch(2, 3);
  int rest = 0;
  while (full.next(a)) {
    REQUIRE(resumed.next(b));
    CHECK(a.indices == b.indices);
    CHECK(a.index == b.index);
    CHECK(std::memcmp(a.images.data(), b.images.data(), a.images.size() * sizeof(float)) == 0);
    ++rest;
  }
  CHECK(rest == 5);  // batches 3..7 of 8
  CHECK(!resumed.next(b));
  resumed.start_epoch(0, resumed.num_batches());  // an epoch already finished: nothing left
  CHECK(!resumed.next(b));
  CHECK_THROWS_AS(resumed.start_epoch(0, resumed.num_batches() + 1), std::invalid_argument);
  CHECK_THROWS_AS(resumed.start_epoch(0, -1), std::invalid_argument);
}

TEST_CASE("Shards of a batch are its contiguous parts: together they are the unsharded batch") {
  const Dataset data = make_synthetic_cifar(23, 5);
  auto options = LoaderOptions::train(4, 10);
  options.prefetch = false;
  DataLoader whole(data, options);
  std::vector<LoaderBatch> parts(3);
  std::vector<std::unique_ptr<DataLoader>> shards;
  for (int r = 0; r < 3; ++r) {
    auto o = options;
    o.shard = {r, 3};
    shards.push_back(std::make_unique<DataLoader>(data, o));
    shards.back()->start_epoch(1);
  }
  whole.start_epoch(1);
  LoaderBatch b;
  int batches = 0;
  while (whole.next(b)) {
    ++batches;
    std::vector<float> images;
    std::vector<int> labels;
    int expected_offset = 0;
    for (int r = 0; r < 3; ++r) {
      REQUIRE(shards[r]->next(parts[r]));
      CHECK(parts[r].global_size == b.size());
      CHECK(parts[r].offset == expected_offset);
      CHECK(parts[r].size() == (b.size() * (r + 1)) / 3 - (b.size() * r) / 3);  // as even as can be
      expected_offset += parts[r].size();
      const auto img = parts[r].images.to_nchw();
      images.insert(images.end(), img.begin(), img.end());
      labels.insert(labels.end(), parts[r].labels.begin(), parts[r].labels.end());
    }
    CHECK(images == b.images.to_nchw());  // same shuffle, same crops and flips per position
    CHECK(labels == b.labels);
  }
  CHECK(batches == 3);  // 10, 10 and 3 images
  for (auto& s : shards) CHECK(!s->next(b));

  auto too_many = options;
  too_many.shard = {0, 4};  // the last batch has 3 images
  CHECK_THROWS_AS(DataLoader(data, too_many), std::invalid_argument);
  too_many.drop_last = true;
  CHECK_NOTHROW(DataLoader(data, too_many));
  auto bad = options;
  bad.shard = {3, 3};
  CHECK_THROWS_AS(DataLoader(data, bad), std::invalid_argument);
}
