// Checkpoints with more than a state_dict in them, built without PyTorch: what
// torch.save(obj, path) writes for an obj of dicts, lists, tuples, numbers, strings, None and
// tensors of any dtype (the tutorials' {'epoch': 3, 'model_state_dict': ..., ...}). For the tests
// and the fuzzers' seed corpus; ctnn itself only writes plain state_dicts.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ctnn/io/torch_checkpoint.hpp"

namespace ctnn::test {

// A Python value to pickle.
struct PyValue {
  enum class Kind { none, boolean, integer, floating, string, tensor, list, tuple, dict, ordered_dict };
  Kind kind = Kind::none;
  std::int64_t integer = 0;  // boolean, integer
  double floating = 0.0;
  std::string text;
  io::Tensor tensor;
  std::vector<PyValue> items;  // list, tuple; dicts: key, value, key, value, ...

  static PyValue none() { return {}; }
  static PyValue boolean(bool b) { return with(Kind::boolean, [&](PyValue& v) { v.integer = b; }); }
  static PyValue integer_value(std::int64_t i) { return with(Kind::integer, [&](PyValue& v) { v.integer = i; }); }
  static PyValue floating_value(double d) { return with(Kind::floating, [&](PyValue& v) { v.floating = d; }); }
  static PyValue string(std::string s) { return with(Kind::string, [&](PyValue& v) { v.text = std::move(s); }); }
  static PyValue tensor_value(io::Tensor t) { return with(Kind::tensor, [&](PyValue& v) { v.tensor = std::move(t); }); }
  static PyValue list(std::vector<PyValue> items) { return container(Kind::list, std::move(items)); }
  static PyValue tuple(std::vector<PyValue> items) { return container(Kind::tuple, std::move(items)); }
  // A dict from alternating keys and values.
  static PyValue dict(std::vector<PyValue> pairs) { return container(Kind::dict, std::move(pairs)); }
  // The OrderedDict model.state_dict() returns.
  static PyValue state_dict(const io::StateDict& sd) {
    std::vector<PyValue> pairs;
    for (const auto& [key, t] : sd) {
      pairs.push_back(string(key));
      pairs.push_back(tensor_value(t));
    }
    return container(Kind::ordered_dict, std::move(pairs));
  }

 private:
  template <class F>
  static PyValue with(Kind k, F&& f) {
    PyValue v;
    v.kind = k;
    f(v);
    return v;
  }
  static PyValue container(Kind k, std::vector<PyValue> items) {
    PyValue v;
    v.kind = k;
    v.items = std::move(items);
    return v;
  }
};

// The persistent id torch.save pickles for a tensor's storage, ('storage', torch.<type>, key,
// device, numel), loaded by BINPERSID: the first argument of _rebuild_tensor(_v2).
inline void storage_reference(io::pickle::Writer& w, const std::string& type, const std::string& key,
                              const std::string& device, std::int64_t numel) {
  w.op('(');
  w.string("storage");
  w.global("torch", type);
  w.string(key);
  w.string(device);
  w.integer(numel);
  w.op('t');
  w.op('Q');
}

// torch.save(value): protocol 2 opcodes, each tensor contiguous in a storage record of its own
// dtype, little-endian; records data.pkl, data/0..N-1, version under `prefix`.
inline std::vector<std::uint8_t> nested_checkpoint(const PyValue& root, const std::string& prefix = "archive") {
  io::pickle::Writer w;
  std::vector<const io::Tensor*> tensors;
  struct Emit {
    io::pickle::Writer& w;
    std::vector<const io::Tensor*>& tensors;
    void operator()(const PyValue& v) {
      using K = PyValue::Kind;
      switch (v.kind) {
        case K::none: w.op('N'); break;
        case K::boolean: w.op(v.integer ? 0x88 : 0x89); break;
        case K::integer: w.integer(v.integer); break;
        case K::floating: w.floating(v.floating); break;
        case K::string: w.string(v.text); break;
        case K::tensor: {
          const io::Tensor& t = v.tensor;
          w.global("torch._utils", "_rebuild_tensor_v2");
          w.op('(');
          storage_reference(w, io::detail::info(t.dtype()).storage, std::to_string(tensors.size()), "cpu",
                            static_cast<std::int64_t>(t.numel()));
          w.integer(0);
          ints(t.shape());
          ints(io::contiguous_strides(t.shape()));
          w.op(0x89);
          w.global("collections", "OrderedDict");
          w.op(')');
          w.op('R');
          w.op('t');
          w.op('R');
          tensors.push_back(&t);
          break;
        }
        case K::list:
          w.op(']');
          if (!v.items.empty()) {
            w.op('(');
            for (const auto& item : v.items) (*this)(item);
            w.op('e');
          }
          break;
        case K::tuple:
          w.op('(');
          for (const auto& item : v.items) (*this)(item);
          w.op('t');
          break;
        case K::dict:
        case K::ordered_dict:
          if (v.kind == K::dict) {
            w.op('}');
          } else {
            w.global("collections", "OrderedDict");
            w.op(')');
            w.op('R');
          }
          if (!v.items.empty()) {
            w.op('(');
            for (const auto& item : v.items) (*this)(item);
            w.op('u');
          }
          break;
      }
    }
    void ints(const TensorShape& values) {
      w.op('(');
      for (auto x : values) w.integer(x);
      w.op('t');
    }
  };
  w.proto();
  Emit{w, tensors}(root);
  w.op('.');

  std::vector<std::uint8_t> out;
  io::ZipWriter zip([&](const std::uint8_t* p, std::size_t n) { out.insert(out.end(), p, p + n); }, "nested");
  zip.add(prefix + "/data.pkl", w.bytes);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    std::vector<std::uint8_t> data = tensors[i]->raw_elements();
    if constexpr (std::endian::native == std::endian::big) {
      const std::size_t es = io::element_size(tensors[i]->dtype());
      for (std::size_t k = 0; k < data.size(); k += es) std::reverse(data.begin() + k, data.begin() + k + es);
    }
    zip.add(prefix + "/data/" + std::to_string(i), data);
  }
  const std::string version = "3\n";
  zip.add(prefix + "/version", io::Bytes(reinterpret_cast<const std::uint8_t*>(version.data()), version.size()));
  zip.finish();
  return out;
}

// The same tensors under other names: each key with `prefix` put before it.
inline io::StateDict with_prefix(const io::StateDict& sd, const std::string& prefix) {
  io::StateDict out;
  for (const auto& [key, t] : sd) out.insert_or_assign(prefix + key, t);
  return out;
}

// Every tensor of `sd` in `dtype`: floats through `to_float` (raw little-endian element bytes
// from a float), other tensors as they are.
template <class Convert>
io::StateDict floats_as(const io::StateDict& sd, io::DType dtype, Convert&& convert) {
  io::StateDict out;
  for (const auto& [key, t] : sd) {
    if (t.dtype() != io::DType::float32) {
      out.insert_or_assign(key, t);
      continue;
    }
    std::vector<std::uint8_t> bytes;
    for (float f : t.floats()) {
      const auto raw = convert(f);
      bytes.insert(bytes.end(), raw.begin(), raw.end());
    }
    out.insert_or_assign(key, io::Tensor::from_little_endian(dtype, t.shape(), bytes));
  }
  return out;
}

}  // namespace ctnn::test
