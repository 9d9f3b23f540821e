// state_dict / load_state_dict / save for ctnn networks, by PyTorch state_dict names.
//
//   ctnn::VGG16 net;
//   ctnn::io::load_state_dict(net, "vgg16_epoch250.ckpt");   // torch.save(model.state_dict(), ...)
//   ...train...
//   ctnn::io::save_state_dict(net, "vgg16_more.ckpt");        // model.load_state_dict(torch.load(...))
//
// Any type with visit_state(StateVisitor&) works (every ctnn::Network does). A file may also be
// a training checkpoint with the state_dict inside (found, or named by LoadOptions::checkpoint_key),
// with keys under a wrapper's prefix (LoadOptions::strip_prefix) or with float16, bfloat16 or
// float64 tensors (converted to float32, as PyTorch's load_state_dict converts), or ctnn-train's
// resume snapshot (its weights are taken).
#pragma once

#include <algorithm>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "ctnn/core/state.hpp"
#include "ctnn/io/error.hpp"
#include "ctnn/io/torch_checkpoint.hpp"

namespace ctnn::io {

template <class Net>
concept HasState = requires(Net& net, StateVisitor& v) { net.visit_state(v); };

// Keys from a file, for a message: quoted printably, separated by `sep`, the first 25 and how
// many more.
inline std::string key_list(const std::vector<std::string>& items, const char* sep) {
  std::string s;
  const std::size_t shown = std::min<std::size_t>(items.size(), 25);
  for (std::size_t i = 0; i < shown; ++i) s += (i ? sep : "") + printable(items[i]);
  if (shown < items.size()) s += std::string(sep) + "... and " + std::to_string(items.size() - shown) + " more";
  return s;
}

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
      s += "\n  " + std::string(title) + " (" + std::to_string(items.size()) + "): " + key_list(items, sep);
    };
    list("missing keys", missing, ", ");
    list("unexpected keys", unexpected, ", ");
    list("size or dtype mismatches", mismatched, "; ");
    // Keys under a wrapper's prefix are not another model's: say what to do instead.
    const std::string prefix = wrapper_prefix(unexpected);
    if (network_keys > 0 && missing.size() == network_keys && prefix.empty())
      s += "\n  none of the network's " + std::to_string(network_keys) +
           " keys is in the checkpoint: it was saved from a different model";
    if (!prefix.empty())
      s += "\n  the checkpoint's keys start with '" + prefix + "' (saved from " + wrapper_names(prefix) +
           "): strip that prefix on load (--strip-prefix " + prefix + ", or LoadOptions::strip_prefix)";
    return s;
  }

 public:
  // The prefix that nn.DataParallel / DistributedDataParallel ("module.") and torch.compile
  // ("_orig_mod.") put before every key, nested in any order, if all of `keys` share one.
  static std::string wrapper_prefix(const std::vector<std::string>& keys) {
    std::string prefix;
    if (keys.empty()) return prefix;
    for (bool grew = true; grew;) {
      grew = false;
      for (const char* wrapper : {"module.", "_orig_mod."}) {
        const std::string candidate = prefix + wrapper;
        if (std::all_of(keys.begin(), keys.end(), [&](const std::string& k) { return k.rfind(candidate, 0) == 0; })) {
          prefix = candidate;
          grew = true;
        }
      }
    }
    return prefix;
  }

 private:
  static std::string wrapper_names(const std::string& prefix) {
    const bool parallel = prefix.find("module.") != std::string::npos;
    const bool compiled = prefix.find("_orig_mod.") != std::string::npos;
    return parallel && compiled ? "nn.DataParallel and torch.compile"
           : parallel           ? "nn.DataParallel or DistributedDataParallel"
                                : "torch.compile";
  }
};

// What a non-strict load left out, as PyTorch's load_state_dict(strict=False) returns it, and
// what was done on the way, one line each: which dictionary of a nested checkpoint was used
// ("using 'model_state_dict'"), a prefix stripped, dtypes converted. Programs print the notes.
struct LoadResult {
  std::vector<std::string> missing_keys, unexpected_keys;
  std::string checkpoint_key;  // the dictionary of tensors used; "" for a plain state_dict
  std::vector<std::string> notes;
};

// How to load a checkpoint.
struct LoadOptions {
  // Any missing or unexpected key is an error (PyTorch's strict=True). Size and dtype
  // mismatches are errors either way.
  bool strict = true;
  // Where the state_dict is in a nested checkpoint (a CheckpointContents key such as
  // "model_state_dict"); "" finds it: the root if it is a state_dict, else the one dictionary
  // of tensors whose keys are the network's.
  std::string checkpoint_key = {};
  // Removed from the start of every key that has it before matching: "module." for files saved
  // from nn.DataParallel / DistributedDataParallel, "_orig_mod." for torch.compile's.
  std::string strip_prefix = {};
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

namespace detail {

// Whether a checkpoint tensor of dtype `have` may fill a network tensor of dtype `want`: floats
// of any precision convert to float32 (rounding to nearest, as PyTorch's copy_ does), integers
// of any width to int64 (counters); integers or bools where floats are expected, and floats
// where a counter is, are errors.
inline bool convertible(DType have, DType want) {
  return want == DType::float32 ? is_floating(have) : is_integral(have);
}

// "converted 62 float16 tensors to float32" for every kind of conversion made, in one line.
[[gnu::cold]] inline std::string conversion_note(const std::vector<std::pair<std::string, std::size_t>>& counts) {
  if (counts.empty()) return "";
  std::string s = "converted ";
  for (std::size_t i = 0; i < counts.size(); ++i)
    s += (i == 0 ? "" : i + 1 == counts.size() ? " and " : ", ") + std::to_string(counts[i].second) + " " +
         counts[i].first;
  return s + " (the network's dtypes), as PyTorch's load_state_dict does";
}

// load_state_dict on keys as they are: everything checked first, nothing changed unless all fit.
template <class Net>
[[gnu::cold]] LoadResult load_exact(Net& net, const StateDict& sd, bool strict, const std::string& source) {
  const auto slots = slots_of(net);
  std::vector<std::string> missing, unexpected, mismatched;
  std::unordered_map<std::string, const StateSlot*> by_name;
  std::vector<std::pair<std::string, std::size_t>> conversions;  // "float16 tensors to float32", count
  for (const auto& slot : slots) {
    by_name.emplace(slot.name, &slot);
    const Tensor* t = sd.find(slot.name);
    if (!t) {
      missing.push_back(slot.name);
    } else if (t->shape() != slot.shape || !convertible(t->dtype(), slot.dtype)) {
      std::string why = slot.name + ": checkpoint " + shape_string(t->shape()) + " " + dtype_name(t->dtype()) +
                        ", network " + shape_string(slot.shape) + " " + dtype_name(slot.dtype);
      if (slot.dtype == DType::float32 && !is_floating(t->dtype()))
        why += std::string(" (") + (t->dtype() == DType::boolean ? "bool" : is_integral(t->dtype()) ? "integer" : "complex") +
               " values where floats are expected)";
      mismatched.push_back(std::move(why));
    } else if (t->dtype() != slot.dtype) {
      const std::string kind = std::string(dtype_name(t->dtype())) + " tensors to " + dtype_name(slot.dtype);
      auto it = std::find_if(conversions.begin(), conversions.end(), [&](const auto& c) { return c.first == kind; });
      if (it == conversions.end()) conversions.emplace_back(kind, 1);
      else ++it->second;
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
  LoadResult r{std::move(missing), std::move(unexpected), "", {}};
  if (!conversions.empty()) r.notes.push_back(conversion_note(conversions));
  return r;
}

// `sd` with `prefix` taken off every key that starts with it (PyTorch's
// consume_prefix_in_state_dict_if_present); two keys becoming one is an error.
[[gnu::cold]] inline StateDict strip_prefix(const StateDict& sd, const std::string& prefix, const std::string& source,
                              std::vector<std::string>& notes) {
  StateDict out;
  std::size_t stripped = 0;
  for (const auto& [key, t] : sd) {
    const bool has = key.rfind(prefix, 0) == 0;
    const std::string name = has ? key.substr(prefix.size()) : key;
    if (out.contains(name))
      throw CheckpointError(source, "stripping the prefix '" + printable(prefix) + "' makes two keys '" + printable(name) +
                                        "': the checkpoint has the key with and without it");
    out.insert_or_assign(name, t);
    stripped += has;
  }
  notes.push_back(stripped ? "stripped the prefix '" + printable(prefix) + "' from " + std::to_string(stripped) + " of " +
                                 std::to_string(sd.size()) + " keys"
                           : "no key starts with '" + printable(prefix) + "': nothing stripped");
  return out;
}

}  // namespace detail

// model.load_state_dict(sd, strict): checks every key, shape and dtype against the network's
// own state first and changes nothing unless all fit. Strict (the default): any missing or
// unexpected key is an error too. Size mismatches, and integer or bool tensors where floats are
// expected, are errors either way; float16, bfloat16 and float64 tensors are converted to
// float32 and integer counters to int64, as in PyTorch (LoadResult::notes says so). Errors are
// StateDictMismatch (or CheckpointError), named by `source`. options.strip_prefix is taken off
// the keys first; options.checkpoint_key is for nested files (CheckpointContents) only.
template <HasState Net>
[[gnu::cold]] LoadResult load_state_dict(Net& net, const StateDict& sd, const LoadOptions& options,
                           const std::string& source = "state_dict") {
  if (!options.checkpoint_key.empty())
    throw CheckpointError(source, "a checkpoint key ('" + printable(options.checkpoint_key) +
                                      "') is given, but this is a state_dict already, not a nested checkpoint");
  if (options.strip_prefix.empty()) return detail::load_exact(net, sd, options.strict, source);
  std::vector<std::string> notes;
  const StateDict stripped = detail::strip_prefix(sd, options.strip_prefix, source, notes);
  LoadResult r = detail::load_exact(net, stripped, options.strict, source);
  r.notes.insert(r.notes.begin(), notes.begin(), notes.end());
  return r;
}

template <HasState Net>
[[gnu::cold]] LoadResult load_state_dict(Net& net, const StateDict& sd, bool strict = true, const std::string& source = "state_dict") {
  return load_state_dict(net, sd, LoadOptions{.strict = strict}, source);
}

namespace detail {
// ctnn-train's resume snapshot (<model>_resume.ckpt, written by Trainer) is a flat dictionary
// of tensors: the weights and buffers under "model.", Adam's moments under "optimizer.", the
// run's position under "trainer." (int64 scalars) and dropout counters under "dropout.". Its
// weights are what a user means when giving it to an evaluation or to --load, so they are
// taken from it (Adam's moments and the position belong to --resume, not to a load). Returns
// nothing for any other file; `note` says what was taken.
[[gnu::cold]] inline std::optional<StateDict> resume_snapshot_weights(const StateDict& sd, std::string& note) {
  const Tensor* steps = sd.find("trainer.total_steps");
  if (!steps || steps->dtype() != DType::int64 || steps->numel() != 1 || !sd.contains("optimizer.exp_avg"))
    return std::nullopt;
  StateDict weights;
  for (const auto& [key, t] : sd)
    if (key.rfind("model.", 0) == 0) weights.insert_or_assign(key.substr(6), t);
  if (weights.empty()) return std::nullopt;
  const Tensor* epoch = sd.find("trainer.epoch");
  const Tensor* batch = sd.find("trainer.batch");
  note = "a ctnn-train resume snapshot after step " + std::to_string(steps->int64s().front());
  if (epoch && batch && epoch->dtype() == DType::int64 && batch->dtype() == DType::int64 && epoch->numel() == 1 &&
      batch->numel() == 1)
    note += " (epoch " + std::to_string(epoch->int64s().front()) + ", " + std::to_string(batch->int64s().front()) +
            " batches into it)";
  note += ": loaded its weights (the model.* entries), not Adam's moments or the run's position (--resume takes those)";
  return weights;
}
}  // namespace detail

// model.load_state_dict(...) from whatever a checkpoint holds: a plain state_dict, or the one
// dictionary of tensors inside a nested checkpoint that fits the network (its keys, after
// options.strip_prefix, are the network's; failing that, the only one sharing any key with
// it), or the one options.checkpoint_key names. Anything else is a CheckpointError listing the
// dictionaries of tensors there are.
template <HasState Net>
[[gnu::cold]] LoadResult load_state_dict(Net& net, const CheckpointContents& contents, const LoadOptions& options = {}) {
  const std::string& file = contents.file;
  std::unordered_set<std::string> names;
  for (const auto& slot : detail::slots_of(net)) names.insert(slot.name);
  auto strip = [&](const std::string& key, const std::string& prefix) {
    return !prefix.empty() && key.rfind(prefix, 0) == 0 ? key.substr(prefix.size()) : key;
  };
  // How many of a dictionary's keys (after `prefix`) are the network's.
  auto shared_keys = [&](const StateDict& sd, const std::string& prefix) {
    std::size_t n = 0;
    for (const auto& [key, t] : sd) n += names.count(strip(key, prefix));
    return n;
  };
  auto describe = [&](const NestedStateDict& d) {
    std::string s = "'" + printable(d.key, 100) + "' (" + std::to_string(d.tensors.size()) + " tensors";
    const std::string wrapper = StateDictMismatch::wrapper_prefix(d.tensors.keys());
    if (options.strip_prefix.empty() && !wrapper.empty() && d.tensors.size() == names.size() &&
        shared_keys(d.tensors, wrapper) == names.size())
      s += "; the network's with --strip-prefix " + wrapper;
    return s + ")";
  };
  auto list = [&](const std::vector<const NestedStateDict*>& dicts) {
    std::string s;
    for (std::size_t i = 0; i < dicts.size() && i < 10; ++i) s += (i ? ", " : "") + describe(*dicts[i]);
    if (dicts.size() > 10) s += ", ... and " + std::to_string(dicts.size() - 10) + " more";
    return s;
  };
  std::vector<const NestedStateDict*> all;
  for (const auto& d : contents.state_dicts) all.push_back(&d);
  const std::string pick = "pick one with --checkpoint-key KEY (LoadOptions::checkpoint_key)";

  const NestedStateDict* chosen = nullptr;
  if (!options.checkpoint_key.empty()) {
    if (contents.plain)
      throw CheckpointError(file, "a plain state_dict, not a nested checkpoint: there is no '" +
                                      printable(options.checkpoint_key) + "' in it (load it without a checkpoint key)");
    chosen = contents.find(options.checkpoint_key);
    // Paths join keys with dots, so {'a.b': {...}, 'a': {'b': {...}}} holds two at 'a.b':
    // refused rather than the first one loaded.
    if (const auto same = std::count_if(all.begin(), all.end(), [&](const NestedStateDict* d) { return d->key == options.checkpoint_key; });
        same > 1)
      throw CheckpointError(file, "'" + printable(options.checkpoint_key) + "' is the path of " + std::to_string(same) +
                                      " dictionaries of tensors (keys with dots in them, and nested dictionaries, "
                                      "give the same path): ambiguous, not loaded");
    if (!chosen) {
      std::string what = "no dictionary of tensors at '" + printable(options.checkpoint_key) + "'";
      for (const auto& [key, kind] : contents.top_level)
        if (key == printable(options.checkpoint_key, 200)) what += " (it holds " + kind + ")";
      what += all.empty() ? "; the checkpoint holds no dictionary of tensors" : "; the checkpoint's are: " + list(all);
      throw CheckpointError(file, what);
    }
  } else if (contents.plain) {
    chosen = &contents.state_dicts.front();
  } else {
    std::vector<const NestedStateDict*> exact, overlapping;
    for (const auto* d : all) {
      const std::size_t shared = shared_keys(d->tensors, options.strip_prefix);
      if (shared == names.size() && d->tensors.size() == names.size()) exact.push_back(d);
      if (shared > 0) overlapping.push_back(d);
    }
    const auto& matches = !exact.empty() ? exact : overlapping;
    if (matches.size() == 1) {
      chosen = matches.front();
    } else if (matches.size() > 1) {
      throw CheckpointError(file, std::to_string(matches.size()) + " dictionaries of tensors in it " +
                                      (exact.empty() ? "share keys with" : "match") + " the network: " + list(matches) +
                                      ": " + pick);
    } else {
      std::string what = contents.not_plain;
      if (all.empty()) {
        what += ", and it holds no dictionary of tensors: not a checkpoint of a network's weights";
      } else {
        what += "; no dictionary of tensors in it has any of the network's " + std::to_string(names.size()) +
                " keys" + (options.strip_prefix.empty() ? "" : " after stripping '" + printable(options.strip_prefix) + "'") +
                ": " + list(all) + ": " + pick + (options.strip_prefix.empty() ? " and --strip-prefix if needed" : "");
      }
      throw CheckpointError(file, what);
    }
  }

  LoadOptions inner = options;
  inner.checkpoint_key.clear();
  const std::string source = chosen->key.empty() ? file : file + ", '" + printable(chosen->key, 100) + "'";
  if (contents.plain && options.checkpoint_key.empty()) {
    std::string note;
    if (auto weights = detail::resume_snapshot_weights(chosen->tensors, note)) {
      LoadResult r = load_state_dict(net, *weights, inner, file + " (its model.* entries)");
      r.notes.insert(r.notes.begin(), note);
      return r;
    }
  }
  LoadResult r = load_state_dict(net, chosen->tensors, inner, source);
  r.checkpoint_key = chosen->key;
  if (!chosen->key.empty()) r.notes.insert(r.notes.begin(), "using '" + printable(chosen->key, 100) + "'");
  return r;
}

// model.load_state_dict(torch.load(file, weights_only=True)[...]), as above.
template <HasState Net>
[[gnu::cold]] LoadResult load_state_dict(Net& net, const std::filesystem::path& file, const LoadOptions& options) {
  return load_state_dict(net, read_checkpoint_contents(file), options);
}

// model.load_state_dict(torch.load(file), strict).
template <HasState Net>
[[gnu::cold]] LoadResult load_state_dict(Net& net, const std::filesystem::path& file, bool strict = true) {
  return load_state_dict(net, file, LoadOptions{.strict = strict});
}

// torch.save(model.state_dict(), file), atomically.
template <HasState Net>
void save_state_dict(Net& net, const std::filesystem::path& file) {
  write_checkpoint(file, state_dict(net));
}

}  // namespace ctnn::io
