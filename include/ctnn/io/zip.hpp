// The zip container of PyTorch checkpoints: a reader for STORED archives held in memory, and a
// writer that produces what PyTorch itself reads back.
//
// Reader: sizes and offsets come from the central directory (PyTorch's writer leaves them zero in
// the local headers and appends data descriptors); ZIP64 end records and ZIP64 extra fields are
// followed when the 32-bit fields say so. Every offset and length is checked against the buffer
// before it is used, so a corrupt or truncated file gives a CheckpointError, never a read out of
// bounds; entries may not overlap, so reading all of them costs at most the file's size.
//
// Writer: STORED entries with the CRC-32 and sizes in both headers (no data descriptors), each
// entry's data starting at a multiple of 64 bytes, padded like PyTorch with an extra field of id
// "FB" filled with 'Z'. Archives stay below 4 GiB (no ZIP64).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ctnn/io/error.hpp"
#include "ctnn/io/file.hpp"  // ByteSink

namespace ctnn::io {

using Bytes = std::span<const std::uint8_t>;

// CRC-32 (IEEE 802.3, as zip and zlib use), eight bytes per step.
class Crc32 {
 public:
  void update(const std::uint8_t* p, std::size_t n) {
    const auto& t = tables();
    std::uint32_t c = ~crc_;
    for (; n >= 8; n -= 8, p += 8) {
      const std::uint32_t lo = c ^ (std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 |
                                    std::uint32_t{p[3]} << 24);
      c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^ t[3][p[4]] ^
          t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    }
    for (; n > 0; --n, ++p) c = t[0][(c ^ *p) & 0xff] ^ (c >> 8);
    crc_ = ~c;
  }
  std::uint32_t value() const { return crc_; }

 private:
  using Tables = std::array<std::array<std::uint32_t, 256>, 8>;
  static const Tables& tables() {
    static const Tables t = [] {
      Tables r{};
      for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        r[0][i] = c;
      }
      for (std::size_t k = 1; k < 8; ++k)
        for (std::size_t i = 0; i < 256; ++i) r[k][i] = r[0][r[k - 1][i] & 0xff] ^ (r[k - 1][i] >> 8);
      return r;
    }();
    return t;
  }
  std::uint32_t crc_ = 0;
};

inline std::uint32_t crc32(Bytes data) {
  Crc32 c;
  c.update(data.data(), data.size());
  return c.value();
}

namespace detail {

inline std::uint64_t load_le(const std::uint8_t* p, int n) {
  std::uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

inline void store_le(std::vector<std::uint8_t>& out, std::uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

}  // namespace detail

// Record signatures.
inline constexpr std::uint32_t kZipLocalSig = 0x04034b50, kZipCentralSig = 0x02014b50, kZipEndSig = 0x06054b50,
                               kZipEnd64LocatorSig = 0x07064b50, kZipEnd64Sig = 0x06064b50;

struct ZipEntry {
  std::string name;
  std::uint64_t header_offset = 0;  // of the local header
  std::uint64_t data_offset = 0;    // of the first data byte
  std::uint64_t size = 0;           // uncompressed
  std::uint64_t stored_size = 0;    // in the file (== size when stored)
  std::uint32_t crc32 = 0;          // as the central directory records it
  std::uint16_t method = 0;         // 0: stored; anything else cannot be read()
};

class ZipReader {
 public:
  // Parses the archive in `bytes` (which must outlive the reader); `file` names it in errors.
  ZipReader(Bytes bytes, std::string file) : bytes_(bytes), file_(std::move(file)) { parse(); }
  // Not from a temporary vector: it would be freed at the end of the statement, leaving the
  // reader's view dangling (ASan found a test doing so).
  ZipReader(std::vector<std::uint8_t>&&, std::string) = delete;

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &entries_[it->second];
  }

  // The bytes of an entry, optionally checked against its CRC-32.
  Bytes read(const ZipEntry& e, bool verify_crc = true) const {
    if (e.method != 0)
      fail("entry '" + printable(e.name) + "' is compressed (method " + std::to_string(e.method) +
           "); PyTorch checkpoints store their entries uncompressed");
    if (!fits(e.data_offset, e.size, bytes_.size())) fail("entry '" + printable(e.name) + "' lies outside the archive");
    const Bytes data = bytes_.subspan(static_cast<std::size_t>(e.data_offset), static_cast<std::size_t>(e.size));
    if (verify_crc) {
      const std::uint32_t actual = crc32(data);
      if (actual != e.crc32)
        fail("entry '" + printable(e.name) + "' is corrupt: its CRC-32 is " + hex(actual, 8) + ", the central directory says " +
             hex(e.crc32, 8));
    }
    return data;
  }

  const std::string& file() const { return file_; }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw CheckpointError(file_, what); }
  // True if [offset, offset + n) lies inside [0, limit).
  static bool fits(std::uint64_t offset, std::uint64_t n, std::uint64_t limit) {
    return offset <= limit && n <= limit - offset;
  }
  std::uint64_t u(std::uint64_t offset, int n) const { return detail::load_le(bytes_.data() + offset, n); }

  [[gnu::cold]] void parse() {
    const std::uint64_t size = bytes_.size();
    if (size < 22) fail("truncated or not a zip archive: " + std::to_string(size) + " bytes");

    // The end-of-central-directory record: the last 22 bytes, unless a comment follows it. Where
    // no record's comment ends at the file's end, the last record whose comment fits is taken, as
    // Python's zipfile and PyTorch's reader take it: bytes appended to an archive (padding by a
    // copy tool) do not make it unreadable.
    std::uint64_t end = size;  // "not found"
    const std::uint64_t lowest = size - 22 > 65535 ? size - 22 - 65535 : 0;
    for (const bool exact : {true, false}) {
      for (std::uint64_t p = size - 22; end == size; --p) {
        const std::uint64_t comment = u(p + 20, 2), after = size - p - 22;
        if (u(p, 4) == kZipEndSig && (exact ? comment == after : comment < after)) end = p;
        if (p == lowest) break;
      }
    }
    if (end == size) fail("truncated or not a zip archive: no end-of-central-directory record");

    std::uint64_t disk = u(end + 4, 2), cd_disk = u(end + 6, 2), count = u(end + 10, 2);
    std::uint64_t cd_size = u(end + 12, 4), cd_offset = u(end + 16, 4);
    if (count == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
      if (end < 20 || u(end - 20, 4) != kZipEnd64LocatorSig) fail("ZIP64 end-of-central-directory locator missing");
      const std::uint64_t end64 = u(end - 20 + 8, 8);
      if (!fits(end64, 56, end - 20) || u(end64, 4) != kZipEnd64Sig)
        fail("ZIP64 end-of-central-directory record missing or out of place");
      disk = u(end64 + 16, 4);
      cd_disk = u(end64 + 20, 4);
      count = u(end64 + 32, 8);
      cd_size = u(end64 + 40, 8);
      cd_offset = u(end64 + 48, 8);
    }
    if (disk != 0 || cd_disk != 0) fail("multi-part zip archives are not supported");
    if (!fits(cd_offset, cd_size, size))
      fail("truncated: the central directory (" + std::to_string(cd_size) + " bytes at offset " +
           std::to_string(cd_offset) + ") lies beyond the end of the file (" + std::to_string(size) + " bytes)");
    if (count > cd_size / 46)
      fail("corrupt: " + std::to_string(count) + " entries cannot fit in a central directory of " +
           std::to_string(cd_size) + " bytes");

    const std::uint64_t cd_end = cd_offset + cd_size;
    std::uint64_t p = cd_offset;
    entries_.reserve(static_cast<std::size_t>(count));
    for (std::uint64_t i = 0; i < count; ++i) {
      const std::string where = "central directory entry " + std::to_string(i);
      if (!fits(p, 46, cd_end) || u(p, 4) != kZipCentralSig) fail(where + ": bad signature or truncated");
      const std::uint64_t flags = u(p + 8, 2), method = u(p + 10, 2), name_len = u(p + 28, 2),
                          extra_len = u(p + 30, 2), comment_len = u(p + 32, 2);
      std::uint64_t compressed = u(p + 20, 4), uncompressed = u(p + 24, 4), offset = u(p + 42, 4);
      if (!fits(p + 46, name_len + extra_len + comment_len, cd_end)) fail(where + ": runs past the central directory");
      ZipEntry e;
      e.name.assign(reinterpret_cast<const char*>(bytes_.data() + p + 46), static_cast<std::size_t>(name_len));
      e.crc32 = static_cast<std::uint32_t>(u(p + 16, 4));
      const std::string what = "entry '" + printable(e.name) + "'";
      // ZIP64 extra field: 64-bit values for exactly those fields that hold 0xffffffff, in order.
      if (uncompressed == 0xffffffff || compressed == 0xffffffff || offset == 0xffffffff) {
        std::uint64_t q = p + 46 + name_len;
        const std::uint64_t q_end = q + extra_len;
        bool found = false;
        while (!found && fits(q, 4, q_end)) {
          const std::uint64_t id = u(q, 2), len = u(q + 2, 2);
          if (!fits(q + 4, len, q_end)) break;
          if (id == 1) {
            found = true;
            std::uint64_t r = q + 4;
            for (std::uint64_t* field : {&uncompressed, &compressed, &offset}) {
              if (*field != 0xffffffff) continue;
              if (!fits(r, 8, q + 4 + len)) fail(what + ": ZIP64 extra field too short");
              *field = u(r, 8);
              r += 8;
            }
          }
          q += 4 + len;
        }
        if (!found) fail(what + ": 32-bit size or offset is 0xffffffff but there is no ZIP64 extra field");
      }
      if (flags & 1) fail(what + " is encrypted");
      if (method == 0 && compressed != uncompressed)
        fail(what + ": stored size " + std::to_string(compressed) + " differs from its size " +
             std::to_string(uncompressed));
      // The local header: its own name and extra lengths give where the data starts.
      if (!fits(offset, 30, size) || u(offset, 4) != kZipLocalSig)
        fail(what + ": no local header at offset " + std::to_string(offset) + " (truncated or corrupt)");
      const std::uint64_t local_name = u(offset + 26, 2), local_extra = u(offset + 28, 2);
      if (!fits(offset + 30, local_name + local_extra, size))
        fail(what + ": local header runs past the end of the file");
      if (local_name != name_len || std::memcmp(bytes_.data() + offset + 30, e.name.data(), e.name.size()) != 0)
        fail(what + ": the local header names a different entry");
      e.header_offset = offset;
      e.data_offset = offset + 30 + local_name + local_extra;
      e.size = uncompressed;
      e.stored_size = compressed;
      e.method = static_cast<std::uint16_t>(method);
      if (!fits(e.data_offset, e.stored_size, size))
        fail(what + ": its " + std::to_string(e.stored_size) + " bytes at offset " + std::to_string(e.data_offset) +
             " run past the end of the file (" + std::to_string(size) + " bytes): truncated");
      if (!index_.emplace(e.name, entries_.size()).second) fail("duplicate " + what);
      entries_.push_back(std::move(e));
      p += 46 + name_len + extra_len + comment_len;
    }

    // No entry may lie inside another: each byte of the file belongs to at most one entry, so
    // reading (and checking the CRC of) every entry costs at most the file's size. Entries that
    // overlap could make that cost quadratic (k entries sharing one large region).
    std::vector<const ZipEntry*> by_offset;
    by_offset.reserve(entries_.size());
    for (const ZipEntry& e : entries_) by_offset.push_back(&e);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const ZipEntry* a, const ZipEntry* b) { return a->header_offset < b->header_offset; });
    for (std::size_t i = 1; i < by_offset.size(); ++i) {
      const ZipEntry &a = *by_offset[i - 1], &b = *by_offset[i];
      if (a.data_offset + a.stored_size > b.header_offset)
        fail("entries '" + printable(a.name) + "' (bytes " + std::to_string(a.header_offset) + " to " +
             std::to_string(a.data_offset + a.stored_size) + ") and '" + printable(b.name) + "' (from byte " +
             std::to_string(b.header_offset) + ") overlap: corrupt or crafted");
    }
  }

  Bytes bytes_;
  std::string file_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, std::size_t> index_;
};

// Writes an archive to a sink, entry by entry; finish() appends the central directory.
class ZipWriter {
 public:
  static constexpr std::uint64_t kAlignment = 64;

  ZipWriter(ByteSink sink, std::string file) : sink_(std::move(sink)), file_(std::move(file)) {}

  void add(const std::string& name, Bytes data) {
    if (finished_) throw CheckpointError(file_, "zip writer: add() after finish()");
    if (name.size() > 0xffff) throw CheckpointError(file_, "zip entry name too long: " + printable(name));
    Central c{name, offset_, static_cast<std::uint32_t>(crc32(data)), data.size()};
    // Pad the local header's extra field so that the data starts at a multiple of 64.
    const std::uint64_t bare = offset_ + 30 + name.size();
    std::uint64_t pad = 0;
    if (bare % kAlignment != 0) {
      pad = (kAlignment - (bare + 4) % kAlignment) % kAlignment;
      pad += 4;  // the extra field's own id and length
    }
    check_limit(offset_ + 30 + name.size() + pad + data.size());
    std::vector<std::uint8_t> h;
    h.reserve(30 + name.size() + pad);
    detail::store_le(h, kZipLocalSig, 4);
    common_fields(h, c, pad);
    h.insert(h.end(), name.begin(), name.end());
    if (pad > 0) {
      h.push_back('F');
      h.push_back('B');
      detail::store_le(h, pad - 4, 2);
      h.insert(h.end(), static_cast<std::size_t>(pad - 4), 'Z');
    }
    emit(h.data(), h.size());
    emit(data.data(), data.size());
    central_.push_back(std::move(c));
  }

  [[gnu::cold]] void finish() {
    if (finished_) return;
    if (central_.size() > 0xfffe) throw CheckpointError(file_, "too many zip entries for a non-ZIP64 archive");
    const std::uint64_t cd_offset = offset_;
    std::vector<std::uint8_t> d;
    for (const Central& c : central_) {
      d.clear();
      detail::store_le(d, kZipCentralSig, 4);
      detail::store_le(d, 20, 2);  // version made by: 2.0, MS-DOS attributes
      common_fields(d, c, 0);
      detail::store_le(d, 0, 2);  // comment length
      detail::store_le(d, 0, 2);  // disk number
      detail::store_le(d, 0, 2);  // internal attributes
      detail::store_le(d, 0, 4);  // external attributes
      detail::store_le(d, c.offset, 4);
      d.insert(d.end(), c.name.begin(), c.name.end());
      emit(d.data(), d.size());
    }
    const std::uint64_t cd_size = offset_ - cd_offset;
    check_limit(offset_ + 22);
    d.clear();
    detail::store_le(d, kZipEndSig, 4);
    detail::store_le(d, 0, 2);
    detail::store_le(d, 0, 2);
    detail::store_le(d, central_.size(), 2);
    detail::store_le(d, central_.size(), 2);
    detail::store_le(d, cd_size, 4);
    detail::store_le(d, cd_offset, 4);
    detail::store_le(d, 0, 2);
    emit(d.data(), d.size());
    finished_ = true;
  }

 private:
  struct Central {
    std::string name;
    std::uint64_t offset;
    std::uint32_t crc;
    std::uint64_t size;
  };

  // The fields a local header shares with a central-directory one: version needed through the
  // extra-field length.
  static void common_fields(std::vector<std::uint8_t>& h, const Central& c, std::uint64_t extra_len) {
    detail::store_le(h, 20, 2);    // version needed: 2.0
    detail::store_le(h, 0, 2);     // flags: no data descriptor
    detail::store_le(h, 0, 2);     // method: stored
    detail::store_le(h, 0, 2);     // time 00:00:00
    detail::store_le(h, 0x21, 2);  // date 1980-01-01 (fixed, so the output is reproducible)
    detail::store_le(h, c.crc, 4);
    detail::store_le(h, c.size, 4);
    detail::store_le(h, c.size, 4);
    detail::store_le(h, c.name.size(), 2);
    detail::store_le(h, extra_len, 2);
  }

  void check_limit(std::uint64_t end) const {
    if (end > 0xffffffffu)
      throw CheckpointError(file_, "the archive would exceed 4 GiB, which needs ZIP64; ctnn's writer does not produce it");
  }
  void emit(const std::uint8_t* p, std::size_t n) {
    if (n > 0) sink_(p, n);
    offset_ += n;
  }

  ByteSink sink_;
  std::string file_;
  std::uint64_t offset_ = 0;
  std::vector<Central> central_;
  bool finished_ = false;
};

}  // namespace ctnn::io
