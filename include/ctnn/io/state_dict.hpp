// state_dict / load_state_dict / save for ctnn networks, by PyTorch state_dict names.
//
//   ctnn::VGG16 net;
//   ctnn::io::load_state_dict(net, "vgg16_epoch250.ckpt");   // torch.save(model.state_dict(), ...)
//   ...train...
//   ctnn::io::save_state_dict(net, "vgg16_more.ckpt");        // model.load_state_dict(torch.load(...))
//
// Any type with visit_state(StateVisitor&) works (every ctnn::Network does).
#pragma once

#include <algorithm>
#include <filesystem>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "ctnn/core/state.hpp"
#include "ctnn/io/error.hpp"
#include "ctnn/io/torch_checkpoint.hpp"

namespace ctnn::io {

template <class Net>
concept HasState = requires(Net& net, StateVisitor& v) { net.visit_state(v); };

// A checkpoint whose keys or shapes do not fit the network. what() lists the problems (the
// first 25 of each kind, with exact counts); the members hold them all.
class StateDictMismatch : public CheckpointError {
 public:
  StateDictMismatch(const std::string& file, std::vector<std::string> missing, std::vector<std::string> unexpected,
                    std::vector<std::string> mismatched, std::size_t network_keys)
      : CheckpointError(file, describe(missing, unexpected, mismatched, network_keys)),
        missing_keys(std::move(missing)), unexpected_keys(std::move(unexpected)),
        mismatched_keys(std::move(mismatched)) {}

  std::vector<std::string> missing_keys, unexpected_keys;
  std::vector<std::string> mismatched_keys;  // "key: checkpoint [..] float32, network [..] float32"

 private:
  static std::string describe(const std::vector<std::string>& missing, const std::vector<std::string>& unexpected,
                              const std::vector<std::string>& mismatched, std::size_t network_keys) {
    std::string s = "the checkpoint does not match the network's state_dict";
    auto list = [&](const char* title, const std::vector<std::string>& items, const char* sep) {
      if (items.empty()) return;
      s += "\n  " + std::string(title) + " (" + std::to_string(items.size()) + "): ";
      const std::size_t shown = std::min<std::size_t>(items.size(), 25);
      for (std::size_t i = 0; i < shown; ++i) s += (i ? sep : "") + printable(items[i]);
      if (shown < items.size()) s += std::string(sep) + "... and " + std::to_string(items.size() - shown) + " more";
    };
    list("missing keys", missing, ", ");
    list("unexpected keys", unexpected, ", ");
    list("size or dtype mismatches", mismatched, "; ");
    if (network_keys > 0 && missing.size() == network_keys)
      s += "\n  none of the network's " + std::to_string(network_keys) +
           " keys is in the checkpoint: it was saved from a different model";
    const bool all_module = !unexpected.empty() && std::all_of(unexpected.begin(), unexpected.end(), [](const auto& k) {
      return k.rfind("module.", 0) == 0;
    });
    if (all_module) s += "\n  the checkpoint's keys start with 'module.' (saved from nn.DataParallel): strip that prefix";
    return s;
  }
};

// What a non-strict load left out, as PyTorch's load_state_dict(strict=False) returns it.
struct LoadResult {
  std::vector<std::string> missing_keys, unexpected_keys;
};

namespace detail {

// Every tensor of a network by name: its shape, dtype and where its values live.
struct StateSlot {
  std::string name;
  TensorShape shape;
  DType dtype;
  std::span<float> values;             // parameters and buffers
  std::int64_t* counter = nullptr;     // num_batches_tracked
};

struct SlotCollector : StateVisitor {
  std::vector<StateSlot> slots;
  void parameter(const std::string& name, const TensorShape& shape, Param& p) override {
    slots.push_back({name, shape, DType::float32, p.data(), nullptr});
  }
  void buffer(const std::string& name, const TensorShape& shape, std::span<float> data) override {
    slots.push_back({name, shape, DType::float32, data, nullptr});
  }
  void counter(const std::string& name, std::int64_t& value) override {
    slots.push_back({name, {}, DType::int64, {}, &value});
  }
};

template <class Net>
std::vector<StateSlot> slots_of(Net& net) {
  SlotCollector c;
  net.visit_state(c);
  return std::move(c.slots);
}

}  // namespace detail

// model.state_dict(): a copy of every parameter, buffer and counter, in PyTorch's order.
template <HasState Net>
StateDict state_dict(Net& net) {
  StateDict sd;
  for (const auto& slot : detail::slots_of(net)) {
    if (slot.counter) sd.insert_or_assign(slot.name, Tensor::scalar_int64(*slot.counter));
    else sd.insert_or_assign(slot.name, Tensor::from_floats(slot.shape, slot.values));
  }
  return sd;
}

// model.load_state_dict(sd, strict): checks every key, shape and dtype against the network's
// own state first and changes nothing unless all fit. Strict (the default): any missing or
// unexpected key is an error too. Size and dtype mismatches are errors either way, as in
// PyTorch. Errors are StateDictMismatch, named by `source`.
template <HasState Net>
LoadResult load_state_dict(Net& net, const StateDict& sd, bool strict = true, const std::string& source = "state_dict") {
  const auto slots = detail::slots_of(net);
  std::vector<std::string> missing, unexpected, mismatched;
  std::unordered_map<std::string, const detail::StateSlot*> by_name;
  for (const auto& slot : slots) {
    by_name.emplace(slot.name, &slot);
    const Tensor* t = sd.find(slot.name);
    if (!t) {
      missing.push_back(slot.name);
    } else if (t->shape() != slot.shape || t->dtype() != slot.dtype) {
      mismatched.push_back(slot.name + ": checkpoint " + shape_string(t->shape()) + " " + dtype_name(t->dtype()) +
                           ", network " + shape_string(slot.shape) + " " + dtype_name(slot.dtype));
    }
  }
  for (const auto& [key, t] : sd)
    if (!by_name.count(key)) unexpected.push_back(key);
  if (!mismatched.empty() || (strict && (!missing.empty() || !unexpected.empty())))
    throw StateDictMismatch(source, missing, unexpected, mismatched, slots.size());

  for (const auto& slot : slots) {
    const Tensor* t = sd.find(slot.name);
    if (!t) continue;
    if (slot.counter) *slot.counter = t->int64s().front();
    else t->copy_to(slot.values);
  }
  return {std::move(missing), std::move(unexpected)};
}

// model.load_state_dict(torch.load(file), strict).
template <HasState Net>
LoadResult load_state_dict(Net& net, const std::filesystem::path& file, bool strict = true) {
  return load_state_dict(net, read_checkpoint(file), strict, file.string());
}

// torch.save(model.state_dict(), file), atomically.
template <HasState Net>
void save_state_dict(Net& net, const std::filesystem::path& file) {
  write_checkpoint(file, state_dict(net));
}

}  // namespace ctnn::io
