// A testing hook for crash-consistency tests: CTNN_FAULT_KILL_AT=<point>:<n> in the environment
// makes the process kill itself with SIGKILL the n-th time it reaches the named point, so a test
// can stop a training run at an exact place (in the middle of a step, half-way through writing a
// checkpoint) instead of hoping a timer lands there. The points:
//
//   step:N        the N-th training step of this process, after backward and before the
//                 optimizer changes any weight (Trainer::fit)
//   write:N[:B]   the N-th file this process writes through io::write_file_atomically (resume
//                 snapshots, checkpoints, the rewritten loss log), once B bytes of it are in the
//                 temporary file (default 1 MiB; a smaller file: after its last byte, before it
//                 is flushed), so the temporary file is left half-written
//   rename:N      the N-th such file, complete and flushed in its temporary file but not yet
//                 renamed over the target
//
// Counting starts at 1 in every process. Unset (the normal case) the hook costs one load and
// one predictable branch per call; a malformed value throws std::invalid_argument at the first
// point reached, so a test with a typo fails instead of silently testing nothing.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ctnn::fault {

namespace detail {

struct Plan {
  bool active = false;
  std::string point;
  long n = 0;
  std::uint64_t bytes = 1u << 20;
  std::string error;  // a malformed CTNN_FAULT_KILL_AT, reported by the first point() call
};

// Arrivals at the planned point so far.
inline std::atomic<long>& seen() {
  static std::atomic<long> n{0};
  return n;
}

inline bool parse_number(std::string_view s, std::uint64_t& out) {
  if (s.empty() || s.size() > 18) return false;
  out = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return true;
}

inline Plan& plan() {
  static Plan p = [] {
    Plan r;
    const char* env = std::getenv("CTNN_FAULT_KILL_AT");
    if (!env || !*env) return r;
    const std::string_view s(env);
    const auto c1 = s.find(':');
    const auto c2 = c1 == std::string_view::npos ? c1 : s.find(':', c1 + 1);
    std::uint64_t n = 0, bytes = r.bytes;
    const std::string_view name = s.substr(0, c1);
    const bool ok = c1 != std::string_view::npos && (name == "step" || name == "write" || name == "rename") &&
                    parse_number(s.substr(c1 + 1, c2 == std::string_view::npos ? s.npos : c2 - c1 - 1), n) && n > 0 &&
                    (c2 == std::string_view::npos || (name == "write" && parse_number(s.substr(c2 + 1), bytes)));
    if (!ok) {
      r.error = "CTNN_FAULT_KILL_AT='" + std::string(s) +
                "' is not step:N, write:N[:BYTES] or rename:N (N >= 1); unset it outside fault-injection tests";
      return r;
    }
    r.active = true;
    r.point = std::string(name);
    r.n = static_cast<long>(n);
    r.bytes = bytes;
    return r;
  }();
  return p;
}

[[noreturn]] inline void die() {
  ::kill(::getpid(), SIGKILL);
  ::_exit(137);  // not reached
}

}  // namespace detail

// Whether CTNN_FAULT_KILL_AT names `name` at all (cheap; lets callers skip bookkeeping).
inline bool armed(std::string_view name) {
  auto& p = detail::plan();
  if (!p.active) [[likely]] {
    if (!p.error.empty()) throw std::invalid_argument(p.error);
    return false;
  }
  return p.point == name;
}

// Counts one arrival at `name`; the n-th one kills the process.
inline void point(std::string_view name) {
  if (!armed(name)) return;
  if (++detail::seen() == detail::plan().n) detail::die();
}

// For write_file_atomically: counts one file (returns its number when the plan targets this
// file, else 0); written(file, bytes) then kills once `bytes` reach the plan's threshold.
inline long begin_file(std::string_view name) {
  if (!armed(name)) return 0;
  const long k = ++detail::seen();
  return k == detail::plan().n ? k : 0;
}
inline void written(long file, std::uint64_t bytes, bool last) {
  if (file && (bytes >= detail::plan().bytes || last)) detail::die();
}

}  // namespace ctnn::fault
