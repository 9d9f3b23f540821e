// Hooks: the places where a test can watch, or stop, a running program at an exact point (in
// the middle of a training step, half-way through writing a checkpoint) instead of hoping a
// timer lands there. Production code only reports the points; nothing is installed unless a
// test program installs it (tests/fault/kill_hook.hpp kills the process at a chosen point, for
// the crash-consistency tests). Without one, each point costs one load and one branch.
#pragma once

#include <cstdint>

namespace ctnn::hooks {

class Hooks {
 public:
  virtual ~Hooks() = default;
  // Trainer::fit: a step's gradients are computed and no weight has changed yet.
  virtual void step_computed() {}
  // io::write_file_atomically, for each file: it starts; `bytes` of it are in the temporary
  // file (`complete`: all of them, not yet flushed); it is complete and flushed but not yet
  // renamed over its target.
  virtual void file_started() {}
  virtual void file_written(std::uint64_t /*bytes*/, bool /*complete*/) {}
  virtual void file_before_rename() {}
};

// The installed hooks, or null (the default). Install before any work starts; not for use
// while other threads may be reaching a point.
inline Hooks*& installed() {
  static Hooks* h = nullptr;
  return h;
}

}  // namespace ctnn::hooks
