// Buffers for the gradients of intermediate outputs during backward, shared by every composite
// layer (Sequential, Residual) that runs on this thread.
//
// A composite needs its buffers only while its own backward runs, so they are taken from a stack:
// a backward pushes a frame, its children push theirs above it, and the frame is popped on
// return. Nested composites therefore get distinct buffers, and siblings, which run one after
// the other, reuse the same ones. Owning two buffers per composite instead kept about one
// intermediate gradient alive for every layer of the network (ResNet50_layer4 has 70 composites).
// Buffers only grow, so after the first step a backward allocates nothing.
#pragma once

#include <cstddef>
#include <deque>

#include "ctnn/core/tensor.hpp"

namespace ctnn::detail {

class GradFrame {
 public:
  explicit GradFrame(std::size_t count) : stack_(stack()), base_(stack_.top) {
    stack_.top += count;
    while (stack_.buffers.size() < stack_.top) stack_.buffers.emplace_back();
  }
  ~GradFrame() { stack_.top = base_; }
  GradFrame(const GradFrame&) = delete;
  GradFrame& operator=(const GradFrame&) = delete;

  // At least `floats` floats of this frame's buffer i, contents unspecified.
  float* buffer(std::size_t i, std::size_t floats) {
    AlignedFloats& b = stack_.buffers[base_ + i];
    if (b.size() < floats) {
      b = AlignedFloats();  // free first: growing must not hold the old and new buffer at once
      b.resize(floats);
    }
    return b.data();
  }

 private:
  struct Stack {
    std::deque<AlignedFloats> buffers;  // a deque: growing it never moves a buffer in use
    std::size_t top = 0;
  };
  static Stack& stack() {
    thread_local Stack s;
    return s;
  }
  Stack& stack_;
  std::size_t base_;
};

}  // namespace ctnn::detail
