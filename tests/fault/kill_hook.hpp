// The crash tests' kill points: CTNN_FAULT_KILL_AT=<point>:<n> in the environment of a test
// program makes it kill itself with SIGKILL the n-th time it reaches the named point of
// ctnn::hooks (include/ctnn/core/hooks.hpp), so fault_driver can stop a training run at an
// exact place. The points:
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
// Counting starts at 1 in every process. CTNN_FAULT_SIGNAL=TERM or INT sends that signal instead
// of SIGKILL (to this process, from inside the point, so it lands mid-step exactly where a kill
// would): the graceful stop of train/stop.hpp, which must finish the step and save. A malformed
// value makes install_kill_hook() throw std::invalid_argument, so a test with a typo fails
// instead of silently testing nothing.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include <ctnn/core/hooks.hpp>

namespace ctnn::test {

class KillHook : public hooks::Hooks {
 public:
  // Parses CTNN_FAULT_KILL_AT's value.
  explicit KillHook(std::string_view s, int sig = SIGKILL) : signal_(sig) {
    const auto c1 = s.find(':');
    const auto c2 = c1 == std::string_view::npos ? c1 : s.find(':', c1 + 1);
    std::uint64_t n = 0;
    point_ = std::string(s.substr(0, c1));
    const bool ok = c1 != std::string_view::npos && (point_ == "step" || point_ == "write" || point_ == "rename") &&
                    number(s.substr(c1 + 1, c2 == std::string_view::npos ? s.npos : c2 - c1 - 1), n) && n > 0 &&
                    (c2 == std::string_view::npos || (point_ == "write" && number(s.substr(c2 + 1), bytes_)));
    if (!ok)
      throw std::invalid_argument("CTNN_FAULT_KILL_AT='" + std::string(s) +
                                  "' is not step:N, write:N[:BYTES] or rename:N (N >= 1); unset it outside "
                                  "fault-injection tests");
    n_ = n;
  }

  void step_computed() override {
    if (point_ == "step" && ++seen_ == n_) fire();
  }
  void file_started() override {
    if (point_ != "step") target_ = ++seen_ == n_;  // write and rename both count files
  }
  void file_written(std::uint64_t bytes, bool complete) override {
    if (target_ && point_ == "write" && (bytes >= bytes_ || complete)) fire();
  }
  void file_before_rename() override {
    if (target_ && point_ == "rename") fire();
  }

 private:
  static bool number(std::string_view s, std::uint64_t& out) {
    if (s.empty() || s.size() > 18) return false;
    out = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return false;
      out = out * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return true;
  }
  void fire() const {
    if (signal_ != SIGKILL) {
      ::raise(signal_);  // handled (train/stop.hpp): the program goes on, asked to stop
      return;
    }
    ::kill(::getpid(), SIGKILL);
    ::_exit(137);  // not reached
  }

  int signal_;
  std::string point_;
  std::uint64_t n_ = 0, seen_ = 0, bytes_ = 1u << 20;
  bool target_ = false;  // the file being written is the planned one
};

// Installs a KillHook when CTNN_FAULT_KILL_AT is set and not empty.
inline void install_kill_hook() {
  const char* env = std::getenv("CTNN_FAULT_KILL_AT");
  if (!env || !*env) return;
  const std::string_view name = std::getenv("CTNN_FAULT_SIGNAL") ? std::getenv("CTNN_FAULT_SIGNAL") : "";
  int sig = SIGKILL;
  if (name == "TERM") sig = SIGTERM;
  else if (name == "INT") sig = SIGINT;
  else if (!name.empty() && name != "KILL")
    throw std::invalid_argument("CTNN_FAULT_SIGNAL='" + std::string(name) + "' is not KILL, TERM or INT");
  static KillHook hook(env, sig);
  hooks::installed() = &hook;
}

}  // namespace ctnn::test
