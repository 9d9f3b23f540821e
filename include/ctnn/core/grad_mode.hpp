// Whether forward passes keep what a backward pass needs: torch.no_grad() for ctnn.
#pragma once

namespace ctnn {

namespace detail {
inline bool& grad_enabled_flag() {
  thread_local bool enabled = true;
  return enabled;
}
}  // namespace detail

// False inside a NoGrad scope on this thread.
inline bool is_grad_enabled() { return detail::grad_enabled_flag(); }

// As `with torch.no_grad():`: forward passes run in this scope keep nothing for a backward pass.
// Composite layers give each intermediate output back as soon as the next layer has read it
// (Batch::release), so an evaluation holds a few activations instead of every layer's: a
// ResNet50_layer4 batch of 100 needs about 20 MB instead of 280. A backward after such a forward
// is an error (Network::backward throws).
class NoGrad {
 public:
  NoGrad() : previous_(detail::grad_enabled_flag()) { detail::grad_enabled_flag() = false; }
  ~NoGrad() { detail::grad_enabled_flag() = previous_; }
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  bool previous_;
};

}  // namespace ctnn
