// What the fuzz targets share: how an invariant fails, the checks every error message must pass,
// and a memfd standing for a file.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace ctnn::fuzz {

// Reports a broken invariant and aborts, which libFuzzer records as a crash with its input.
[[noreturn]] inline void fail(const char* what, std::string_view detail = "") {
  std::fprintf(stderr, "%s: invariant violated: %s\n%.*s\n", program_invocation_short_name, what,
               static_cast<int>(detail.size()), detail.data());
  std::abort();
}

// An error message must start with `prefix` (the file's name), be one line (several for
// `multiline` ones, such as a state_dict mismatch's list), hold no other control character (text
// from the file is quoted with ctnn::io::printable) and stay short, whatever the file holds.
inline void check_message(std::string_view message, std::string_view prefix, bool multiline = false) {
  if (message.substr(0, prefix.size()) != prefix) fail("the message does not start with the file's name", message);
  for (const char c : message) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && !(multiline && c == '\n')) || u == 0x7f) fail("a control character in the message", message);
  }
  if (message.size() > prefix.size() + (multiline ? 16384 : 2048)) fail("a message out of proportion", message);
}

// A memfd standing for a file: its /proc path is a regular file for every file API, without
// disk I/O and without anything left behind.
struct MemFile {
  int fd = -1;
  std::string path;
  MemFile() {
    fd = memfd_create("fuzz_input", 0);
    if (fd < 0) fail("memfd_create failed");
    path = "/proc/self/fd/" + std::to_string(fd);
  }
  void assign(const std::uint8_t* data, std::size_t size) {
    if (ftruncate(fd, 0) != 0) fail("ftruncate failed");
    for (std::size_t done = 0; done < size;) {
      const ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
      if (n <= 0) fail("pwrite failed");
      done += static_cast<std::size_t>(n);
    }
  }
};

}  // namespace ctnn::fuzz
