// libFuzzer target for ctnn's PyTorch checkpoint reader (zip container, restricted pickle, tensor
// views) and the load path into a network.
//
// Every input must end in a StateDict or a CheckpointError: any other exception, a sanitizer
// report, a hang or an out-of-memory is a finding. Inputs that parse are also written back with
// ctnn's writer and read again, and must come back identical.
//
// Build (plain command, from the repository root; or configure with -DCTNN_BUILD_FUZZERS=ON and
// CMAKE_CXX_COMPILER=clang++, see CMakeLists.txt here):
//   clang++-14 -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
//     -Iinclude benchmarks/fuzz/fuzz_checkpoint.cpp -o fuzz_checkpoint
// Seed corpus of real files (Debian's python3-torch):
//   /usr/bin/python3 benchmarks/fuzz/make_seed_corpus.py seeds
// Run (10 minutes, one core):
//   mkdir -p corpus && ./fuzz_checkpoint -max_total_time=600 -workers=1 -jobs=1 -rss_limit_mb=2048 \
//     -dict=benchmarks/fuzz/checkpoint.dict corpus seeds
#include <cstdint>
#include <cstdlib>

#include "ctnn/io/state_dict.hpp"

namespace {

using namespace ctnn;
using namespace ctnn::io;

// A network-shaped object without Eigen: a "0" layer with weight [2, 2] and bias [2], and a
// BatchNorm-like "1" with running_mean [2] and num_batches_tracked.
struct TinyNet {
  std::vector<float> weight = std::vector<float>(4), bias = std::vector<float>(2), grad = std::vector<float>(6),
                     mean = std::vector<float>(2);
  std::int64_t count = 0;
  Param w{weight.data(), grad.data(), 4}, b{bias.data(), grad.data() + 4, 2};
  void visit_state(StateVisitor& v) {
    v.parameter("0.weight", {2, 2}, w);
    v.parameter("0.bias", {2}, b);
    v.buffer("1.running_mean", {2}, mean);
    v.counter("1.num_batches_tracked", count);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Bytes bytes(data, size);
  StateDict sd;
  try {
    // Without CRC checks, so that mutations reach the pickle and tensor code.
    sd = parse_checkpoint(bytes, "fuzz", {.verify_crc = false});
  } catch (const CheckpointError&) {
    return 0;
  }
  std::size_t total = 0;
  for (const auto& [key, t] : sd) total += t.numel();
  if (total > (1u << 20)) return 0;  // views may repeat elements (stride 0): do not materialise huge ones

  TinyNet net;
  for (bool strict : {true, false}) {
    try {
      load_state_dict(net, sd, strict, "fuzz");
    } catch (const CheckpointError&) {
    }
  }
  const StateDict again = parse_checkpoint(serialize_checkpoint(sd), "rewritten");
  if (again.keys() != sd.keys()) std::abort();
  for (const auto& [key, t] : sd)
    if (!identical(t, again.at(key))) std::abort();
  try {
    parse_checkpoint(bytes, "fuzz");  // with CRC checks
  } catch (const CheckpointError&) {
  }
  return 0;
}
