// Reader (and writer) for CIFAR-10's official binary layout.
//
//   cifar-10-batches-bin/data_batch_1.bin .. data_batch_5.bin   training split, 50,000 images
//   cifar-10-batches-bin/test_batch.bin                         test split, 10,000 images
//   cifar-10-batches-bin/batches.meta.txt                       class names, one a line
//
// A batch file is a sequence of 3,073-byte records: one label byte (0-9), then the 32x32 image
// as 1,024 red, 1,024 green and 1,024 blue bytes, rows top to bottom. Each file is read with a
// single read into memory and then split into labels and pixels, so the whole data set loads in
// a fraction of a second. Every size and label is checked; problems raise DataError with the
// file, the record and what is wrong. parse_cifar_batch / serialize_cifar_batch do the same in
// memory (the file reader's decoding is theirs; tests/fuzz/fuzz_cifar.cpp fuzzes both).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "ctnn/core/text.hpp"
#include "ctnn/data/dataset.hpp"
#include "ctnn/io/file.hpp"

namespace ctnn::data {

enum class Split { train, test };

inline const char* to_string(Split s) { return s == Split::train ? "train" : "test"; }

// The names used when batches.meta.txt is absent (the official file lists exactly these).
inline const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                 "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

namespace detail {

inline std::string quoted(const std::filesystem::path& p) { return ctnn::quoted(p.string()); }

// Number of records in a batch of `bytes` bytes, after checking that it is not empty and holds a
// whole number of records. `quoted_name` names the file (or buffer) in the message.
inline std::size_t cifar_records_in(std::uint64_t bytes, const std::string& quoted_name) {
  if (bytes == 0)
    throw DataError("CIFAR-10: file " + quoted_name + " is empty (expected records of " +
                    std::to_string(kRecordBytes) + " bytes)");
  if (bytes % kRecordBytes != 0) {
    const auto whole = bytes / kRecordBytes;
    throw DataError("CIFAR-10: file " + quoted_name + " is truncated or not a CIFAR-10 batch: " +
                    std::to_string(bytes) + " bytes is not a multiple of the " +
                    std::to_string(kRecordBytes) + "-byte record (" + std::to_string(whole) +
                    " whole records, then " + std::to_string(bytes % kRecordBytes) +
                    " bytes of record " + std::to_string(whole) + ")");
  }
  return static_cast<std::size_t>(bytes / kRecordBytes);
}

// Number of records in `file`, after checking that it exists, is a regular file, is not empty
// and holds a whole number of records.
inline std::size_t cifar_record_count(const std::filesystem::path& file) {
  std::error_code ec;
  const auto status = std::filesystem::status(file, ec);
  if (ec && !io::missing(ec)) throw DataError("CIFAR-10: cannot look at " + quoted(file) + ": " + ec.message());
  if (!std::filesystem::exists(status))
    throw DataError("CIFAR-10: missing file " + quoted(file));
  if (!std::filesystem::is_regular_file(status))
    throw DataError("CIFAR-10: " + quoted(file) + " is not a regular file");
  const auto bytes = std::filesystem::file_size(file, ec);
  if (ec) throw DataError("CIFAR-10: cannot get the size of " + quoted(file) + ": " + ec.message());
  return cifar_records_in(bytes, quoted(file));
}

// Decodes `records` records that lie, as in the file, at image `first` of d.pixels: checks every
// label and stores it in d.labels[first + r], then compacts the pixels in place: record r's 3,072
// pixel bytes move from byte r * 3073 + 1 to r * 3072 of that region, a move towards the front
// that never overwrites a record not yet moved. So d.pixels must reach `records` bytes past the
// end of the last image it receives. The file reader and parse_cifar_batch share this code.
inline void decode_cifar_records(std::size_t records, const std::string& quoted_name, Dataset& d, std::size_t first) {
  std::uint8_t* base = d.pixels.data() + first * kImageBytes;
  for (std::size_t r = 0; r < records; ++r) {
    const std::uint8_t label = base[r * kRecordBytes];
    if (label >= kNumClasses)
      throw DataError("CIFAR-10: file " + quoted_name + ", record " + std::to_string(r) + " (byte offset " +
                      std::to_string(r * kRecordBytes) + "): label byte " + std::to_string(label) + " is above " +
                      std::to_string(kNumClasses - 1));
    d.labels[first + r] = label;
  }
  for (std::size_t r = 0; r < records; ++r)
    std::memmove(base + r * kImageBytes, base + r * kRecordBytes + 1, kImageBytes);
}

// Reads the `records` records of `file` (already checked by cifar_record_count) into images
// first .. first + records - 1 of `d`: the file is read in one piece straight into d.pixels at
// image `first` and decoded there (decode_cifar_records), so no second buffer the size of the
// file is needed.
inline void read_cifar_records(const std::filesystem::path& file, std::size_t records, Dataset& d, std::size_t first) {
  const std::size_t bytes = records * kRecordBytes;
  std::uint8_t* base = d.pixels.data() + first * kImageBytes;
  std::ifstream in(file, std::ios::binary);
  if (!in) throw DataError("CIFAR-10: cannot open " + quoted(file) + " for reading");
  in.read(reinterpret_cast<char*>(base), static_cast<std::streamsize>(bytes));
  const auto got = static_cast<std::size_t>(in.gcount());
  if (got != bytes)  // the file shrank between the size check and the read
    throw DataError("CIFAR-10: file " + quoted(file) + ": read " + std::to_string(got) + " of " +
                    std::to_string(bytes) + " bytes (file changed while reading?)");
  decode_cifar_records(records, quoted(file), d, first);
}

// Reads whole files into one Dataset (pixels and labels only).
inline void read_cifar_files(const std::vector<std::filesystem::path>& files, Dataset& d) {
  // Every file is checked before any is read, so a bad last file fails at once.
  std::vector<std::size_t> counts;
  std::size_t total = 0, largest = 0;
  for (const auto& f : files) {
    counts.push_back(cifar_record_count(f));
    total += counts.back();
    largest = std::max(largest, counts.back());
  }
  try {
    allocate_bytes(d.pixels, total * kImageBytes + largest);  // + slack for the in-place read
    d.labels.assign(total, 0);
  } catch (const std::bad_alloc&) {  // (a bare "std::bad_alloc" would name neither the files nor why)
    throw DataError("CIFAR-10: the " + std::to_string(total) + " records of " +
                    (files.size() == 1 ? quoted(files[0]) : std::to_string(files.size()) + " files from " + quoted(files[0])) +
                    " do not fit in memory (" + std::to_string(total * kRecordBytes) + " bytes): not CIFAR-10's batches");
  }
  std::size_t first = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    read_cifar_records(files[i], counts[i], d, first);
    first += counts[i];
  }
  d.pixels.resize(total * kImageBytes);
}

}  // namespace detail

inline constexpr std::uintmax_t kMaxClassNameBytes = 64 * 1024;

// Class names from a batches.meta.txt-style file: one name a line, blank lines and surrounding
// whitespace ignored. It must list exactly kNumClasses names.
inline std::vector<std::string> read_class_names(const std::filesystem::path& file) {
  std::error_code ec;
  const auto status = std::filesystem::status(file, ec);
  if (std::filesystem::is_directory(status))
    throw DataError("CIFAR-10: class-name file " + detail::quoted(file) + " is a directory");
  // A regular file of a few lines: a FIFO would block the reader forever, /dev/zero fill memory.
  if (std::filesystem::exists(status) && !std::filesystem::is_regular_file(status))
    throw DataError("CIFAR-10: class-name file " + detail::quoted(file) + " is not a regular file");
  if (const auto size = std::filesystem::file_size(file, ec); !ec && size > kMaxClassNameBytes)
    throw DataError("CIFAR-10: class-name file " + detail::quoted(file) + " is " + std::to_string(size) +
                    " bytes, too large for " + std::to_string(kNumClasses) + " class names");
  std::ifstream in(file);
  if (!in) throw DataError("CIFAR-10: cannot open class-name file " + detail::quoted(file));
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    const auto b = line.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) continue;
    const auto e = line.find_last_not_of(" \t\r\n");
    names.push_back(line.substr(b, e - b + 1));
  }
  if (names.size() != static_cast<std::size_t>(kNumClasses))
    throw DataError("CIFAR-10: class-name file " + detail::quoted(file) + " lists " +
                    std::to_string(names.size()) + " names, expected " + std::to_string(kNumClasses));
  return names;
}

// Reads one batch file (e.g. data_batch_1.bin). Class names are the standard ones, since a
// lone file carries none.
inline Dataset read_cifar_batch(const std::filesystem::path& file) {
  Dataset d;
  detail::read_cifar_files({file}, d);
  d.class_names = cifar10_class_names();
  d.description = "CIFAR-10 batch file " + file.string() + " (" + std::to_string(d.size()) + " images)";
  return d;
}

// Parses one batch file already in memory (`bytes`: its whole contents), with the checks and
// messages of read_cifar_batch; `name` stands for the file in them.
inline Dataset parse_cifar_batch(std::span<const std::uint8_t> bytes, const std::string& name) {
  const std::string quoted_name = detail::quoted(name);
  const std::size_t records = detail::cifar_records_in(bytes.size(), quoted_name);
  Dataset d;
  detail::allocate_bytes(d.pixels, bytes.size());  // records * kImageBytes + `records` bytes of slack
  std::memcpy(d.pixels.data(), bytes.data(), bytes.size());
  d.labels.assign(records, 0);
  detail::decode_cifar_records(records, quoted_name, d, 0);
  d.pixels.resize(records * kImageBytes);
  d.class_names = cifar10_class_names();
  d.description = "CIFAR-10 batch file " + name + " (" + std::to_string(d.size()) + " images)";
  return d;
}

// The cifar-10-batches-bin directory given either that directory or the one holding it (where
// the official archive extracts to).
inline std::filesystem::path cifar10_batches_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  const bool exists = std::filesystem::exists(dir, ec);
  if (ec && !io::missing(ec))
    throw DataError("CIFAR-10: cannot look at the data directory " + detail::quoted(dir) + ": " + ec.message());
  if (!exists)
    throw DataError("CIFAR-10: data directory " + detail::quoted(dir) +
                    " does not exist (expected cifar-10-batches-bin/ with data_batch_1.bin .. "
                    "data_batch_5.bin and test_batch.bin)");
  if (!std::filesystem::is_directory(dir, ec))
    throw DataError("CIFAR-10: data path " + detail::quoted(dir) + " is not a directory");
  const auto nested = dir / "cifar-10-batches-bin";
  if (std::filesystem::is_directory(nested, ec)) return nested;
  return dir;
}

// The batch files of a split, in the order their records are concatenated.
inline std::vector<std::filesystem::path> cifar10_files(const std::filesystem::path& batches_dir, Split split) {
  if (split == Split::test) return {batches_dir / "test_batch.bin"};
  std::vector<std::filesystem::path> files;
  for (int i = 1; i <= 5; ++i) files.push_back(batches_dir / ("data_batch_" + std::to_string(i) + ".bin"));
  return files;
}

// A split of CIFAR-10: train = data_batch_1..5 in that order (50,000 images), test =
// test_batch (10,000). `dir` is cifar-10-batches-bin or its parent. Class names come from
// batches.meta.txt when it is present, otherwise the standard names are used.
inline Dataset load_cifar10(const std::filesystem::path& dir, Split split) {
  const auto batches_dir = cifar10_batches_dir(dir);
  Dataset d;
  detail::read_cifar_files(cifar10_files(batches_dir, split), d);

  const auto meta = batches_dir / "batches.meta.txt";
  std::error_code ec;
  d.class_names = std::filesystem::exists(meta, ec) ? read_class_names(meta) : cifar10_class_names();
  d.description = std::string("CIFAR-10 ") + to_string(split) + " (" + std::to_string(d.size()) +
                  " images) from " + batches_dir.string();
  return d;
}

// The bytes of `d` as one CIFAR-10 batch file; `what` names the data in errors.
inline std::vector<std::uint8_t> serialize_cifar_batch(const Dataset& d, const std::string& what = "CIFAR-10: data") {
  d.validate(what);
  std::vector<std::uint8_t> raw(static_cast<std::size_t>(d.size()) * kRecordBytes);
  for (int i = 0; i < d.size(); ++i) {
    std::uint8_t* rec = raw.data() + static_cast<std::size_t>(i) * kRecordBytes;
    rec[0] = d.labels[static_cast<std::size_t>(i)];
    std::memcpy(rec + 1, d.image(i), kImageBytes);
  }
  return raw;
}

// Writes `d` as one CIFAR-10 batch file (for tests, and to save synthetic data in the format
// every CIFAR tool reads).
inline void write_cifar_batch(const std::filesystem::path& file, const Dataset& d) {
  const std::vector<std::uint8_t> raw = serialize_cifar_batch(d, "CIFAR-10: data to write to " + detail::quoted(file));
  try {  // all or nothing: a failed write leaves an existing file as it was
    io::write_file_atomically(file, [&](const io::ByteSink& sink) { sink(raw.data(), raw.size()); });
  } catch (const io::CheckpointError& e) {
    throw DataError(std::string("CIFAR-10: ") + e.what());
  }
}

}  // namespace ctnn::data
