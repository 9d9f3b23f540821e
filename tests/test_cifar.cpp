// CIFAR-10 reader: decoding of hand-written files (labels, channel order, row order), the split
// layout, class names, one test per malformed input, and the synthetic source.
#include "support/check.hpp"

#include "support/temp_dir.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctnn/core/hooks.hpp"
#include "ctnn/core/threading.hpp"
#include "ctnn/data/cifar.hpp"
#include "ctnn/data/synthetic.hpp"

using namespace ctnn::data;
namespace fs = std::filesystem;

namespace {

struct TempDir : ctnn::test::TempDir {
  TempDir() : ctnn::test::TempDir("ctnn_test_cifar") {}
};

using Image = std::array<std::uint8_t, kImageBytes>;

// A value for every (image, channel, row, column) that changes along each of them and is not
// symmetric, so a swapped channel, a flipped row order or a transposed image all show up.
std::uint8_t pattern(int image, int c, int y, int x) {
  return static_cast<std::uint8_t>((image * 41 + c * 89 + y * 7 + x * 3 + (x * y) % 5) & 0xFF);
}

Image patterned(int image) {
  Image img{};
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) img[static_cast<std::size_t>(c * 1024 + y * 32 + x)] = pattern(image, c, y, x);
  return img;
}

struct Record {
  int label;  // written as is, so invalid labels can be written too
  Image image;
};

// Writes records byte by byte in the official layout, independently of ctnn's writer.
void write_records(const fs::path& file, const std::vector<Record>& records) {
  std::ofstream out(file, std::ios::binary);
  for (const auto& r : records) {
    out.put(static_cast<char>(static_cast<std::uint8_t>(r.label)));
    out.write(reinterpret_cast<const char*>(r.image.data()), kImageBytes);
  }
  REQUIRE(out.good());
}

void write_bytes(const fs::path& file, std::size_t count, std::uint8_t value = 3) {
  std::ofstream out(file, std::ios::binary);
  const std::vector<char> bytes(count, static_cast<char>(value));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// A complete cifar-10-batches-bin directory: data_batch_f has counts[f - 1] records, whose label
// is f (1..5) and whose image is patterned(10 * f + record); test_batch has 4 records, label 0.
fs::path write_split_dir(const fs::path& root, const std::array<int, 5>& counts = {2, 1, 3, 1, 2}) {
  const fs::path dir = root / "cifar-10-batches-bin";
  fs::create_directories(dir);
  for (int f = 1; f <= 5; ++f) {
    std::vector<Record> recs;
    for (int r = 0; r < counts[static_cast<std::size_t>(f - 1)]; ++r) recs.push_back({f, patterned(10 * f + r)});
    write_records(dir / ("data_batch_" + std::to_string(f) + ".bin"), recs);
  }
  std::vector<Record> test;
  for (int r = 0; r < 4; ++r) test.push_back({0, patterned(100 + r)});
  write_records(dir / "test_batch.bin", test);
  return dir;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e.what();
  }
  return "<no DataError thrown>";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("read_cifar_batch decodes labels, channel order and row order exactly") {
  TempDir tmp;
  const fs::path file = tmp.path / "data_batch_1.bin";

  // Image 0 by hand: flat colour planes R = 10, G = 20, B = 30, with markers that pin the
  // channel order (R, G, B), the row order (top first) and the column order (left first).
  Image hand{};
  for (int i = 0; i < 1024; ++i) {
    hand[static_cast<std::size_t>(i)] = 10;
    hand[static_cast<std::size_t>(1024 + i)] = 20;
    hand[static_cast<std::size_t>(2048 + i)] = 30;
  }
  hand[0] = 1;                   // R, top-left
  hand[1024 + 31] = 2;           // G, top row, right-most column
  hand[2048 + 31 * 32] = 3;      // B, bottom row, left-most column
  hand[2048 + 31 * 32 + 31] = 4; // B, bottom-right
  write_records(file, {{7, hand}, {0, patterned(1)}, {9, patterned(2)}});

  const Dataset d = read_cifar_batch(file);
  REQUIRE(d.size() == 3);
  CHECK(d.pixels.size() == 3u * kImageBytes);
  CHECK(d.label(0) == 7);
  CHECK(d.label(1) == 0);
  CHECK(d.label(2) == 9);

  CHECK(d.pixel(0, 0, 0, 0) == 1);
  CHECK(d.pixel(0, 0, 0, 1) == 10);
  CHECK(d.pixel(0, 0, 31, 31) == 10);
  CHECK(d.pixel(0, 1, 0, 31) == 2);
  CHECK(d.pixel(0, 1, 31, 0) == 20);
  CHECK(d.pixel(0, 2, 31, 0) == 3);
  CHECK(d.pixel(0, 2, 0, 31) == 30);
  CHECK(d.pixel(0, 2, 31, 31) == 4);

  bool all_match = true;
  for (int i = 1; i <= 2; ++i)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) all_match = all_match && d.pixel(i, c, y, x) == pattern(i, c, y, x);
  CHECK(all_match);
  CHECK(d.class_names == cifar10_class_names());
  CHECK_FALSE(d.synthetic);
}

TEST_CASE("load_cifar10: train is data_batch_1..5 in order, test is test_batch") {
  TempDir tmp;
  const fs::path dir = write_split_dir(tmp.path);

  const Dataset train = load_cifar10(dir, Split::train);
  REQUIRE(train.size() == 9);
  const int expected_file[9] = {1, 1, 2, 3, 3, 3, 4, 5, 5};
  const int expected_record[9] = {0, 1, 0, 0, 1, 2, 0, 0, 1};
  bool pixels_match = true;
  for (int i = 0; i < 9; ++i) {
    CHECK(train.label(i) == expected_file[i]);
    const int img = 10 * expected_file[i] + expected_record[i];
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) pixels_match = pixels_match && train.pixel(i, c, y, x) == pattern(img, c, y, x);
  }
  CHECK(pixels_match);
  CHECK(contains(train.description, "train"));

  const Dataset test = load_cifar10(dir, Split::test);
  REQUIRE(test.size() == 4);
  CHECK(test.label(3) == 0);
  CHECK(test.pixel(3, 2, 30, 1) == pattern(103, 2, 30, 1));

  SUBCASE("the parent of cifar-10-batches-bin works too") {
    const Dataset again = load_cifar10(tmp.path, Split::test);
    CHECK(again.pixels == test.pixels);
    CHECK(again.labels == test.labels);
  }
}

TEST_CASE("Class names come from batches.meta.txt when present") {
  TempDir tmp;
  const fs::path dir = write_split_dir(tmp.path);
  CHECK(load_cifar10(dir, Split::test).class_names == cifar10_class_names());

  {
    std::ofstream meta(dir / "batches.meta.txt", std::ios::binary);
    meta << "c0\r\nc1\r\n  c2  \nc3\nc4\nc5\nc6\nc7\nc8\nc9 name\n\n\n";
  }
  const auto names = load_cifar10(dir, Split::test).class_names;
  REQUIRE(names.size() == 10);
  CHECK(names[0] == "c0");
  CHECK(names[1] == "c1");
  CHECK(names[2] == "c2");
  CHECK(names[9] == "c9 name");

  {
    std::ofstream meta(dir / "batches.meta.txt");
    meta << "cat\ndog\nbird\n";
  }
  const std::string msg = error_of([&] { load_cifar10(dir, Split::test); });
  CHECK(contains(msg, (dir / "batches.meta.txt").string()));
  CHECK(contains(msg, "lists 3 names, expected 10"));

  fs::remove(dir / "batches.meta.txt");
  fs::create_directory(dir / "batches.meta.txt");
  CHECK(contains(error_of([&] { load_cifar10(dir, Split::test); }), "batches.meta.txt' is a directory"));
  // A FIFO would block the reader forever; a link to /dev/zero would fill memory.
  fs::remove(dir / "batches.meta.txt");
  REQUIRE(::mkfifo((dir / "batches.meta.txt").c_str(), 0600) == 0);
  CHECK(contains(error_of([&] { load_cifar10(dir, Split::test); }), "batches.meta.txt' is not a regular file"));
  fs::remove(dir / "batches.meta.txt");
  write_bytes(dir / "batches.meta.txt", 100000);
  CHECK(contains(error_of([&] { load_cifar10(dir, Split::test); }), "is 100000 bytes, too large for 10 class names"));
}

TEST_CASE("A missing data directory is reported with its path") {
  TempDir tmp;
  const fs::path missing = tmp.path / "no-such-dir";
  const std::string msg = error_of([&] { load_cifar10(missing, Split::train); });
  CHECK(contains(msg, missing.string()));
  CHECK(contains(msg, "does not exist"));

  const fs::path not_dir = tmp.path / "plain-file";
  write_bytes(not_dir, 10);
  CHECK(contains(error_of([&] { load_cifar10(not_dir, Split::test); }), "is not a directory"));
}

TEST_CASE("A missing batch file is reported with its path") {
  TempDir tmp;
  const fs::path dir = write_split_dir(tmp.path);
  fs::remove(dir / "data_batch_3.bin");
  const std::string msg = error_of([&] { load_cifar10(dir, Split::train); });
  CHECK(contains(msg, "missing file"));
  CHECK(contains(msg, (dir / "data_batch_3.bin").string()));
  // The test split does not need the training files.
  CHECK(load_cifar10(dir, Split::test).size() == 4);

  fs::remove(dir / "test_batch.bin");
  CHECK(contains(error_of([&] { load_cifar10(dir, Split::test); }), "test_batch.bin"));
  CHECK(contains(error_of([&] { read_cifar_batch(dir / "nothing.bin"); }), "missing file"));
  // A control character in the path is shown escaped, as every quoted name in ctnn's messages.
  const std::string odd = error_of([&] { read_cifar_batch(dir / "a\nb\x01.bin"); });
  CHECK(contains(odd, "a\\x0ab\\x01.bin'"));
  CHECK(!contains(odd, "\n"));
}

TEST_CASE("A truncated file (size not a multiple of 3073) is reported with its size") {
  TempDir tmp;
  const fs::path dir = write_split_dir(tmp.path);
  write_bytes(dir / "data_batch_2.bin", 2 * 3073 + 100, 1);
  const std::string msg = error_of([&] { load_cifar10(dir, Split::train); });
  CHECK(contains(msg, (dir / "data_batch_2.bin").string()));
  CHECK(contains(msg, "truncated"));
  CHECK(contains(msg, "6246 bytes is not a multiple of the 3073-byte record"));
  CHECK(contains(msg, "2 whole records, then 100 bytes of record 2"));

  write_bytes(dir / "short.bin", 3072);  // one record minus a byte
  CHECK(contains(error_of([&] { read_cifar_batch(dir / "short.bin"); }), "0 whole records, then 3072 bytes of record 0"));
}

TEST_CASE("Files too large for memory are reported with their name, not as a bare std::bad_alloc") {
#if CTNN_TEST_UNDER_ASAN
  MESSAGE("skipped in this ASan build: its allocator reports an allocation of 3 TB as an error of its own");
#else
  TempDir tmp;
  const fs::path dir = write_split_dir(tmp.path);
  fs::resize_file(dir / "test_batch.bin", std::uintmax_t{3073} << 30);  // 3.3 TB, sparse: no disk used
  const std::string msg = error_of([&] { load_cifar10(dir, Split::test); });
  CHECK(contains(msg, "CIFAR-10: the 1073741824 records of '" + (dir / "test_batch.bin").string() + "'"));
  CHECK(contains(msg, "do not fit in memory"));
#endif
}

TEST_CASE("A folder this user may not enter is said, not reported as a missing file") {
  // Run in a child process as user nobody when the tests run as root (root enters any folder).
  TempDir tmp;
  const fs::path locked = tmp.path / "locked";
  const fs::path dir = write_split_dir(locked);
  int out[2];
  REQUIRE(::pipe(out) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(out[0]);
    const bool root = ::geteuid() == 0;
    if (root ? ::chmod(locked.c_str(), 0700) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0
             : ::chmod(locked.c_str(), 0) != 0)
      ::_exit(3);
    std::string said;
    try {
      load_cifar10(dir, Split::test);
    } catch (const std::exception& e) {
      said = e.what();
    }
    try {  // a checkpoint there, as ctnn-eval --checkpoint checks it first
      ctnn::io::require_readable(locked / "x.ckpt");
    } catch (const std::exception& e) {
      said += std::string("\n") + e.what();
    }
    const bool written = ::write(out[1], said.data(), said.size()) == static_cast<ssize_t>(said.size());
    ::_exit(written ? 0 : 4);
  }
  ::close(out[1]);
  std::string said;
  char buffer[512];
  for (ssize_t n; (n = ::read(out[0], buffer, sizeof buffer)) > 0;) said.append(buffer, static_cast<std::size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  ::chmod(locked.c_str(), 0700);  // (for the TempDir's removal)
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  INFO(said);
  CHECK(contains(said, "CIFAR-10: cannot look at the data directory"));
  CHECK(contains(said, (locked / "x.ckpt").string() + ": cannot look at it: Permission denied"));
  CHECK(!contains(said, "does not exist"));
  CHECK(!contains(said, "no such file"));
}

TEST_CASE("An empty file is reported as empty") {
  TempDir tmp;
  const fs::path dir = write_split_dir(tmp.path);
  write_bytes(dir / "test_batch.bin", 0);
  const std::string msg = error_of([&] { load_cifar10(dir, Split::test); });
  CHECK(contains(msg, (dir / "test_batch.bin").string()));
  CHECK(contains(msg, "is empty"));
}

TEST_CASE("A label byte above 9 is reported with file and record index") {
  TempDir tmp;
  const fs::path dir = write_split_dir(tmp.path);
  write_records(dir / "data_batch_4.bin", {{3, patterned(0)}, {10, patterned(1)}, {2, patterned(2)}});
  const std::string msg = error_of([&] { load_cifar10(dir, Split::train); });
  CHECK(contains(msg, (dir / "data_batch_4.bin").string()));
  CHECK(contains(msg, "record 1 "));
  CHECK(contains(msg, "byte offset 3073"));
  CHECK(contains(msg, "label byte 10 is above 9"));

  write_records(tmp.path / "one.bin", {{255, patterned(0)}});
  const std::string msg255 = error_of([&] { read_cifar_batch(tmp.path / "one.bin"); });
  CHECK(contains(msg255, "record 0 "));
  CHECK(contains(msg255, "label byte 255 is above 9"));
}

TEST_CASE("write_cifar_batch writes the official layout") {
  TempDir tmp;
  Dataset d;
  d.labels = {4, 8};
  for (int i = 0; i < 2; ++i) {
    const Image img = patterned(i + 50);
    d.pixels.insert(d.pixels.end(), img.begin(), img.end());
  }
  const fs::path file = tmp.path / "out.bin";
  write_cifar_batch(file, d);
  CHECK(fs::file_size(file) == 2u * 3073u);
  {
    std::ifstream in(file, std::ios::binary);
    std::vector<char> raw(2 * 3073);
    in.read(raw.data(), static_cast<std::streamsize>(raw.size()));
    CHECK(static_cast<std::uint8_t>(raw[0]) == 4);
    CHECK(static_cast<std::uint8_t>(raw[3073]) == 8);
    CHECK(static_cast<std::uint8_t>(raw[1 + 1024 + 5 * 32 + 6]) == pattern(50, 1, 5, 6));
  }
  const Dataset back = read_cifar_batch(file);
  CHECK(back.labels == d.labels);
  CHECK(back.pixels == d.pixels);

  d.labels[1] = 11;
  CHECK(contains(error_of([&] { write_cifar_batch(file, d); }), "image 1: label 11 is above 9"));

  // A write that fails half-way leaves the file as it was, and no temporary beside it.
  struct FailingDisk : ctnn::hooks::Hooks {  // the write's error, as io::write_file_atomically raises it
    void file_written(std::uint64_t, bool) override {
      throw ctnn::io::CheckpointError("out.bin", "write failed: no space left (simulated)");
    }
  } failing;
  struct Installed {
    explicit Installed(ctnn::hooks::Hooks* h) { ctnn::hooks::installed() = h; }
    ~Installed() { ctnn::hooks::installed() = nullptr; }
  };
  d.labels[1] = 3;
  std::string msg;
  {
    const Installed installed(&failing);
    msg = error_of([&] { write_cifar_batch(file, d); });
  }
  CHECK(msg == "CIFAR-10: out.bin: write failed: no space left (simulated)");
  CHECK(read_cifar_batch(file).labels == std::vector<std::uint8_t>{4, 8});
  CHECK(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator()) == 1);
}

TEST_CASE("Reading the full-size layout: 10,000-record files split correctly") {
  // Large enough to catch an off-by-one in record offsets that a 3-record file might hide.
  TempDir tmp;
  const int n = 10000;
  std::vector<std::uint8_t> raw(static_cast<std::size_t>(n) * 3073);
  for (int r = 0; r < n; ++r) {
    raw[static_cast<std::size_t>(r) * 3073] = static_cast<std::uint8_t>(r % 10);
    for (int i = 0; i < 3072; ++i)
      raw[static_cast<std::size_t>(r) * 3073 + 1 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>((r + i) & 0xFF);
  }
  {
    std::ofstream out(tmp.path / "big.bin", std::ios::binary);
    out.write(reinterpret_cast<const char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
  }
  const Dataset d = read_cifar_batch(tmp.path / "big.bin");
  REQUIRE(d.size() == n);
  bool ok = true;
  for (int r = 0; r < n; r += 997) {
    ok = ok && d.label(r) == r % 10;
    for (int i = 0; i < 3072; i += 101) ok = ok && d.image(r)[i] == static_cast<std::uint8_t>((r + i) & 0xFF);
  }
  CHECK(ok);
  CHECK(d.label(n - 1) == 9);
  CHECK(d.image(n - 1)[3071] == static_cast<std::uint8_t>((n - 1 + 3071) & 0xFF));
}

TEST_CASE("parse_cifar_batch reads a batch in memory exactly as read_cifar_batch reads the file") {
  TempDir tmp;
  const fs::path file = tmp.path / "data_batch_1.bin";
  write_records(file, {{7, patterned(0)}, {0, patterned(1)}, {9, patterned(2)}});
  std::vector<std::uint8_t> bytes(3 * 3073);
  {
    std::ifstream in(file, std::ios::binary);
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  const Dataset from_file = read_cifar_batch(file);
  const Dataset in_memory = parse_cifar_batch(bytes, file.string());
  CHECK(in_memory.labels == from_file.labels);
  CHECK(in_memory.pixels == from_file.pixels);
  CHECK(in_memory.class_names == cifar10_class_names());
  CHECK(in_memory.description == from_file.description);
  CHECK(serialize_cifar_batch(in_memory) == bytes);

  // The same checks and messages as for files.
  CHECK(error_of([&] { parse_cifar_batch({}, "empty.bin"); }) ==
        "CIFAR-10: file 'empty.bin' is empty (expected records of 3073 bytes)");
  CHECK(contains(error_of([&] { parse_cifar_batch(std::span(bytes).first(3072), "short.bin"); }),
                 "'short.bin' is truncated or not a CIFAR-10 batch: 3072 bytes is not a multiple"));
  bytes[3073] = 10;
  const std::string label_error = error_of([&] { parse_cifar_batch(bytes, file.string()); });
  CHECK(contains(label_error, "record 1 (byte offset 3073): label byte 10 is above 9"));
  std::ofstream(file, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  CHECK(error_of([&] { read_cifar_batch(file); }) == label_error);
}

TEST_CASE("The synthetic source is labelled synthetic, reproducible and learnable") {
  const Dataset a = make_synthetic_cifar(1000, 42);
  CHECK(a.synthetic);
  CHECK(a.description.rfind("SYNTHETIC", 0) == 0);
  CHECK(contains(a.description, "not CIFAR-10"));
  REQUIRE(a.class_names.size() == 10);
  CHECK(a.class_names[3] == "synthetic_3");
  CHECK_NOTHROW(a.validate("synthetic"));
  REQUIRE(a.size() == 1000);

  const Dataset b = make_synthetic_cifar(1000, 42);
  CHECK(a.pixels == b.pixels);
  CHECK(a.labels == b.labels);
  const Dataset c = make_synthetic_cifar(1000, 43);
  CHECK(a.pixels != c.pixels);

  // Same data whatever the thread count.
  const int threads = ctnn::num_threads();
  ctnn::set_num_threads(1);
  const Dataset one = make_synthetic_cifar(300, 9);
  ctnn::set_num_threads(2);
  const Dataset two = make_synthetic_cifar(300, 9);
  ctnn::set_num_threads(threads);
  CHECK(one.pixels == two.pixels);
  CHECK(one.labels == two.labels);

  // Every class occurs, and the class is recoverable: a nearest-class-mean classifier on the
  // mean colour, fitted on the first half, labels the second half almost perfectly.
  std::array<int, 10> count{};
  for (int i = 0; i < a.size(); ++i) ++count[static_cast<std::size_t>(a.label(i))];
  for (int k = 0; k < 10; ++k) CHECK(count[static_cast<std::size_t>(k)] > 50);

  auto mean_colour = [&](int i) {
    std::array<double, 3> m{};
    for (int ch = 0; ch < 3; ++ch) {
      for (int p = 0; p < 1024; ++p) m[static_cast<std::size_t>(ch)] += a.image(i)[ch * 1024 + p];
      m[static_cast<std::size_t>(ch)] /= 1024.0;
    }
    return m;
  };
  std::array<std::array<double, 3>, 10> centre{};
  std::array<int, 10> fitted{};
  for (int i = 0; i < 500; ++i) {
    const auto m = mean_colour(i);
    for (int ch = 0; ch < 3; ++ch) centre[static_cast<std::size_t>(a.label(i))][static_cast<std::size_t>(ch)] += m[static_cast<std::size_t>(ch)];
    ++fitted[static_cast<std::size_t>(a.label(i))];
  }
  for (int k = 0; k < 10; ++k)
    for (int ch = 0; ch < 3; ++ch) centre[static_cast<std::size_t>(k)][static_cast<std::size_t>(ch)] /= std::max(1, fitted[static_cast<std::size_t>(k)]);
  int correct = 0;
  for (int i = 500; i < 1000; ++i) {
    const auto m = mean_colour(i);
    int best = 0;
    double best_d = 1e300;
    for (int k = 0; k < 10; ++k) {
      double dist = 0;
      for (int ch = 0; ch < 3; ++ch) {
        const double diff = m[static_cast<std::size_t>(ch)] - centre[static_cast<std::size_t>(k)][static_cast<std::size_t>(ch)];
        dist += diff * diff;
      }
      if (dist < best_d) best_d = dist, best = k;
    }
    correct += best == a.label(i);
  }
  CHECK(correct > 450);
}
