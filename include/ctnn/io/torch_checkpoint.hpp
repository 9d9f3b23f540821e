// PyTorch checkpoints without libtorch: what torch.save(model.state_dict(), path) writes, read
// into a StateDict of tensors, and StateDicts written so that torch.load(path, weights_only=True)
// takes them.
//
// Format (PyTorch >= 1.6, any archive prefix): a zip of STORED records `<prefix>/data.pkl` (a
// pickle of an OrderedDict from key to tensor), `<prefix>/data/<key>` (the raw bytes of each
// storage) and `<prefix>/version`. Each tensor is `_rebuild_tensor_v2(storage, offset, size,
// stride, ...)`; the storage comes from a persistent id naming its record, dtype and length.
// Reading keeps the file in memory and tensors as checked views into it (offset, size and
// stride lie inside the storage); values are copied out on demand. float32 and int64 only.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ctnn/core/state.hpp"
#include "ctnn/io/error.hpp"
#include "ctnn/io/file.hpp"
#include "ctnn/io/pickle.hpp"
#include "ctnn/io/zip.hpp"

namespace ctnn::io {

enum class DType : std::uint8_t { float32, int64 };
inline std::size_t element_size(DType d) { return d == DType::float32 ? 4 : 8; }
inline const char* dtype_name(DType d) { return d == DType::float32 ? "float32" : "int64"; }
template <class T>
inline constexpr DType dtype_of = std::is_same_v<T, float> ? DType::float32 : DType::int64;

// The bytes of one storage: `numel` elements of `dtype`, little- or big-endian, inside a buffer
// that is either the whole checkpoint file or the storage's own.
struct Storage {
  DType dtype = DType::float32;
  std::size_t numel = 0;
  bool little_endian = true;
  std::shared_ptr<const std::vector<std::uint8_t>> buffer;
  std::size_t begin = 0;  // first byte within *buffer
  const std::uint8_t* data() const { return buffer->data() + begin; }
};

inline std::string shape_string(const TensorShape& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// The strides of a row-major (C-contiguous) tensor of this shape, in elements.
inline TensorShape contiguous_strides(const TensorShape& shape) {
  TensorShape stride(shape.size());
  std::int64_t step = 1;
  for (std::size_t d = shape.size(); d-- > 0;) {
    stride[d] = step;
    step *= shape[d];
  }
  return stride;
}

// A strided view of a storage, as PyTorch describes a tensor.
class Tensor {
 public:
  Tensor() = default;

  // Why (offset, shape, stride) does not describe a view inside `storage`, or "" if it does:
  // no negative numbers, no overflow, and every element's index below storage.numel.
  static std::string check_view(const Storage& storage, std::int64_t offset, const TensorShape& shape,
                                const TensorShape& stride) {
    if (shape.size() != stride.size())
      return "size " + shape_string(shape) + " and stride " + shape_string(stride) + " differ in length";
    if (shape.size() > 64) return "more than 64 dimensions";
    constexpr std::uint64_t limit = std::uint64_t{1} << 62;
    if (offset < 0 || static_cast<std::uint64_t>(offset) > limit)
      return "storage offset " + std::to_string(offset) + " is out of range";
    std::uint64_t numel = 1, last = static_cast<std::uint64_t>(offset);
    for (std::size_t d = 0; d < shape.size(); ++d) {
      if (shape[d] < 0 || stride[d] < 0)
        return "negative size or stride: size " + shape_string(shape) + ", stride " + shape_string(stride);
      const auto n = static_cast<std::uint64_t>(shape[d]), s = static_cast<std::uint64_t>(stride[d]);
      if (n > limit || s > limit || (n > 0 && numel > limit / n)) return "size " + shape_string(shape) + " is too large";
      numel *= n;
      if (n > 1 && s > (limit - last) / (n - 1)) return "stride " + shape_string(stride) + " is too large";
      if (n > 0) last += (n - 1) * s;
    }
    if (numel == 0) {
      if (static_cast<std::uint64_t>(offset) > storage.numel)
        return "storage offset " + std::to_string(offset) + " is past the end of its storage of " +
               std::to_string(storage.numel) + " elements";
      return "";
    }
    if (last >= storage.numel)
      return "size " + shape_string(shape) + ", stride " + shape_string(stride) + " at offset " +
             std::to_string(offset) + " reaches element " + std::to_string(last) + " of a storage of only " +
             std::to_string(storage.numel) + " elements";
    return "";
  }

  // A view of `storage`; throws std::invalid_argument unless check_view() accepts it.
  static Tensor view(std::shared_ptr<const Storage> storage, std::int64_t offset, TensorShape shape,
                     TensorShape stride) {
    const std::string problem = check_view(*storage, offset, shape, stride);
    if (!problem.empty()) throw std::invalid_argument("ctnn::io::Tensor::view: " + problem);
    Tensor t;
    t.storage_ = std::move(storage);
    t.offset_ = offset;
    t.shape_ = std::move(shape);
    t.stride_ = std::move(stride);
    return t;
  }

  // A contiguous tensor owning a copy of `values` (numel(shape) of them).
  template <class T>
  static Tensor from_values(TensorShape shape, std::span<const T> values) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, std::int64_t>, "float32 or int64 tensors only");
    if (values.size() != ctnn::numel(shape))
      throw std::invalid_argument("ctnn::io::Tensor: " + std::to_string(values.size()) + " values for shape " +
                                  shape_string(shape));
    auto s = std::make_shared<Storage>();
    s->dtype = dtype_of<T>;
    s->numel = values.size();
    s->little_endian = std::endian::native == std::endian::little;
    auto buffer = std::make_shared<std::vector<std::uint8_t>>(values.size() * sizeof(T));
    if (!values.empty()) std::memcpy(buffer->data(), values.data(), buffer->size());
    s->buffer = std::move(buffer);
    TensorShape stride = contiguous_strides(shape);
    return view(std::move(s), 0, std::move(shape), std::move(stride));
  }
  static Tensor from_floats(TensorShape shape, std::span<const float> values) {
    return from_values<float>(std::move(shape), values);
  }
  static Tensor from_int64(TensorShape shape, std::span<const std::int64_t> values) {
    return from_values<std::int64_t>(std::move(shape), values);
  }
  static Tensor scalar_int64(std::int64_t v) { return from_values<std::int64_t>({}, std::span<const std::int64_t>(&v, 1)); }

  DType dtype() const { return storage_->dtype; }
  const TensorShape& shape() const { return shape_; }
  const TensorShape& stride() const { return stride_; }
  std::int64_t storage_offset() const { return offset_; }
  const Storage& storage() const { return *storage_; }
  std::size_t numel() const { return ctnn::numel(shape_); }
  bool is_contiguous() const {
    std::int64_t step = 1;
    for (std::size_t d = shape_.size(); d-- > 0;) {
      if (shape_[d] != 1 && stride_[d] != step) return false;
      step *= shape_[d];
    }
    return true;
  }

  // The values in row-major (C) order, into `dst` of exactly numel() elements of the tensor's
  // own dtype; throws std::invalid_argument otherwise.
  void copy_to(std::span<float> dst) const { gather(dst); }
  void copy_to(std::span<std::int64_t> dst) const { gather(dst); }
  std::vector<float> floats() const {
    std::vector<float> v(numel());
    gather(std::span<float>(v));
    return v;
  }
  std::vector<std::int64_t> int64s() const {
    std::vector<std::int64_t> v(numel());
    gather(std::span<std::int64_t>(v));
    return v;
  }

 private:
  template <class T>
  void gather(std::span<T> dst) const {
    if (!storage_) throw std::invalid_argument("ctnn::io::Tensor: empty tensor handle");
    if (dtype_of<T> != dtype())
      throw std::invalid_argument(std::string("ctnn::io::Tensor: a ") + dtype_name(dtype()) + " tensor read as " +
                                  dtype_name(dtype_of<T>));
    const std::size_t n = numel();
    if (dst.size() != n)
      throw std::invalid_argument("ctnn::io::Tensor: destination of " + std::to_string(dst.size()) +
                                  " elements for a tensor of " + std::to_string(n));
    if (n == 0) return;
    const std::uint8_t* base = storage_->data();
    const bool swap = storage_->little_endian != (std::endian::native == std::endian::little);
    if (!swap && is_contiguous()) {
      std::memcpy(dst.data(), base + static_cast<std::size_t>(offset_) * sizeof(T), n * sizeof(T));
      return;
    }
    auto load = [&](std::int64_t element) {
      const std::uint8_t* p = base + static_cast<std::size_t>(element) * sizeof(T);
      std::uint8_t raw[sizeof(T)];
      for (std::size_t k = 0; k < sizeof(T); ++k) raw[k] = swap ? p[sizeof(T) - 1 - k] : p[k];
      T v;
      std::memcpy(&v, raw, sizeof(T));
      return v;
    };
    // Walk the multi-index in row-major order, moving the storage position by the strides.
    const std::size_t nd = shape_.size();
    std::vector<std::int64_t> index(nd, 0);
    std::int64_t pos = offset_;
    for (std::size_t i = 0; i < n; ++i) {
      dst[i] = load(pos);
      for (std::size_t d = nd; d-- > 0;) {
        if (++index[d] < shape_[d]) {
          pos += stride_[d];
          break;
        }
        pos -= stride_[d] * (shape_[d] - 1);
        index[d] = 0;
      }
    }
  }

  std::shared_ptr<const Storage> storage_;
  std::int64_t offset_ = 0;
  TensorShape shape_, stride_;
};

// Same dtype, shape and values, bit for bit (a NaN equals the same NaN): what a round trip
// through a checkpoint must preserve.
inline bool identical(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  if (a.dtype() == DType::int64) return a.int64s() == b.int64s();
  const std::vector<float> x = a.floats(), y = b.floats();
  return x.empty() || std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// Key -> tensor, in insertion order (PyTorch's OrderedDict). Assigning an existing key replaces
// its tensor and keeps its position, as a Python dict does.
class StateDict {
 public:
  using Item = std::pair<std::string, Tensor>;

  void insert_or_assign(const std::string& key, Tensor t) {
    auto [it, fresh] = index_.emplace(key, items_.size());
    if (fresh) items_.emplace_back(key, std::move(t));
    else items_[it->second].second = std::move(t);
  }
  const Tensor* find(const std::string& key) const {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &items_[it->second].second;
  }
  bool contains(const std::string& key) const { return index_.count(key) != 0; }
  const Tensor& at(const std::string& key) const {
    if (const Tensor* t = find(key)) return *t;
    throw std::out_of_range("ctnn::io::StateDict: no key '" + printable(key) + "'");
  }
  std::size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }
  std::vector<std::string> keys() const {
    std::vector<std::string> k;
    k.reserve(items_.size());
    for (const auto& item : items_) k.push_back(item.first);
    return k;
  }

 private:
  std::vector<Item> items_;
  std::unordered_map<std::string, std::size_t> index_;
};

struct ReadOptions {
  bool verify_crc = true;  // check every record read against its CRC-32
};

namespace detail {

// What data.pkl's GLOBAL, BINPERSID and REDUCE may mean in a state_dict: an OrderedDict, storages
// (from persistent ids naming a record), tensors rebuilt from a storage, and parameters wrapping
// a tensor. Nothing else is accepted.
class TorchHooks : public pickle::Hooks {
 public:
  TorchHooks(const ZipReader& zip, std::string prefix, std::shared_ptr<const std::vector<std::uint8_t>> buffer,
             bool little_endian, bool verify_crc)
      : zip_(zip), prefix_(std::move(prefix)), buffer_(std::move(buffer)), little_endian_(little_endian),
        verify_crc_(verify_crc) {}

  // Object values carry (index << 1) | tag.
  static constexpr std::int64_t kStorageTag = 0, kTensorTag = 1;
  bool is_tensor(const pickle::Value& v) const {
    return v.kind == pickle::Value::Kind::object && (v.integer & 1) == kTensorTag;
  }
  const Tensor& tensor(const pickle::Value& v) const { return tensors_[static_cast<std::size_t>(v.integer >> 1)]; }

  void check_global(pickle::Unpickler& u, const std::string& module, const std::string& name) override {
    if (module == "collections" && name == "OrderedDict") return;
    if (module == "torch._utils" &&
        (name == "_rebuild_tensor_v2" || name == "_rebuild_parameter" || name == "_rebuild_parameter_with_state"))
      return;
    if (module == "torch" && name.size() > 7 && name.compare(name.size() - 7, 7, "Storage") == 0) return;
    u.fail("refers to the Python object '" + printable(module + "." + name) +
           "', which a state_dict of tensors does not contain: ctnn reads files saved with "
           "torch.save(model.state_dict(), path), not pickled models or other objects");
  }

  pickle::Ref persistent_load(pickle::Unpickler& u, pickle::Ref pid) override {
    using K = pickle::Value::Kind;
    const pickle::Value& id = u.at(pid);
    if (id.kind != K::tuple || id.items.size() != 5 || u.at(id.items[0]).kind != K::string ||
        u.at(id.items[0]).text != "storage")
      u.fail("persistent id is not a ('storage', type, key, location, numel) tuple");
    const pickle::Value &type = u.at(id.items[1]), &count = u.at(id.items[4]);
    if (type.kind != K::global || u.at(id.items[2]).kind != K::string || u.at(id.items[3]).kind != K::string ||
        count.kind != K::integer || count.integer < 0)
      u.fail("malformed storage persistent id");
    const std::string key = u.at(id.items[2]).text;
    DType dtype;
    if (type.text == "torch.FloatStorage") dtype = DType::float32;
    else if (type.text == "torch.LongStorage") dtype = DType::int64;
    else u.fail("storage '" + printable(key) + "' has type " + printable(type.text) + ": ctnn reads float32 and int64 tensors only");
    const auto numel = static_cast<std::uint64_t>(count.integer);

    auto cached = storage_index_.find(key);
    if (cached != storage_index_.end()) {
      const Storage& s = *storages_[cached->second];
      if (s.dtype != dtype || s.numel != numel) u.fail("storage '" + printable(key) + "' is declared twice, differently");
      return object(u, cached->second, kStorageTag);
    }
    const std::string record = prefix_ + "/data/" + key;
    const ZipEntry* entry = zip_.find(record);
    if (!entry) u.fail("storage record '" + printable(record) + "' is missing from the archive");
    const std::size_t es = element_size(dtype);
    if (numel > entry->size / es)
      u.fail("storage record '" + printable(record) + "' holds " + std::to_string(entry->size) + " bytes, fewer than the " +
             std::to_string(numel) + " " + dtype_name(dtype) + " elements the pickle declares: truncated or corrupt");
    zip_.read(*entry, verify_crc_);
    auto s = std::make_shared<Storage>();
    s->dtype = dtype;
    s->numel = static_cast<std::size_t>(numel);
    s->little_endian = little_endian_;
    s->buffer = buffer_;
    s->begin = static_cast<std::size_t>(entry->data_offset);
    storage_index_.emplace(key, storages_.size());
    storages_.push_back(std::move(s));
    return object(u, storages_.size() - 1, kStorageTag);
  }

  pickle::Ref reduce(pickle::Unpickler& u, pickle::Ref callable, pickle::Ref args_ref) override {
    using K = pickle::Value::Kind;
    const std::string f = u.at(callable).text;
    const std::vector<pickle::Ref> args = u.at(args_ref).items;
    if (f == "collections.OrderedDict") {
      if (!args.empty()) u.fail("OrderedDict built with arguments");
      pickle::Value d;
      d.kind = K::dict;
      return u.add(std::move(d));
    }
    if (f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state") {
      if (args.size() != (f == "torch._utils._rebuild_parameter" ? 3u : 4u) || !is_tensor(u.at(args[0])))
        u.fail(printable(f) + " with unexpected arguments");
      return args[0];
    }
    if (f == "torch._utils._rebuild_tensor_v2") {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (args.size() != 6 && args.size() != 7) u.fail("_rebuild_tensor_v2 with " + std::to_string(args.size()) + " arguments");
      const pickle::Value& s = u.at(args[0]);
      if (s.kind != K::object || (s.integer & 1) != kStorageTag) u.fail("_rebuild_tensor_v2 without a storage");
      const pickle::Value& offset = u.at(args[1]);
      if (offset.kind != K::integer) u.fail("_rebuild_tensor_v2: storage offset is not an int");
      const TensorShape shape = int_tuple(u, args[2], "size"), stride = int_tuple(u, args[3], "stride");
      const auto& storage = storages_[static_cast<std::size_t>(s.integer >> 1)];
      const std::string problem = Tensor::check_view(*storage, offset.integer, shape, stride);
      if (!problem.empty()) u.fail("tensor does not fit its storage: " + problem);
      tensors_.push_back(Tensor::view(storage, offset.integer, shape, stride));
      return object(u, tensors_.size() - 1, kTensorTag);
    }
    u.fail("calling '" + printable(f) + "' is not part of a state_dict");
  }

 private:
  static pickle::Ref object(pickle::Unpickler& u, std::size_t index, std::int64_t tag) {
    pickle::Value v;
    v.kind = pickle::Value::Kind::object;
    v.integer = static_cast<std::int64_t>(index) << 1 | tag;
    return u.add(std::move(v));
  }
  static TensorShape int_tuple(pickle::Unpickler& u, pickle::Ref r, const char* what) {
    const pickle::Value& t = u.at(r);
    if (t.kind != pickle::Value::Kind::tuple) u.fail(std::string("_rebuild_tensor_v2: ") + what + " is not a tuple");
    TensorShape out;
    for (pickle::Ref item : t.items) {
      if (u.at(item).kind != pickle::Value::Kind::integer)
        u.fail(std::string("_rebuild_tensor_v2: ") + what + " holds a non-integer");
      out.push_back(u.at(item).integer);
    }
    return out;
  }

  const ZipReader& zip_;
  std::string prefix_;
  std::shared_ptr<const std::vector<std::uint8_t>> buffer_;
  bool little_endian_, verify_crc_;
  std::vector<std::shared_ptr<const Storage>> storages_;
  std::unordered_map<std::string, std::size_t> storage_index_;
  std::vector<Tensor> tensors_;
};

inline std::string text_of(Bytes b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

inline std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace detail

// Reads a checkpoint held in memory; `file` names it in errors.
inline StateDict parse_checkpoint(std::shared_ptr<const std::vector<std::uint8_t>> buffer, const std::string& file,
                                  ReadOptions options = {}) {
  const std::vector<std::uint8_t>& b = *buffer;
  auto starts_with = [&](std::initializer_list<std::uint8_t> sig) {
    return b.size() >= sig.size() && std::equal(sig.begin(), sig.end(), b.begin());
  };
  if (b.empty()) throw CheckpointError(file, "empty file");
  if (!starts_with({'P', 'K', 3, 4})) {
    // torch.save's legacy stream opens with the pickled magic number 0x1950a86a20f9469cfc6c.
    if (starts_with({0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19}))
      throw CheckpointError(file,
                            "a legacy PyTorch checkpoint (PyTorch < 1.6, or saved with "
                            "_use_new_zipfile_serialization=False); ctnn reads the zip format of PyTorch >= 1.6: "
                            "re-save it in Python with torch.save(torch.load(path), new_path)");
    if (starts_with({'P', 'K', 5, 6})) throw CheckpointError(file, "an empty zip archive, not a PyTorch checkpoint");
    if (b[0] == 0x80) throw CheckpointError(file, "a bare pickle, not a PyTorch checkpoint (no zip container)");
    throw CheckpointError(file, "not a PyTorch checkpoint: it does not start with a zip signature");
  }

  const ZipReader zip(Bytes(b), file);
  if (zip.entries().empty()) throw CheckpointError(file, "an empty zip archive, not a PyTorch checkpoint");
  const std::string& first = zip.entries().front().name;
  const auto slash = first.find('/');
  if (slash == std::string::npos || slash == 0)
    throw CheckpointError(file, "zip entry '" + printable(first) + "' is not inside an archive directory: not a PyTorch checkpoint");
  const std::string prefix = first.substr(0, slash);

  if (zip.find(prefix + "/constants.pkl"))
    throw CheckpointError(file,
                          "a TorchScript archive (torch.jit.save), not a state_dict: in Python, save "
                          "torch.jit.load(path).state_dict() with torch.save and read that");
  const ZipEntry* version = zip.find(prefix + "/version");
  if (!version) throw CheckpointError(file, "no '" + printable(prefix + "/version") + "' record: not a PyTorch checkpoint");
  const std::string v = detail::trimmed(detail::text_of(zip.read(*version, options.verify_crc)));
  if (v.empty() || v.size() > 2 || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(v) < 1 || std::stoi(v) > 10)
    throw CheckpointError(file, "unsupported archive version '" + printable(v) + "' (1 to 10 are read)");
  bool little_endian = true;
  if (const ZipEntry* order = zip.find(prefix + "/byteorder")) {
    const std::string o = detail::trimmed(detail::text_of(zip.read(*order, options.verify_crc)));
    if (o != "little" && o != "big") throw CheckpointError(file, "byteorder record says '" + printable(o) + "'");
    little_endian = o == "little";
  }
  const ZipEntry* pkl = zip.find(prefix + "/data.pkl");
  if (!pkl) throw CheckpointError(file, "no '" + printable(prefix + "/data.pkl") + "' record: not a PyTorch checkpoint");

  detail::TorchHooks hooks(zip, prefix, buffer, little_endian, options.verify_crc);
  pickle::Unpickler u(zip.read(*pkl, options.verify_crc), file, "data.pkl", hooks);
  const pickle::Value& root = u.at(u.run());
  if (root.kind != pickle::Value::Kind::dict)
    throw CheckpointError(file, "data.pkl holds " + pickle::a_kind(root.kind) + ", not a state_dict (a dict of tensors)");
  StateDict sd;
  for (std::size_t i = 0; i + 1 < root.items.size(); i += 2) {
    const pickle::Value& key = u.at(root.items[i]);
    const pickle::Value& value = u.at(root.items[i + 1]);
    if (key.kind != pickle::Value::Kind::string)
      throw CheckpointError(file, "data.pkl: a state_dict key is " + pickle::a_kind(key.kind) + ", not a str");
    if (!hooks.is_tensor(value))
      throw CheckpointError(file, "data.pkl: the value of '" + printable(key.text) + "' is " + pickle::a_kind(value.kind) +
                                      ", not a tensor: ctnn reads state_dicts (torch.save(model.state_dict(), path))");
    // A state_dict pickles each key once. A repeated one is refused rather than overwritten: one
    // memoized key set again for every 5 bytes of pickle would cost a hash of the whole key each
    // time (time quadratic in the input).
    if (sd.contains(key.text))
      throw CheckpointError(file, "data.pkl: the state_dict key '" + printable(key.text) + "' appears twice: corrupt");
    sd.insert_or_assign(key.text, hooks.tensor(value));
  }
  return sd;
}

inline StateDict parse_checkpoint(Bytes bytes, const std::string& file, ReadOptions options = {}) {
  return parse_checkpoint(std::make_shared<const std::vector<std::uint8_t>>(bytes.begin(), bytes.end()), file, options);
}

// torch.load(path) for a state_dict.
inline StateDict read_checkpoint(const std::filesystem::path& path, ReadOptions options = {}) {
  return parse_checkpoint(std::make_shared<const std::vector<std::uint8_t>>(read_file(path)), path.string(), options);
}

// Streams `sd` as a PyTorch checkpoint: records `<prefix>/data.pkl`, `<prefix>/byteorder`,
// `<prefix>/data/0..N-1` (each tensor contiguous, in its own storage, little-endian) and
// `<prefix>/version`. `file` names the destination in errors.
inline void write_checkpoint(const StateDict& sd, const ByteSink& sink, const std::string& file,
                             const std::string& prefix = "archive") {
  pickle::Writer w;
  std::uint32_t memo = 0;
  std::unordered_map<std::string, std::uint32_t> memoized;
  // The first use of a global or string stores it in the memo; later uses fetch it.
  auto once = [&](const std::string& tag, auto&& emit) {
    auto it = memoized.find(tag);
    if (it != memoized.end()) return w.get(it->second);
    emit();
    w.put(memo);
    memoized.emplace(tag, memo++);
  };
  auto int_tuple = [&](const TensorShape& values) {
    w.tuple_begin(values.size());
    for (auto v : values) w.integer(v);
    w.tuple_end(values.size());
  };
  auto empty_ordered_dict = [&] {
    once("OrderedDict", [&] { w.global("collections", "OrderedDict"); });
    w.op(')');
    w.op('R');
  };

  w.proto();
  empty_ordered_dict();
  std::size_t index = 0;
  for (std::size_t batch = 0; batch < sd.size(); batch += 1000) {  // pickle's SETITEMS batches
    const std::size_t n = std::min<std::size_t>(1000, sd.size() - batch);
    if (n > 1) w.op('(');
    for (std::size_t i = 0; i < n; ++i, ++index) {
      const auto& [key, t] = *(sd.begin() + static_cast<std::ptrdiff_t>(index));
      w.string(key);
      once("_rebuild_tensor_v2", [&] { w.global("torch._utils", "_rebuild_tensor_v2"); });
      w.op('(');
      w.tuple_begin(5);  // the persistent id
      once("'storage'", [&] { w.string("storage"); });
      if (t.dtype() == DType::float32) once("FloatStorage", [&] { w.global("torch", "FloatStorage"); });
      else once("LongStorage", [&] { w.global("torch", "LongStorage"); });
      w.string(std::to_string(index));
      once("'cpu'", [&] { w.string("cpu"); });
      w.integer(static_cast<std::int64_t>(t.numel()));
      w.tuple_end(5);
      w.op('Q');
      w.integer(0);
      int_tuple(t.shape());
      int_tuple(contiguous_strides(t.shape()));
      w.op(0x89);  // requires_grad = False
      empty_ordered_dict();  // backward_hooks
      w.op('t');
      w.op('R');
    }
    w.op(n > 1 ? 'u' : 's');
  }
  w.op('.');

  ZipWriter zip(sink, file);
  zip.add(prefix + "/data.pkl", w.bytes);
  const std::string order = "little";
  zip.add(prefix + "/byteorder", Bytes(reinterpret_cast<const std::uint8_t*>(order.data()), order.size()));
  std::vector<std::uint8_t> data;
  index = 0;
  for (const auto& [key, t] : sd) {
    data.resize(t.numel() * element_size(t.dtype()));
    if (t.dtype() == DType::float32) t.copy_to(std::span<float>(reinterpret_cast<float*>(data.data()), t.numel()));
    else t.copy_to(std::span<std::int64_t>(reinterpret_cast<std::int64_t*>(data.data()), t.numel()));
    if constexpr (std::endian::native == std::endian::big) {
      const std::size_t es = element_size(t.dtype());
      for (std::size_t i = 0; i < data.size(); i += es) std::reverse(data.begin() + i, data.begin() + i + es);
    }
    zip.add(prefix + "/data/" + std::to_string(index++), data);
  }
  const std::string version = "3\n";
  zip.add(prefix + "/version", Bytes(reinterpret_cast<const std::uint8_t*>(version.data()), version.size()));
  zip.finish();
}

// The checkpoint file in memory.
inline std::vector<std::uint8_t> serialize_checkpoint(const StateDict& sd, const std::string& prefix = "archive") {
  std::vector<std::uint8_t> out;
  std::size_t estimate = 4096;  // the pickle, headers and central directory, roughly
  for (const auto& [key, t] : sd) estimate += t.numel() * element_size(t.dtype()) + 2 * ZipWriter::kAlignment + 128;
  out.reserve(estimate);
  write_checkpoint(sd, [&](const std::uint8_t* p, std::size_t n) { out.insert(out.end(), p, p + n); }, "<memory>",
                   prefix);
  return out;
}

// torch.save(sd, path), atomically: `path` is replaced only by a complete checkpoint.
inline void write_checkpoint(const std::filesystem::path& path, const StateDict& sd) {
  write_file_atomically(path, [&](const ByteSink& sink) { write_checkpoint(sd, sink, path.string()); });
}

}  // namespace ctnn::io
