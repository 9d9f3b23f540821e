// libFuzzer target for the whole PyTorch checkpoint loader: zip container, restricted pickle,
// tensor views (include/ctnn/io/torch_checkpoint.hpp) and load_state_dict's validation against a
// network's state (include/ctnn/io/state_dict.hpp).
//
// Each input is a checkpoint file. Without CRC checks (so that mutations reach the pickle and the
// tensors) it must give a StateDict or a CheckpointError naming the file (and passing
// fuzz_common.hpp's check_message); read_checkpoint on the
// same bytes as a file (a memfd) must give the same. A StateDict must:
//   - hold tensors whose every element can be read (their views were checked), and write back
//     with serialize_checkpoint to a file that reads back identically;
//   - read identically with CRC checks on, when those pass;
//   - load into a small network exactly as load_state_dict promises: strict or not, either all
//     its keys fit (then the network holds the checkpoint's values, and the missing and
//     unexpected keys are exactly the differences of the two key sets) or it throws
//     StateDictMismatch with consistent lists and leaves the network untouched.
// parse_checkpoint_contents must agree with it, and loading the contents (finding the state_dict
// in a nested file, with and without stripping "module.") must load or give a CheckpointError
// that names the file and leaves the network untouched.
// Any other exception, a sanitizer report, a hang or an out-of-memory is a finding. Build and
// run: tests/fuzz/CMakeLists.txt.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "ctnn/io/state_dict.hpp"
#include "fuzz_common.hpp"
#include "tiny_net.hpp"

namespace {

using namespace ctnn;
using namespace ctnn::io;
using ctnn::fuzz::fail;

using ctnn::fuzz::TinyNet;

// Views may repeat their storage (stride 0) up to 2^31 elements: those over 2^20 are compared
// by dtype, size and stride, not materialised.
bool same_dicts(const StateDict& a, const StateDict& b) {
  if (a.keys() != b.keys()) return false;
  for (const auto& [key, t] : a) {
    const auto& u = b.at(key);
    if (t.numel() > (1u << 20) ? !(t.dtype() == u.dtype() && t.shape() == u.shape() && t.stride() == u.stride())
                               : !identical(t, u))
      return false;
  }
  return true;
}

void check_load(const StateDict& sd, bool strict) {
  TinyNet net;
  const StateDict before = state_dict(net);
  std::set<std::string> net_keys, sd_keys;
  for (const auto& [key, t] : before) net_keys.insert(key);
  for (const auto& [key, t] : sd) sd_keys.insert(key);
  std::vector<std::string> missing, unexpected;
  std::set_difference(net_keys.begin(), net_keys.end(), sd_keys.begin(), sd_keys.end(), std::back_inserter(missing));
  std::set_difference(sd_keys.begin(), sd_keys.end(), net_keys.begin(), net_keys.end(), std::back_inserter(unexpected));
  bool shapes_fit = true;  // and dtypes convertible: floats to float32, integers to int64
  for (const auto& [key, t] : before)
    if (const Tensor* c = sd.find(key))
      shapes_fit = shapes_fit && c->shape() == t.shape() &&
                   (t.dtype() == DType::float32 ? is_floating(c->dtype()) : is_integral(c->dtype()));
  const bool should_load = shapes_fit && (!strict || (missing.empty() && unexpected.empty()));

  try {
    LoadResult r = load_state_dict(net, sd, strict, "fuzz");
    if (!should_load) fail("load_state_dict accepted a state_dict that does not fit");
    std::sort(r.missing_keys.begin(), r.missing_keys.end());
    std::sort(r.unexpected_keys.begin(), r.unexpected_keys.end());
    if (r.missing_keys != missing || r.unexpected_keys != unexpected) fail("wrong missing or unexpected keys");
    const StateDict after = state_dict(net);
    for (const auto& [key, t] : after) {
      const Tensor* c = sd.find(key);
      if (c && c->dtype() != t.dtype()) {  // converted: the network holds the tensor's own conversion
        const bool same = t.dtype() == DType::float32 ? std::memcmp(t.floats().data(), c->floats().data(), 4 * t.numel()) == 0
                                                      : t.int64s() == c->int64s();
        if (!same) fail("the network does not hold the converted values", key);
      } else if (!identical(t, c ? *c : before.at(key))) {
        fail("the network does not hold what was loaded", key);
      }
    }
  } catch (const StateDictMismatch& e) {
    if (should_load) fail("load_state_dict refused a state_dict that fits", e.what());
    ctnn::fuzz::check_message(e.what(), "fuzz: ", /*multiline=*/true);
    auto m = e.missing_keys, u = e.unexpected_keys;
    std::sort(m.begin(), m.end());
    std::sort(u.begin(), u.end());
    if (m != missing || u != unexpected) fail("StateDictMismatch lists the wrong keys", e.what());
    if (e.mismatched_keys.empty() == !shapes_fit) fail("StateDictMismatch lists the wrong mismatches", e.what());
    if (!same_dicts(state_dict(net), before)) fail("a refused load changed the network");
  }
}

}  // namespace

// Whatever the file holds, loading it into the network by finding the state_dict (as ctnn-eval
// does) either works or throws a CheckpointError naming the file; for a plain state_dict it does
// exactly what loading the StateDict does.
void check_nested(const Bytes bytes, const StateDict* plain) {
  CheckpointContents contents;
  try {
    contents = parse_checkpoint_contents(bytes, "nested", {.verify_crc = false});
  } catch (const CheckpointError& e) {
    if (plain) fail("parse_checkpoint_contents refused what parse_checkpoint read", e.what());
    ctnn::fuzz::check_message(e.what(), "nested: ");
    return;
  }
  if (plain && (!contents.plain || !same_dicts(contents.state_dicts.front().tensors, *plain)))
    fail("parse_checkpoint_contents and parse_checkpoint disagree");
  for (const auto& d : contents.state_dicts)
    if (d.tensors.empty() && !(d.key.empty() && contents.plain)) fail("an empty dictionary listed as a state_dict", d.key);
  for (const char* prefix : {"", "module."}) {
    TinyNet net;
    const StateDict before = state_dict(net);
    try {
      const LoadResult r = load_state_dict(net, contents, {.strip_prefix = prefix});
      if (!r.checkpoint_key.empty() && !contents.find(r.checkpoint_key)) fail("used a dictionary that is not listed");
    } catch (const CheckpointError& e) {
      ctnn::fuzz::check_message(e.what(), "nested", /*multiline=*/true);
      if (!same_dicts(state_dict(net), before)) fail("a refused nested load changed the network");
    }
  }
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static ctnn::fuzz::MemFile file;
  file.assign(data, size);
  const Bytes bytes(data, size);
  StateDict sd;
  std::string error;
  try {
    sd = parse_checkpoint(bytes, file.path, {.verify_crc = false});
  } catch (const CheckpointError& e) {
    error = e.what();
    ctnn::fuzz::check_message(error, file.path + ": ");
  }
  try {
    const StateDict from_file = read_checkpoint(file.path, {.verify_crc = false});
    if (!error.empty()) fail("read_checkpoint accepted what parse_checkpoint refused", error);
    if (!same_dicts(sd, from_file)) fail("read_checkpoint and parse_checkpoint disagree");
  } catch (const CheckpointError& e) {
    if (e.what() != error) fail("read_checkpoint and parse_checkpoint give different errors", error + "\n" + e.what());
  }
  check_nested(bytes, error.empty() ? &sd : nullptr);
  if (!error.empty()) return 0;

  std::size_t total = 0;
  for (const auto& [key, t] : sd) {
    if (static_cast<std::size_t>(t.dtype()) >= std::size(io::detail::kDTypes)) fail("a tensor of no known dtype");
    if (t.shape().size() != t.stride().size()) fail("size and stride of different lengths", key);
    total += t.numel();
  }
  if (total > (1u << 20)) return 0;  // views may repeat elements (stride 0): do not materialise huge ones

  const StateDict again = parse_checkpoint(serialize_checkpoint(sd), "rewritten");  // errors are findings
  if (!same_dicts(sd, again)) fail("a checkpoint changed in a round trip through the writer");
  try {
    if (!same_dicts(sd, parse_checkpoint(bytes, "fuzz", {.verify_crc = true})))
      fail("CRC checks changed what was read");
  } catch (const CheckpointError&) {
  }
  for (bool strict : {true, false}) check_load(sd, strict);
  return 0;
}
