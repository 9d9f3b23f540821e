// Whole-file reads and atomic writes (POSIX).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <new>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "ctnn/core/hooks.hpp"
#include "ctnn/io/error.hpp"

namespace ctnn::io {

// Whether a std::filesystem error says the path is not there (rather than, say, a permission).
inline bool missing(const std::error_code& ec) {
  return ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory;
}

// The file open for reading, or a CheckpointError that names it and says what is wrong.
[[gnu::cold]] inline int open_for_reading(const std::filesystem::path& path) {
  const std::string name = path.string();
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  // (a folder on the way that this user may not enter is not a missing file)
  if (ec && !missing(ec)) throw CheckpointError(name, "cannot look at it: " + ec.message());
  if (!std::filesystem::exists(status)) throw CheckpointError(name, "no such file");
  if (!std::filesystem::is_regular_file(status)) throw CheckpointError(name, "not a regular file");
  const int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw CheckpointError(name, std::string("cannot open: ") + std::strerror(errno));
  return fd;
}

// Throws what read_file would for a file that is missing or cannot be opened, without reading
// it: for programs that check their inputs before slower work (ctnn-eval, before the data set).
[[gnu::cold]] inline void require_readable(const std::filesystem::path& path) { ::close(open_for_reading(path)); }

namespace detail {
// A buffer for a file of `size` bytes, or a CheckpointError that names the file: a bare
// "std::bad_alloc" would say neither which file nor why.
[[gnu::cold]] inline std::vector<std::uint8_t> file_buffer(const std::string& name, std::uint64_t size) {
  try {
    if (size > std::vector<std::uint8_t>().max_size()) throw std::bad_alloc();
    return std::vector<std::uint8_t>(static_cast<std::size_t>(size));
  } catch (const std::bad_alloc&) {
    throw CheckpointError(name, "is " + std::to_string(size) + " bytes: too large to read into memory");
  }
}
}  // namespace detail

// The whole file, in one read.
[[gnu::cold]] inline std::vector<std::uint8_t> read_file(const std::filesystem::path& path) {
  const std::string name = path.string();
  const int fd = open_for_reading(path);
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st{};
  if (::fstat(fd, &st) != 0) throw CheckpointError(name, std::string("cannot stat: ") + std::strerror(errno));
  std::vector<std::uint8_t> bytes = detail::file_buffer(name, static_cast<std::uint64_t>(st.st_size));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw CheckpointError(name, std::string("read error: ") + std::strerror(errno));
    if (n == 0) throw CheckpointError(name, "the file shrank while it was being read");
    done += static_cast<std::size_t>(n);
  }
  return bytes;
}

// write_file_atomically's temporary files are named `.<target>.tmp-<pid>-<counter>-<random>`.
inline constexpr std::string_view kTempTag = ".tmp-";

namespace detail {
// The temporary files this process is writing right now (a restarted container can give a new
// process the id of the one that was killed, so the id alone does not tell ours from theirs).
struct LiveTemps {
  std::mutex mutex;
  std::set<std::string> names;
  bool contains(const std::string& name) {
    std::lock_guard lock(mutex);
    return names.count(name) > 0;
  }
};
inline LiveTemps& live_temps() {
  static LiveTemps t;
  return t;
}
struct LiveTemp {
  std::string name;
  explicit LiveTemp(std::string n) : name(std::move(n)) {
    std::lock_guard lock(live_temps().mutex);
    live_temps().names.insert(name);
  }
  ~LiveTemp() {
    std::lock_guard lock(live_temps().mutex);
    live_temps().names.erase(name);
  }
  LiveTemp(const LiveTemp&) = delete;
  LiveTemp& operator=(const LiveTemp&) = delete;
};
}  // namespace detail

// Receives the bytes of a file being written, in order.
using ByteSink = std::function<void(const std::uint8_t*, std::size_t)>;

// Writes `path` so that it is either left as it was or replaced by the complete new contents:
// `produce` streams the bytes into a new file in the same directory, which is flushed to disk
// and then renamed over `path`. If anything fails (including `produce` throwing), the
// temporary file is removed and `path` is untouched.
[[gnu::cold]] inline void write_file_atomically(const std::filesystem::path& path, const std::function<void(const ByteSink&)>& produce) {
  const std::string name = path.string();
  if (path.filename().empty()) throw CheckpointError(name, "cannot write: not a file name");
  const std::filesystem::path dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw CheckpointError(name, "cannot write: directory '" + dir.string() + "' does not exist");

  hooks::Hooks* const hook = hooks::installed();  // crash tests' kill points (core/hooks.hpp)
  if (hook) hook->file_started();
  std::uint64_t bytes_written = 0;

  // A fresh name next to the target: dot-prefixed, with the process id and a random tag.
  static std::atomic<std::uint64_t> counter{0};
  std::random_device rd;
  std::string temp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    // Built by appending: `"." + string` trips a false -Wrestrict in GCC 12.
    std::string leaf(1, '.');
    // (at most 200 bytes of the target's name: a name near the 255-byte limit stays writable)
    leaf += path.filename().string().substr(0, 200);
    leaf += kTempTag;
    leaf += std::to_string(::getpid());
    leaf += '-';
    leaf += std::to_string(counter++);
    leaf += '-';
    leaf += std::to_string(rd());
    temp = (dir / leaf).string();
    fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) throw CheckpointError(name, std::string("cannot create a temporary file: ") + std::strerror(errno));
  const detail::LiveTemp live(std::filesystem::path(temp).filename().string());
  // A file replaced keeps its permissions (a private checkpoint must not become world-readable);
  // a new one gets 0666 less the umask, as any new file.
  struct stat old_file;
  if (::stat(name.c_str(), &old_file) == 0 && S_ISREG(old_file.st_mode)) ::fchmod(fd, old_file.st_mode & 07777);

  // Removes the temporary file and reports `what` (with errno's reason, if any).
  auto abandon = [&](const std::string& what) {
    const int saved = errno;
    if (fd >= 0) ::close(fd);
    fd = -1;
    ::unlink(temp.c_str());
    throw CheckpointError(name, what + (saved ? std::string(": ") + std::strerror(saved) : std::string()));
  };
  const ByteSink sink = [&](const std::uint8_t* p, std::size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) abandon("write failed");
      p += w;
      n -= static_cast<std::size_t>(w);
      bytes_written += static_cast<std::uint64_t>(w);
    }
    if (hook) hook->file_written(bytes_written, false);
  };
  try {
    produce(sink);
    if (hook) hook->file_written(bytes_written, true);
  } catch (...) {
    if (fd >= 0) {  // not already cleaned up by abandon()
      ::close(fd);
      ::unlink(temp.c_str());
    }
    throw;
  }
  errno = 0;
  if (::fsync(fd) != 0) abandon("cannot flush to disk");
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) abandon("cannot close");
  if (hook) hook->file_before_rename();
  if (::rename(temp.c_str(), name.c_str()) != 0) abandon("cannot rename the temporary file into place");
  // Make the rename itself durable; a failure here leaves a complete file in place.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// The temporary files that writes to `dir/<prefix>...` left behind when their process died
// before the rename (SIGKILL, a crash, power loss): named as write_file_atomically names them,
// by a process id that no longer exists, or by this process's own id but not being written by
// it (a restarted container often reuses the id). Files of any other live process are never
// listed, so removing these cannot disturb a write in progress on this machine.
[[gnu::cold]] inline std::vector<std::filesystem::path> abandoned_temp_files(const std::filesystem::path& dir,
                                                                const std::string& prefix) {
  std::vector<std::filesystem::path> found;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string leaf = it->path().filename().string();
    if (leaf.size() < 1 + prefix.size() || leaf[0] != '.' || leaf.compare(1, prefix.size(), prefix) != 0) continue;
    const auto tag = leaf.rfind(kTempTag);
    if (tag == std::string::npos || tag < 1 + prefix.size()) continue;
    const auto dash = leaf.find('-', tag + kTempTag.size());
    if (dash == std::string::npos) continue;
    const std::string pid_text = leaf.substr(tag + kTempTag.size(), dash - tag - kTempTag.size());
    if (pid_text.empty() || pid_text.size() > 9 ||
        pid_text.find_first_not_of("0123456789") != std::string::npos)
      continue;
    const long pid = std::stol(pid_text);
    if (pid <= 0) continue;
    const bool dead = pid == ::getpid() ? !detail::live_temps().contains(leaf)
                                         : ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
    if (dead) found.push_back(it->path());
  }
  return found;
}

}  // namespace ctnn::io
