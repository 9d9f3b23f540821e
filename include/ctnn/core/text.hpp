// Text for messages: numbers in hex, and text taken from a file or the user made safe to quote.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

namespace ctnn {

// "0x" and the low `digits` hex digits of v, e.g. hex(0x1f, 2) == "0x1f".
inline std::string hex(std::uint64_t v, int digits) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s = "0x";
  for (int i = digits - 1; i >= 0; --i) s += kDigits[(v >> (4 * i)) & 0xf];
  return s;
}

// Text taken from a file (an entry name, a key, a record's contents) or a path, fit to quote in
// a message: control characters as \xNN (a NUL would end what() early and hide the rest), and
// at most `limit` bytes of it, then how long it really is.
inline std::string printable(std::string_view text, std::size_t limit = 200) {
  std::string out;
  const std::size_t shown = std::min(text.size(), limit);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += hex(c, 2).substr(2);
    } else {
      out += text[i];
    }
  }
  if (shown < text.size()) out += "... (" + std::to_string(text.size()) + " bytes)";
  return out;
}

// printable(text) in single quotes. Built by appending: "'" + s + "'" trips a false -Wrestrict
// in GCC 12.
inline std::string quoted(std::string_view text, std::size_t limit = 200) {
  std::string s(1, '\'');
  s += printable(text, limit);
  s += '\'';
  return s;
}

}  // namespace ctnn
