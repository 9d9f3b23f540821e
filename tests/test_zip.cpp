// The zip container reader on its own (include/ctnn/io/zip.hpp): what the fuzzer
// (tests/fuzz/fuzz_zip.cpp) found or checks, as fixed inputs. Checkpoint-level zip handling
// (PyTorch's layouts, truncation, CRC errors) is test_checkpoint's.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "ctnn/io/zip.hpp"

using namespace ctnn::io;
using Blob = std::vector<std::uint8_t>;

namespace {

struct Entry {
  std::string name;
  std::uint64_t offset;  // of its local header
  Blob data;             // as the central directory describes it
};

// An archive of the raw bytes `body` followed by a central directory listing `entries`, whose
// local headers the caller placed in `body`.
Blob with_directory(Blob body, const std::vector<Entry>& entries) {
  auto le = [&](std::uint64_t v, int n) { detail::store_le(body, v, n); };
  const std::uint64_t cd_offset = body.size();
  for (const Entry& e : entries) {
    le(kZipCentralSig, 4); le(20, 2); le(20, 2); le(0, 2); le(0, 2); le(0, 2); le(0x21, 2);
    le(crc32(e.data), 4); le(e.data.size(), 4); le(e.data.size(), 4); le(e.name.size(), 2);
    le(0, 2); le(0, 2); le(0, 2); le(0, 2); le(0, 4); le(e.offset, 4);
    body.insert(body.end(), e.name.begin(), e.name.end());
  }
  const std::uint64_t cd_size = body.size() - cd_offset;
  le(kZipEndSig, 4); le(0, 2); le(0, 2); le(entries.size(), 2); le(entries.size(), 2);
  le(cd_size, 4); le(cd_offset, 4); le(0, 2);
  return body;
}

// A local header (no extra field) and its data, appended to `out`.
void local(Blob& out, const std::string& name, const Blob& data) {
  auto le = [&](std::uint64_t v, int n) { detail::store_le(out, v, n); };
  le(kZipLocalSig, 4); le(20, 2); le(0, 2); le(0, 2); le(0, 2); le(0x21, 2);
  le(crc32(data), 4); le(data.size(), 4); le(data.size(), 4); le(name.size(), 2); le(0, 2);
  out.insert(out.end(), name.begin(), name.end());
  out.insert(out.end(), data.begin(), data.end());
}

std::string error_of(const Blob& archive) {
  try {
    ZipReader zip(archive, "x.zip");
    for (const ZipEntry& e : zip.entries()) zip.read(e);
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST_CASE("Zip entries may not overlap: reading every entry costs at most the file's size") {
  // Review finding, while fuzzing: the reader accepted entries whose data contained other
  // entries (valid headers, valid CRCs). k such nested entries in a file of n bytes made reading
  // and CRC-checking them all cost k x n: a crafted 1 MB archive of 13,107 nested entries took
  // 1.8 s, a 4 MB one 36 s, and a checkpoint whose pickle names every entry as a storage reads
  // them all. Entries must now be disjoint, as every zip writer makes them.
  Blob b_record;
  local(b_record, "b", {'h', 'e', 'l', 'l', 'o'});  // entry b: its local header and data
  Blob body;
  local(body, "a", b_record);  // entry a's data is entry b
  const std::uint64_t b_offset = 30 + 1;
  CHECK(error_of(with_directory(body, {{"a", 0, b_record}, {"b", b_offset, {'h', 'e', 'l', 'l', 'o'}}})) ==
        "x.zip: entries 'a' (bytes 0 to 67) and 'b' (from byte 31) overlap: corrupt or crafted");
  // In the central directory's other order, the same.
  CHECK(error_of(with_directory(body, {{"b", b_offset, {'h', 'e', 'l', 'l', 'o'}}, {"a", 0, b_record}})) ==
        "x.zip: entries 'a' (bytes 0 to 67) and 'b' (from byte 31) overlap: corrupt or crafted");

  // Either entry alone is a valid archive; so are both, side by side.
  CHECK(error_of(with_directory(body, {{"a", 0, b_record}})) == "<no error>");
  CHECK(error_of(with_directory(body, {{"b", b_offset, {'h', 'e', 'l', 'l', 'o'}}})) == "<no error>");
  Blob side_by_side;
  local(side_by_side, "a", {'x'});
  local(side_by_side, "b", {'y', 'z'});
  // The reader keeps a view of the bytes, which must outlive it. This test once passed a
  // temporary (ASan: heap-use-after-free in read()); ZipReader now refuses one at compile time.
  static_assert(!std::is_constructible_v<ZipReader, Blob&&, std::string>);
  static_assert(std::is_constructible_v<ZipReader, const Blob&, std::string>);
  const Blob ok_archive = with_directory(side_by_side, {{"a", 0, {'x'}}, {"b", 32, {'y', 'z'}}});
  const ZipReader ok(ok_archive, "ok.zip");
  REQUIRE(ok.entries().size() == 2);
  CHECK(ok.read(ok.entries()[1]).size() == 2);
}

TEST_CASE("Text from the file is quoted printably in messages: a NUL in an entry name no longer cuts the message short") {
  // Found by fuzz_zip (crash-825c351723d1a3c0327a8324eeb1b6859db2320b, after 6,337 runs): an entry
  // whose name is one NUL byte and whose method is 0x4246. The message was
  // "x.zip: entry '\0' is compressed ...", so what() (a C string) ended at "x.zip: entry '".
  // Names, keys and record contents in messages are now passed through printable().
  const Blob crash = {
    0x50, 0x4b, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0x86, 0xa6,
    0x10, 0x36, 0x05, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x01, 0x00, 0x21, 0x00, 0x00, 0x00,
    0x00, 0x8a, 0x00, 0x5a, 0x5a, 0x5a, 0x5a, 0x50, 0x4b, 0x46, 0x06, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
    0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
    0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x50, 0x4b, 0x01, 0x02, 0x14, 0x00, 0x14, 0x3f, 0x00, 0x00, 0x46,
    0x42, 0x00, 0x00, 0x21, 0x00, 0x86, 0xa6, 0x10, 0x35, 0x05, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00,
    0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x25, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x61, 0x50, 0x4b, 0x05, 0x06, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01,
    0x00, 0x2f, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0x00, 0x00, 0x00,
  };
  CHECK(error_of(crash) ==
        "x.zip: entry '\\x00' is compressed (method 16966); PyTorch checkpoints store their entries uncompressed");

  CHECK(printable("features.0.weight") == "features.0.weight");
  CHECK(printable(std::string("a\0b\n\x7f\xc3\xa9", 7)) == "a\\x00b\\x0a\\x7f\xc3\xa9");  // UTF-8 kept
  CHECK(printable(std::string(300, 'k')) == std::string(200, 'k') + "... (300 bytes)");
}

TEST_CASE("Bytes appended after the end record leave the archive readable, as Python's zipfile reads it") {
  Blob body;
  local(body, "a", {1, 2, 3});
  const Blob archive = with_directory(body, {{"a", 0, {1, 2, 3}}});
  CHECK(error_of(archive) == "<no error>");
  Blob padded = archive;
  padded.insert(padded.end(), 512, 0);  // review finding: "no end-of-central-directory record"
  CHECK(error_of(padded) == "<no error>");
  ZipReader zip(padded, "x.zip");
  REQUIRE(zip.entries().size() == 1);
  const Bytes a = zip.read(zip.entries()[0]);
  CHECK(Blob(a.begin(), a.end()) == Blob{1, 2, 3});
  // An end record whose comment would run past the file's end is still no end record.
  Blob cut = archive;
  cut[cut.size() - 2] = 9;  // a comment of 9 bytes, none there
  CHECK(error_of(cut) == "x.zip: truncated or not a zip archive: no end-of-central-directory record");
}
