// Scratch memory for kernels that need a temporary buffer (patch matrices, partial sums).
//
// Buffers are reused across layers and steps, so once the largest layer has run a training step
// allocates nothing. Each calling thread has its own set (two networks trained from two threads
// never share one), and numbered slots let a kernel hold more than one buffer at a time.
#pragma once

#include <cstddef>

#include "ctnn/core/tensor.hpp"

namespace ctnn::ops {

inline constexpr int scratch_slots = 4;

// At least `floats` floats of slot `slot`, contents unspecified; valid until the next call for
// the same slot on this thread.
inline float* scratch(int slot, std::size_t floats) {
  thread_local AlignedFloats buffers[scratch_slots];
  AlignedFloats& b = buffers[slot];
  if (b.size() < floats) {
    b = AlignedFloats();  // free first: growing must not hold the old and new buffer at once
    b.resize(floats);
  }
  return b.data();
}

}  // namespace ctnn::ops
