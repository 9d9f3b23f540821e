// Dropout, as torch.nn.Dropout: in training, zero each value with probability p and scale the
// kept ones by 1/(1-p); in evaluation, the identity.
#pragma once

#include <cstdint>
#include <charconv>
#include <string>

#include "ctnn/core/shard.hpp"
#include "ctnn/core/threading.hpp"
#include "ctnn/layers/layer.hpp"

namespace ctnn {

template <class In, long Num, long Den>
class DropoutLayer : public LeafLayer<DropoutLayer<In, Num, Den>, In, In> {
 public:
  // The spec's probability Num/Den: the quotient of two exact integers is correctly rounded, so
  // Dropout<3, 10> gives the same double as the literal 0.3.
  static constexpr double default_p = static_cast<double>(Num) / static_cast<double>(Den);
  // Probability of zeroing; settable at run time (0 makes training deterministic for parity tests).
  double p = default_p;

  static std::string type_name() {
    // p as Python prints a float: the shortest digits that give it back (0.3, 0.3333333333333333).
    char digits[32];
    const auto end = std::to_chars(digits, digits + sizeof digits, default_p).ptr;
    std::string p_text(digits, end);
    if (p_text.find_first_of(".e") == std::string::npos) p_text += ".0";  // Python's 1.0, not 1
    return "Dropout(p=" + p_text + ", inplace=False)";
  }

  // The Network gives every dropout layer its own seed derived from the network seed. Masks
  // are counter-based (seed, forward count, element), so they do not depend on the thread count
  // and a run can be resumed exactly by restoring `draws`.
  static constexpr bool has_random_state = true;
  void set_seed(std::uint64_t seed) { seed_ = seed; }
  std::uint64_t seed() const { return seed_; }
  std::uint64_t draws = 0;  // training forwards so far

  const Batch<In>& forward(const Batch<In>& x) {
    auto& y = this->y_;
    y.resize(x.batch());
    const std::size_t n = x.size();
    if (!this->training_ || p <= 0.0) {
      std::copy(x.data(), x.data() + n, y.data());
      mask_.assign(n, 1.0f);
      return y;
    }
    mask_.resize(n);
    const float scale = p >= 1.0 ? 0.0f : static_cast<float>(1.0 / (1.0 - p));
    const std::uint64_t draw = draws++;
    const float* px = x.data();
    float* py = y.data();
    // A value's counter is its index in the global batch (core/shard.hpp), so a process that
    // trains on a share of the batch draws the same masks for its samples as one process would.
    const BatchShard& shard = current_shard();
    const std::size_t run = static_cast<std::size_t>(x.batch()) * In::plane;  // one channel
    const std::size_t extra = static_cast<std::size_t>(shard.global_size(x.batch()) - x.batch()) * In::plane;
    const std::size_t shift = static_cast<std::size_t>(shard.offset) * In::plane;
    CTNN_OMP(parallel for schedule(static) if (n > kThreadedWork))
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t key = i + (i / run) * extra + shift;
      mask_[i] = counter_uniform(seed_, draw, key) < p ? 0.0f : scale;
      py[i] = px[i] * mask_[i];
    }
    return y;
  }

  void backward(const Batch<In>& x, const Batch<In>& dy, Batch<In>* dx) {
    if (!dx) return;
    dx->resize(x.batch());
    for (std::size_t i = 0; i < x.size(); ++i) dx->data()[i] = dy.data()[i] * mask_[i];
  }

 private:
  std::uint64_t seed_ = 0;
  AlignedFloats mask_;
};

// Dropout<> is p = 0.5 (PyTorch's default); Dropout<Num, Den> is p = Num / Den. Two integers, not
// a double: a floating-point template parameter needs clang 18 or later (Debian 12's clang is 14).
template <long Num = 1, long Den = 2>
struct Dropout {
  static_assert(Den > 0 && Num >= 0 && Num <= Den, "Dropout: p = Num / Den must be in [0, 1]");
  template <class In>
  using bind = DropoutLayer<In, Num, Den>;
};

}  // namespace ctnn
