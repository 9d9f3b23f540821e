// Core: compile-time shapes, the channel-major batch layout, random numbers, thread settings.
#include "support/check.hpp"

#include <omp.h>

#include <cstdint>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

using namespace ctnn;
using namespace ctnn::test;

TEST_CASE("Shape constants and PyTorch's window arithmetic") {
  using S = Shape<3, 32, 32>;
  static_assert(S::plane == 1024 && S::size == 3072);
  static_assert(window_out(32, 7, 2, 3) == 16);
  static_assert(window_out(16, 3, 2, 0) == 7);   // floor, as nn.MaxPool2d
  static_assert(window_out(7, 1, 2, 0) == 4);
  static_assert(window_out(2, 2, 1, 0) == 1);
}

TEST_CASE("Batch is channel-major (C, N, H, W) and converts to and from NCHW") {
  Batch<Shape<2, 2, 3>> b(2);
  std::vector<float> nchw(b.size());
  for (std::size_t i = 0; i < nchw.size(); ++i) nchw[i] = static_cast<float>(i);
  b.from_nchw(nchw.data(), 2);
  // NCHW index of (n=1, c=0, y=1, x=2) is 1*12 + 0*6 + 1*3 + 2 = 17.
  CHECK(b(1, 0, 1, 2) == 17.0f);
  // Channel-major storage: channel 0 holds sample 0 then sample 1.
  CHECK(b.data()[6 + 5] == 17.0f);
  CHECK(b.channel(1)[0] == 6.0f);  // (n=0, c=1, 0, 0)
  CHECK(b.channel_stride() == 12);
  CHECK(b.to_nchw() == nchw);
}

TEST_CASE("Batch views share storage and cannot be resized; owners keep capacity") {
  std::vector<float> storage(2 * 4, 1.0f);
  auto v = Batch<Shape<4, 1, 1>>::view(storage.data(), 2);
  v(1, 3, 0, 0) = 9.0f;
  CHECK(storage[3 * 2 + 1] == 9.0f);
  CHECK_NOTHROW(v.resize(2));
  CHECK_THROWS_AS(v.resize(3), std::logic_error);
  Batch<Shape<4, 1, 1>> owner(8);
  const float* before = owner.data();
  owner.resize(4);
  owner.resize(8);
  CHECK(owner.data() == before);  // no reallocation inside a training loop
  Batch<Shape<4, 1, 1>> copy = v;  // a copy owns its data
  copy(0, 0, 0, 0) = -1.0f;
  CHECK(storage[0] == 1.0f);
}

TEST_CASE("A Batch whose growth fails is left as it was") {
#if CTNN_TEST_UNDER_ASAN
  MESSAGE("skipped in this ASan build: its allocator reports an allocation of 2^50 bytes as an error of its own");
#else
  Batch<Shape<1024, 1024, 1>> b(2);
  b.fill(1.0f);
  CHECK_THROWS_AS(b.resize(1 << 28), std::bad_alloc);  // 2^50 bytes
  CHECK(b.batch() == 2);  // it said 2^28 over its storage of 2 samples before
  CHECK(b.size() == 2u * 1024 * 1024);
  CHECK(b(1, 1023, 1023, 0) == 1.0f);
#endif
}

// The flags of the mapping of this process that holds `p`, from /proc/self/smaps ("" if none).
static std::string mapping_flags(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long long lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-' && line.find(':') > line.find(' ')) {
      inside = lo <= at && at < hi;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

TEST_CASE("AlignedFloats: packet-aligned; blocks of 2 MiB and more 2 MiB-aligned and, on Linux, marked for huge pages") {
  AlignedFloats small(1000, 1.0f);
  CHECK(reinterpret_cast<std::uintptr_t>(small.data()) % EIGEN_MAX_ALIGN_BYTES == 0);
  AlignedFloats large((std::size_t{5} << 20) / sizeof(float) + 3, 2.0f);  // 5 MiB and a bit
  CHECK(reinterpret_cast<std::uintptr_t>(large.data()) % (std::size_t{1} << 21) == 0);
  CHECK(large.back() == 2.0f);
  large.resize(large.size() * 2, 3.0f);  // regrown: a new block, the old one freed as it was taken
  CHECK(reinterpret_cast<std::uintptr_t>(large.data()) % (std::size_t{1} << 21) == 0);
  CHECK(large.front() == 2.0f);
  CHECK(large.back() == 3.0f);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  std::getline(thp, modes);
  if (modes.empty() || modes.find("[never]") != std::string::npos) {
    MESSAGE("skipped: transparent huge pages are off here (" << modes << "), so madvise's advice is not recorded");
  } else {
    // " hg": the mapping was advised MADV_HUGEPAGE (proc(5)); a small block's is not.
    const std::string flags = mapping_flags(large.data() + large.size() / 2);
    CAPTURE(flags);
    CHECK(flags.find(" hg") != std::string::npos);
    CHECK(mapping_flags(small.data()).find(" hg") == std::string::npos);
  }
#endif
}

TEST_CASE("Rng is reproducible, and its distributions have the right moments") {
  Rng a(42), b(42), c(43);
  for (int i = 0; i < 10; ++i) CHECK(a.next() == b.next());
  CHECK(a.next() != c.next());
  Rng r(7);
  double sum = 0, sq = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double v = r.normal();
    sum += v;
    sq += v * v;
  }
  CHECK(std::abs(sum / n) < 0.01);
  CHECK(std::abs(sq / n - 1.0) < 0.02);
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 70000; ++i) ++counts[r.below(7)];
  for (int k : counts) CHECK(std::abs(k - 10000) < 500);
  for (int i = 0; i < 1000; ++i) {
    const double u = r.uniform(-2.0, 3.0);
    CHECK((u >= -2.0 && u < 3.0));
  }
}

TEST_CASE("Counter-based streams depend only on their arguments") {
  CHECK(counter_uniform(1, 2, 3) == counter_uniform(1, 2, 3));
  std::set<double> seen;
  for (std::uint64_t i = 0; i < 1000; ++i) seen.insert(counter_uniform(1, 2, i));
  CHECK(seen.size() == 1000);
  CHECK(counter_uniform(1, 2, 3) != counter_uniform(1, 3, 3));
  Rng s1 = Rng::stream(5, 1), s2 = Rng::stream(5, 2), s1b = Rng::stream(5, 1);
  const auto v = s1.next();
  CHECK(v == s1b.next());
  CHECK(v != s2.next());
}

TEST_CASE("set_num_threads sets ctnn's thread count; 0 means all cores") {
  set_num_threads(1);
  CHECK(num_threads() == 1);
  set_num_threads(2);
#ifdef _OPENMP
  CHECK(num_threads() == 2);
  set_num_threads(0);
  CHECK(num_threads() == omp_get_num_procs());  // the cores this process may use
#else
  CHECK(num_threads() == 1);  // built without OpenMP: everything on the calling thread
#endif
  CHECK(Eigen::nbThreads() == 1);  // Eigen never adds its own threads (see threading.hpp)
}
