// A Conv2d declared for 128 input channels after a layer that gives 64 must not compile.
// expect: Conv2d: in_channels \(first number\) differs from the channels of its input \(second\).*(128, 64|128 == 64)
#include <ctnn/ctnn.hpp>

#ifdef CTNN_CONTROL
constexpr int kIn = 64;
#else
constexpr int kIn = 128;
#endif

int main() {
  ctnn::Network<ctnn::Shape<3, 8, 8>,
                ctnn::Sequential<ctnn::Conv2d<3, 64, 3, 1, 1>, ctnn::ReLU, ctnn::Conv2d<kIn, 64, 3, 1, 1>>>
      net;
  return static_cast<int>(net.num_parameters() == 0);
}
