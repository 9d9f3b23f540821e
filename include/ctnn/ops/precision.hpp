// The precision policy of convolutions and linear layers: fp32 (the default) or bf16 mixed
// precision with the semantics of PyTorch's torch.autocast("cpu", dtype=torch.bfloat16) for
// these layers, give or take two differences that are more accurate (below).
//
// Under bf16, the products of convolutions and linear layers (forward, input gradient, weight
// gradient) round their two operands to bfloat16 and sum in fp32 (ops/bf16.hpp). Everything
// else stays fp32: the master weights and their gradients, the bias, BatchNorm, ReLU, pooling,
// the loss, the optimizer and checkpoints (a bf16 run's checkpoint is an ordinary fp32
// state_dict). Two differences from PyTorch, both towards fp32:
// - autocast also rounds each convolution's and linear layer's output (and so the gradient that
//   comes back to it), its bias, and the gradients it computes (dx, dW, db: a parameter's .grad
//   is a bf16 value widened) to bf16, where ctnn keeps the fp32 sums it computed (the next
//   product rounds an activation anyway);
// - on the AVX512_BF16 and portable kernels, the 3x3 layers that fp32 runs as Winograd
//   convolutions (F(4x4, 3x3) on planes of 8x8 and up: most of VGG16; F(2x2, 3x3) on 3x3 to 7x7
//   planes) stay fp32 Winograd, which multiplies 4x or 2.25x less than a direct product and so
//   beats the AVX512_BF16 kernel's 2x rate or is level with it (ResNet's 7x7 layers, where its
//   smaller error decides), let alone the portable kernel's, which is fp32's
//   (ops/conv2d.hpp, winograd_now). On the AMX kernel, and for the other 3x3 layers, they run
//   as bf16 products: bf16 has no Winograd, whose transforms would magnify its rounding.
//
// The policy is process-wide (a training program sets it once), read at the start of each
// product, so it must not change while a step runs.
#pragma once

#include <atomic>
#include <optional>
#include <string_view>

#include "ctnn/ops/bf16.hpp"

namespace ctnn {

enum class Precision { fp32, bf16 };

inline const char* precision_name(Precision p) { return p == Precision::bf16 ? "bf16" : "fp32"; }

inline std::optional<Precision> parse_precision(std::string_view s) {
  if (s == "fp32") return Precision::fp32;
  if (s == "bf16") return Precision::bf16;
  return std::nullopt;
}

namespace ops::detail {
inline std::atomic<Precision>& matmul_precision_state() {
  static std::atomic<Precision> p{Precision::fp32};
  return p;
}
}  // namespace ops::detail

// The precision convolutions and linear layers multiply in now.
inline Precision matmul_precision() { return ops::detail::matmul_precision_state().load(std::memory_order_relaxed); }

// Sets the policy for its lifetime and restores the previous one after, like torch.autocast's
// `with` block. bf16 runs on every CPU: on one without AVX512_BF16 or AMX, on the portable
// kernel (ops::bf16_kernel_summary() says which kernel runs).
class Autocast {
 public:
  explicit Autocast(Precision p) : previous_(matmul_precision()) {
    ops::detail::matmul_precision_state().store(p, std::memory_order_relaxed);
  }
  ~Autocast() { ops::detail::matmul_precision_state().store(previous_, std::memory_order_relaxed); }
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  Precision previous_;
};

}  // namespace ctnn
