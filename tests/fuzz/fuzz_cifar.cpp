// libFuzzer target for the CIFAR-10 binary batch reader (include/ctnn/data/cifar.hpp).
//
// Each input is a whole batch file. It is parsed in memory (parse_cifar_batch) and, through a
// memfd (no disk I/O, nothing left behind), by the file reader (read_cifar_batch), and both must
// agree with an independent oracle of what a valid batch is:
//   - valid (non-empty, a multiple of 3,073 bytes, every label byte below 10): a Dataset of
//     size / 3073 images that passes validate(), whose labels and pixels are the file's bytes, and
//     that serialize_cifar_batch writes back byte for byte;
//   - anything else: a DataError naming the file and the problem the oracle expects
//     (empty, not a multiple of the record size, or the first bad label and its record).
// The two readers must give the same Dataset or the same message. Any other exception, a
// sanitizer report, a hang or an out-of-memory is a finding. Build and run: tests/fuzz/CMakeLists.txt.
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "ctnn/data/cifar.hpp"
#include "fuzz_common.hpp"

namespace {

using namespace ctnn::data;
using ctnn::fuzz::fail;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

struct Outcome {
  bool ok = false;
  Dataset d;
  std::string error;
};

template <class F>
Outcome run(F&& f) {
  Outcome o;
  try {
    o.d = f();
    o.ok = true;
  } catch (const DataError& e) {
    o.error = e.what();
  }
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static ctnn::fuzz::MemFile file;
  file.assign(data, size);
  const std::span<const std::uint8_t> bytes(data, size);

  // The oracle: what the reader must decide, computed directly from the format's definition.
  std::string expected;
  if (size == 0) {
    expected = "is empty";
  } else if (size % kRecordBytes != 0) {
    expected = "is truncated or not a CIFAR-10 batch: " + std::to_string(size) + " bytes is not a multiple";
  } else {
    for (std::size_t r = 0; r < size / kRecordBytes && expected.empty(); ++r)
      if (data[r * kRecordBytes] >= kNumClasses) {
        expected = ", record " + std::to_string(r) + " (byte offset " + std::to_string(r * kRecordBytes) +
                   "): label byte " + std::to_string(data[r * kRecordBytes]) + " is above 9";
      }
  }

  const Outcome memory = run([&] { return parse_cifar_batch(bytes, file.path); });
  const Outcome disk = run([&] { return read_cifar_batch(file.path); });

  for (const Outcome* o : {&memory, &disk}) {
    if (o->ok != expected.empty()) fail(o->ok ? "an invalid batch was accepted" : "a valid batch was refused", o->error);
    if (!o->ok) {
      ctnn::fuzz::check_message(o->error, "CIFAR-10: file '" + file.path + "'");
      if (!contains(o->error, expected)) fail("the message does not say what is wrong", o->error + "\nexpected: " + expected);
      continue;
    }
    const Dataset& d = o->d;
    const std::size_t n = size / kRecordBytes;
    if (static_cast<std::size_t>(d.size()) != n || d.pixels.size() != n * kImageBytes)
      fail("sizes disagree with the file's length");
    d.validate("fuzz_cifar");  // throws DataError (not caught: a finding) if inconsistent
    if (d.class_names != cifar10_class_names() || d.synthetic) fail("wrong class names or synthetic flag");
    for (std::size_t r = 0; r < n; ++r) {
      if (d.labels[r] != data[r * kRecordBytes]) fail("a label differs from its byte");
      if (std::memcmp(d.image(static_cast<int>(r)), data + r * kRecordBytes + 1, kImageBytes) != 0)
        fail("an image differs from its bytes");
    }
    if (serialize_cifar_batch(d) != std::vector<std::uint8_t>(data, data + size))
      fail("serialize_cifar_batch does not give the file back");
  }
  if (memory.ok && (memory.d.labels != disk.d.labels || memory.d.pixels != disk.d.pixels))
    fail("parse_cifar_batch and read_cifar_batch disagree");
  if (!memory.ok && memory.error != disk.error)
    fail("parse_cifar_batch and read_cifar_batch give different messages", memory.error + "\n" + disk.error);
  return 0;
}
