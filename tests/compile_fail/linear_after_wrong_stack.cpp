// A Linear that expects 512 features after a stack that yields 2048 must not compile.
// expect: Linear: in_features \(first number\) differs from the size of its input \(second\).*(512, 2048|512 == 2048)
#include <ctnn/ctnn.hpp>

#ifdef CTNN_CONTROL
constexpr int kFeatures = 2048;
#else
constexpr int kFeatures = 512;
#endif

int main() {
  // 512 channels at 2x2 flatten to 2048 features.
  ctnn::Network<ctnn::Shape<3, 4, 4>,
                ctnn::Sequential<ctnn::Conv2d<3, 512, 3, 2, 1>, ctnn::Flatten, ctnn::Linear<kFeatures, 10>>>
      net;
  return static_cast<int>(net.num_parameters() == 0);
}
