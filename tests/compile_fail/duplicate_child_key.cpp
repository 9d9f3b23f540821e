// Two children of one Sequential named alike must not compile: their state_dict entries
// ("fc.weight", "fc.bias") would overwrite each other in a checkpoint.
// expect: Sequential: two children \(positions in the error\) have the same state_dict key.*(0, 2|0ul?, 2ul?)
#include <ctnn/ctnn.hpp>

#ifdef CTNN_CONTROL
using Second = ctnn::Named<"fc2", ctnn::Linear<4, 2>>;
#else
using Second = ctnn::Named<"fc", ctnn::Linear<4, 2>>;
#endif

int main() {
  ctnn::Network<ctnn::Features<4>, ctnn::Sequential<ctnn::Named<"fc", ctnn::Linear<4, 4>>, ctnn::ReLU, Second>> net;
  return static_cast<int>(net.num_parameters() == 0);
}
