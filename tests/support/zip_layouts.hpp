// Zip archives laid out as PyTorch's own writer lays them out, for tests and the fuzzers' seed
// corpus: ctnn's writer never produces data descriptors or ZIP64 records, so the reader's paths
// for them are exercised with files built here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ctnn/io/zip.hpp"

namespace ctnn::test {

struct Record {
  std::string name;
  std::vector<std::uint8_t> data;
};

// The records of an archive, in order.
inline std::vector<Record> records_of(const std::vector<std::uint8_t>& file) {
  const io::ZipReader zip(file, "in");
  std::vector<Record> out;
  for (const auto& e : zip.entries()) {
    const io::Bytes b = zip.read(e);
    out.push_back({e.name, {b.begin(), b.end()}});
  }
  return out;
}

// A zip laid out the way PyTorch's writer (miniz) does it: flag bit 3 with zero CRC and sizes in
// the local header and a data descriptor after the data, 64-byte alignment by an "FB" extra
// field, and ZIP64 end records before the classic one. With `force_zip64` the 32-bit fields of
// the central directory and end record hold 0xffffffff (as for a file beyond 4 GiB), so only
// the ZIP64 values are right. `comment` follows the end record.
inline std::vector<std::uint8_t> pytorch_style_zip(const std::vector<Record>& records, bool force_zip64,
                                            const std::string& comment = "") {
  std::vector<std::uint8_t> out;
  auto le = [&](std::uint64_t v, int n) { io::detail::store_le(out, v, n); };
  auto bytes = [&](const std::string& s) { out.insert(out.end(), s.begin(), s.end()); };
  struct Central {
    std::string name;
    std::uint64_t offset, size;
    std::uint32_t crc;
  };
  std::vector<Central> central;
  for (const Record& r : records) {
    const std::uint64_t offset = out.size();
    const std::uint64_t pad = (64 - (offset + 30 + r.name.size() + 4) % 64) % 64;
    le(0x04034b50, 4); le(45, 2); le(8, 2); le(0, 2); le(0, 2); le(0x21, 2); le(0, 4); le(0, 4); le(0, 4);
    le(r.name.size(), 2); le(4 + pad, 2);
    bytes(r.name);
    bytes("FB"); le(pad, 2); bytes(std::string(pad, 'Z'));
    out.insert(out.end(), r.data.begin(), r.data.end());
    const std::uint32_t crc = io::crc32(r.data);
    le(0x08074b50, 4); le(crc, 4); le(r.data.size(), 4); le(r.data.size(), 4);
    central.push_back({r.name, offset, r.data.size(), crc});
  }
  const std::uint64_t cd_offset = out.size();
  for (const Central& c : central) {
    const std::uint64_t wide = force_zip64 ? 0xffffffff : 0;
    le(0x02014b50, 4); le(45, 2); le(45, 2); le(8, 2); le(0, 2); le(0, 2); le(0x21, 2); le(c.crc, 4);
    le(wide ? wide : c.size, 4); le(wide ? wide : c.size, 4); le(c.name.size(), 2); le(force_zip64 ? 28 : 0, 2);
    le(0, 2); le(0, 2); le(0, 2); le(0, 4); le(wide ? wide : c.offset, 4);
    bytes(c.name);
    if (force_zip64) {
      le(1, 2); le(24, 2); le(c.size, 8); le(c.size, 8); le(c.offset, 8);
    }
  }
  const std::uint64_t cd_size = out.size() - cd_offset, end64 = out.size();
  le(0x06064b50, 4); le(44, 8); le(45, 2); le(45, 2); le(0, 4); le(0, 4);
  le(central.size(), 8); le(central.size(), 8); le(cd_size, 8); le(cd_offset, 8);
  le(0x07064b50, 4); le(0, 4); le(end64, 8); le(1, 4);
  le(0x06054b50, 4); le(0, 2); le(0, 2);
  le(force_zip64 ? 0xffff : central.size(), 2); le(force_zip64 ? 0xffff : central.size(), 2);
  le(force_zip64 ? 0xffffffff : cd_size, 4); le(force_zip64 ? 0xffffffff : cd_offset, 4);
  le(comment.size(), 2);
  bytes(comment);
  return out;
}

}  // namespace ctnn::test
