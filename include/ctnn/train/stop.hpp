// Stopping a training run gracefully on Ctrl-C (SIGINT) or SIGTERM: the signal handler only
// records the signal in a lock-free atomic (all a handler may safely do), and the Trainer, which
// polls it after every step (Trainer::stop_when), finishes the step in progress, writes its
// resume snapshot and the weights so far, and returns. A second signal while the first is being
// honoured stops the process at once with the signal's default action: the files on disk are
// still whole (every save is atomic, io/file.hpp), only the steps since the last snapshot are lost.
//
//   ctnn::StopSignals stop;  // SIGINT and SIGTERM handled until it goes out of scope
//   trainer.stop_when(stop.flag());
//   trainer.fit(train, std::cout);
//   if (trainer.interrupted()) return 130;
#pragma once

#include <signal.h>

#include <array>
#include <atomic>
#include <string>

namespace ctnn {

class StopSignals {
 public:
  // A handler may touch only lock-free atomics (and volatile std::sig_atomic_t): the flag must
  // be one, and it must be visible to the training thread whichever thread took the signal.
  static_assert(std::atomic<int>::is_always_lock_free, "the stop flag must be lock-free to be set in a handler");

  StopSignals() {
    flag_ref().store(0, std::memory_order_relaxed);
    struct sigaction sa {};
    sa.sa_handler = &StopSignals::handle;
    sigemptyset(&sa.sa_mask);
    // SA_RESTART: a read or write the signal interrupts resumes instead of failing with EINTR,
    // so a save in progress completes rather than reporting an error.
    sa.sa_flags = SA_RESTART;
    for (std::size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &sa, &previous_[i]);
  }
  ~StopSignals() {
    for (std::size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &previous_[i], nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The first signal received (SIGINT or SIGTERM), or 0.
  static int received() { return flag_ref().load(std::memory_order_relaxed); }
  // What Trainer::stop_when polls.
  static const std::atomic<int>& flag() { return flag_ref(); }

 private:
  static constexpr std::array<int, 2> kSignals{SIGINT, SIGTERM};

  static std::atomic<int>& flag_ref() {
    static std::atomic<int> f{0};  // constant-initialised: no guard for the handler to take
    return f;
  }
  // Async-signal-safe: an atomic exchange, and on a second signal sigaction and raise (both on
  // POSIX's list of async-signal-safe functions). The raised signal stays blocked until the
  // handler returns, then takes its default action (the process ends).
  static void handle(int sig) {
    if (flag_ref().exchange(sig, std::memory_order_relaxed) == 0) return;
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    ::sigaction(sig, &dfl, nullptr);
    ::raise(sig);
  }

  std::array<struct sigaction, 2> previous_{};
};

// "SIGINT", "SIGTERM", else "signal N": for messages.
inline std::string signal_name(int sig) {
  if (sig == SIGINT) return "SIGINT";
  if (sig == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(sig);
}

}  // namespace ctnn
