// A module name with a dot must not compile (PyTorch's add_module refuses it too): "fc.0" here
// would give "fc.0.weight", the key of the first child of the Sequential named "fc".
// expect: Named: a module name must not contain '\.'
#include <ctnn/ctnn.hpp>

#ifdef CTNN_CONTROL
using First = ctnn::Named<"fc0", ctnn::Linear<4, 4>>;
#else
using First = ctnn::Named<"fc.0", ctnn::Linear<4, 4>>;
#endif

int main() {
  ctnn::Network<ctnn::Features<4>, ctnn::Sequential<First, ctnn::Named<"fc", ctnn::Sequential<ctnn::Linear<4, 2>>>>> net;
  return static_cast<int>(net.num_parameters() == 0);
}
