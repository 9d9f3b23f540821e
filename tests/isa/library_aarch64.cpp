// The whole library on another architecture: <ctnn/ctnn.hpp> cross-compiled for aarch64 with
// OpenMP, -Wall -Wextra -Werror (a header-only library compiles in its users' builds), and run
// under qemu-user (tests/CMakeLists.txt). A small network trains a few steps in fp32, its loss
// must fall, and bf16 must run there on the portable kernel (no AVX512_BF16 or AMX off x86),
// its products differing from fp32's as rounded operands must and agreeing to bf16's precision.
#include <ctnn/ctnn.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

using Net = ctnn::Network<ctnn::Shape<3, 16, 16>,
                          ctnn::Sequential<ctnn::Conv2d<3, 16, 3, 1, 1>, ctnn::BatchNorm2d<16>, ctnn::ReLU,
                                           ctnn::MaxPool2d<2>, ctnn::Conv2d<16, 16, 1, 1, 0>, ctnn::ReLU,
                                           ctnn::MaxPool2d<8>, ctnn::Flatten, ctnn::Linear<16, 10>>>;

int main() {
  using namespace ctnn;
  int failures = 0;
  auto check = [&](bool ok, const char* what) {
    std::printf("%s: %s\n", ok ? "ok" : "FAILED", what);
    failures += !ok;
  };

  // A fixed batch of 20 images and labels, trained on for 15 steps.
  Rng rng(3);
  Batch<Shape<3, 16, 16>> x(20);
  for (std::size_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  std::vector<int> labels(20);
  for (int i = 0; i < 20; ++i) labels[i] = i % 10;
  Net net(/*seed=*/0);
  Adam optimizer(net, {.lr = 1e-2});
  CrossEntropyLoss<10> criterion;
  float first = 0, last = 0;
  for (int step = 0; step < 15; ++step) {
    net.zero_grad();
    last = criterion.forward(net.forward(x), labels);
    net.backward(x, criterion.grad());
    optimizer.step();
    if (step == 0) first = last;
  }
  std::printf("fp32 loss %.4f -> %.4f\n", first, last);
  check(std::isfinite(last) && last < 0.75f * first, "fp32 training lowers the loss by a quarter");

  net.eval();
  const std::vector<float> fp32 = net.forward(x).to_nchw();
  std::vector<float> bf16;
  {
    Autocast autocast(Precision::bf16);
    bf16 = net.forward(x).to_nchw();
  }
  std::printf("%s\n", ops::bf16_kernel_summary().c_str());
  check(ops::bf16_kernel() == ops::Bf16Kernel::portable, "bf16 runs on the portable kernel");
  double gap = 0, scale = 0;
  for (std::size_t i = 0; i < fp32.size(); ++i) {
    gap = std::max(gap, std::abs(double(bf16[i]) - double(fp32[i])));
    scale = std::max(scale, std::abs(double(fp32[i])));
  }
  std::printf("bf16 logits differ from fp32's by %.3g of their scale\n", gap / scale);
  check(gap > 1e-6 * scale, "bf16 rounds the operands (its logits differ from fp32's)");
  check(gap < 0x1p-4 * scale, "bf16 agrees with fp32 to bf16's precision (within 2^-4 of the scale)");
  return failures == 0 ? 0 : 1;
}
