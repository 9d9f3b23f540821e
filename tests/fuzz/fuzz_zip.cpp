// libFuzzer target for the zip container reader and writer (include/ctnn/io/zip.hpp).
//
// Each input is an archive. It must either parse or give a CheckpointError naming it. When it
// parses, no two entries may overlap and every entry must be consistent: found by its name, its
// local header and data inside the file, stored size equal to size for STORED entries; read()
// must return exactly that range (or refuse a compressed entry), and its CRC check must fail
// exactly when the CRC-32 of the data differs from the central directory's. Every message must
// pass fuzz_common.hpp's check_message (the file's name first, no raw control characters,
// short). The STORED entries are then written again with ZipWriter, and that archive must read
// back with the same names, order and contents, valid CRCs and 64-byte aligned data, and write
// back byte for byte. Any other exception, a sanitizer report, a hang or an out-of-memory is a
// finding. Build and run: tests/fuzz/CMakeLists.txt.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ctnn/io/zip.hpp"
#include "fuzz_common.hpp"

namespace {

using namespace ctnn::io;
using ctnn::fuzz::fail;

struct Stored {
  std::string name;
  std::vector<std::uint8_t> data;
};

std::vector<std::uint8_t> write_archive(const std::vector<Stored>& entries) {
  std::vector<std::uint8_t> out;
  ZipWriter w([&](const std::uint8_t* p, std::size_t n) { out.insert(out.end(), p, p + n); }, "rewritten.zip");
  for (const Stored& e : entries) w.add(e.name, e.data);
  w.finish();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Bytes bytes(data, size);
  std::vector<Stored> stored;
  try {
    const ZipReader zip(bytes, "fuzz.zip");
    // Entries are disjoint (so reading them all costs at most the file's size).
    std::vector<std::pair<std::uint64_t, std::uint64_t>> regions;
    for (const ZipEntry& e : zip.entries()) regions.emplace_back(e.header_offset, e.data_offset + e.stored_size);
    std::sort(regions.begin(), regions.end());
    for (std::size_t i = 1; i < regions.size(); ++i)
      if (regions[i - 1].second > regions[i].first) fail("two entries overlap");
    for (std::size_t i = 0; i < zip.entries().size(); ++i) {
      const ZipEntry& e = zip.entries()[i];
      if (zip.find(e.name) != &e) fail("find() does not return the entry of that name", e.name);
      if (e.data_offset < e.header_offset + 30 + e.name.size() || e.data_offset > size ||
          e.stored_size > size - e.data_offset)
        fail("an entry's header or data lies outside the file", e.name);
      if (e.method == 0 && e.size != e.stored_size) fail("a STORED entry whose size differs from its stored size");
      if (e.method != 0) {
        try {
          zip.read(e, false);
          fail("a compressed entry was read");
        } catch (const CheckpointError& err) {
          ctnn::fuzz::check_message(err.what(), "fuzz.zip: ");
          if (std::string(err.what()).find("is compressed") == std::string::npos) fail("wrong message", err.what());
        }
        continue;
      }
      const Bytes got = zip.read(e, false);
      if (got.data() != data + e.data_offset || got.size() != e.size) fail("read() returns another range", e.name);
      const bool crc_ok = crc32(got) == e.crc32;
      try {
        zip.read(e, true);
        if (!crc_ok) fail("a CRC-32 mismatch was not reported", e.name);
      } catch (const CheckpointError& err) {
        ctnn::fuzz::check_message(err.what(), "fuzz.zip: ");
        if (crc_ok) fail("a correct CRC-32 was reported as corrupt", err.what());
      }
      stored.push_back({e.name, {got.begin(), got.end()}});
    }
  } catch (const CheckpointError& e) {
    ctnn::fuzz::check_message(e.what(), "fuzz.zip: ");
    return 0;
  }

  // The STORED entries through ctnn's writer and back.
  if (stored.size() > 0xfffe) return 0;  // more than the writer's non-ZIP64 archives hold
  const std::vector<std::uint8_t> again = write_archive(stored);
  const ZipReader back(again, "rewritten.zip");  // any error here is a finding: not caught
  if (back.entries().size() != stored.size()) fail("the rewritten archive has another number of entries");
  for (std::size_t i = 0; i < stored.size(); ++i) {
    const ZipEntry& e = back.entries()[i];
    if (e.name != stored[i].name) fail("the rewritten archive has another name or order", e.name);
    if (e.data_offset % ZipWriter::kAlignment != 0) fail("rewritten data not 64-byte aligned", e.name);
    const Bytes b = back.read(e, true);
    if (std::vector<std::uint8_t>(b.begin(), b.end()) != stored[i].data) fail("rewritten contents differ", e.name);
  }
  if (write_archive(stored) != again) fail("the writer is not deterministic");
  return 0;
}
