// Parameters and state: how layers expose their tensors by PyTorch state_dict names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ctnn {

// A trainable tensor of a layer. The values and gradients live in the owning Network's two
// contiguous buffers (so an optimizer walks one array and never sees layer types); the layer
// holds pointers into them, assigned once when the Network is built.
struct Param {
  float* value = nullptr;
  float* grad = nullptr;
  std::size_t numel = 0;
  std::span<float> data() const { return {value, numel}; }
  std::span<float> gradient() const { return {grad, numel}; }
};

using TensorShape = std::vector<std::int64_t>;

// The state-visitor contract. A layer's visit_state(v, prefix) calls, in PyTorch's
// state_dict order:
//   v.parameter(name, shape, Param&)       weights and biases (trainable)
//   v.buffer(name, shape, std::span<float>) running statistics (saved, not trained)
//   v.counter(name, std::int64_t&)          num_batches_tracked (a 0-d int64 tensor)
// with `name` the full dotted key, e.g. "features.0.weight". A visitor overrides the calls it
// needs; the others do nothing.
struct StateVisitor {
  virtual ~StateVisitor() = default;
  virtual void parameter(const std::string& /*name*/, const TensorShape& /*shape*/, Param& /*p*/) {}
  virtual void buffer(const std::string& /*name*/, const TensorShape& /*shape*/, std::span<float> /*data*/) {}
  virtual void counter(const std::string& /*name*/, std::int64_t& /*value*/) {}
};

inline std::size_t numel(const TensorShape& shape) {
  std::size_t n = 1;
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

// Joins a module prefix and a child key the way PyTorch names state_dict entries.
inline std::string join_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

}  // namespace ctnn
