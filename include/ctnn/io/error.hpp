// The one exception type of ctnn's checkpoint code.
#pragma once

#include <algorithm>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ctnn::io {

// Anything wrong with a checkpoint file or with what it holds: the message starts with the
// file's name (or the name given to an in-memory buffer) and says what is wrong.
class CheckpointError : public std::runtime_error {
 public:
  CheckpointError(const std::string& file, const std::string& what)
      : std::runtime_error(file + ": " + what), file_(file) {}
  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

// Text taken from a file (an entry name, a key, a record's contents), fit to quote in a message:
// control characters as \xNN (a NUL would end what() early and hide the rest), and at most
// `limit` bytes of it, then how long it really is.
inline std::string printable(std::string_view text, std::size_t limit = 200) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  const std::size_t shown = std::min(text.size(), limit);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 15];
    } else {
      out += text[i];
    }
  }
  if (shown < text.size()) out += "... (" + std::to_string(text.size()) + " bytes)";
  return out;
}

}  // namespace ctnn::io
