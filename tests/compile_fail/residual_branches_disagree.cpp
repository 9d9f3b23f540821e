// A residual whose two branches give different channel counts must not compile.
// expect: Residual: the body \(first number\) and the shortcut \(second\) give different channel counts.*(256, 128|256 == 128)
#include <ctnn/ctnn.hpp>

#ifdef CTNN_CONTROL
constexpr int kShortcut = 256;
#else
constexpr int kShortcut = 128;
#endif

int main() {
  ctnn::Network<ctnn::Shape<64, 4, 4>,
                ctnn::Sequential<ctnn::Residual<ctnn::Sequential<ctnn::Conv2d<64, 256, 1>, ctnn::ReLU>,
                                                ctnn::Conv2d<64, kShortcut, 1>>>>
      net;
  return static_cast<int>(net.num_parameters() == 0);
}
