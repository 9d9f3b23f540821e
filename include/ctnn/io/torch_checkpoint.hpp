// PyTorch checkpoints without libtorch: what torch.save(model.state_dict(), path) writes, read
// into a StateDict of tensors (or, for files with more around the state_dict, into the
// CheckpointContents of every dictionary of tensors in them), and StateDicts written so that
// torch.load(path, weights_only=True) takes them.
//
// Format (PyTorch >= 1.6, any archive prefix): a zip of STORED records `<prefix>/data.pkl` (a
// pickle of an OrderedDict from key to tensor), `<prefix>/data/<key>` (the raw bytes of each
// storage) and `<prefix>/version`. Each tensor is `_rebuild_tensor_v2(storage, offset, size,
// stride, ...)`; the storage comes from a persistent id naming its record, dtype and length.
// Reading keeps the file in memory and tensors as checked views into it (offset, size and
// stride lie inside the storage); values are copied out on demand. Every dtype of PyTorch's
// legacy storage classes is read; floats convert to float32 and integers to int64 on demand.
// The pickle may hold what torch.load(weights_only=True) reads (dicts, lists, tuples, sets,
// strings, bytes, numbers, None, OrderedDict, torch.Size, torch.device, dtypes): only as data,
// through an allow-list of names, never by calling anything.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "ctnn/core/state.hpp"
#include "ctnn/io/error.hpp"
#include "ctnn/io/file.hpp"
#include "ctnn/io/pickle.hpp"
#include "ctnn/io/zip.hpp"

namespace ctnn::io {

// Every dtype PyTorch's zip format stores a dense tensor in (its legacy storage classes).
enum class DType : std::uint8_t {
  float32, int64, float64, float16, bfloat16, int32, int16, int8, uint8, boolean, complex64, complex128
};

namespace detail {
struct DTypeInfo {
  DType dtype;
  const char* name;     // PyTorch's: "float32", "bfloat16", "bool", ...
  const char* storage;  // the pickled storage class: torch.<storage>
  std::uint8_t size;    // bytes per element
};
inline constexpr DTypeInfo kDTypes[] = {
    {DType::float32, "float32", "FloatStorage", 4},       {DType::int64, "int64", "LongStorage", 8},
    {DType::float64, "float64", "DoubleStorage", 8},      {DType::float16, "float16", "HalfStorage", 2},
    {DType::bfloat16, "bfloat16", "BFloat16Storage", 2},  {DType::int32, "int32", "IntStorage", 4},
    {DType::int16, "int16", "ShortStorage", 2},           {DType::int8, "int8", "CharStorage", 1},
    {DType::uint8, "uint8", "ByteStorage", 1},            {DType::boolean, "bool", "BoolStorage", 1},
    {DType::complex64, "complex64", "ComplexFloatStorage", 8},
    {DType::complex128, "complex128", "ComplexDoubleStorage", 16},
};
inline const DTypeInfo& info(DType d) { return kDTypes[static_cast<std::size_t>(d)]; }
}  // namespace detail

inline std::size_t element_size(DType d) { return detail::info(d).size; }
inline const char* dtype_name(DType d) { return detail::info(d).name; }
// Real floating point: what a parameter or buffer may be loaded from (converted to float32).
inline bool is_floating(DType d) {
  return d == DType::float32 || d == DType::float64 || d == DType::float16 || d == DType::bfloat16;
}
// Integers, not bool: what a counter (num_batches_tracked) may be loaded from.
inline bool is_integral(DType d) {
  return d == DType::int64 || d == DType::int32 || d == DType::int16 || d == DType::int8 || d == DType::uint8;
}
template <class T>
inline constexpr DType dtype_of = std::is_same_v<T, float> ? DType::float32 : DType::int64;

// IEEE half and bfloat16 to float: exact (every value of both is a float).
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  const std::uint32_t bits = exponent == 31 ? sign | 0x7f800000u | mantissa << 13  // inf, NaN (payload kept)
                                            : sign | (exponent + 112) << 23 | mantissa << 13;
  return std::bit_cast<float>(bits);
}
inline float bfloat16_to_float(std::uint16_t b) { return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16); }
// Rounds to nearest as PyTorch's .float() does; beyond float's range the result is infinite, as
// IEEE rounding makes it (spelled out: C++ leaves such conversions to the implementation).
inline float double_to_float(double d) {
  constexpr double kMax = static_cast<double>(std::numeric_limits<float>::max());
  constexpr double kHalfwayToInf = 0x1.ffffffp127;  // FLT_MAX + half its ulp: ties go to even, i.e. inf
  if (std::isfinite(d) && std::fabs(d) > kMax) {
    const float big = std::fabs(d) >= kHalfwayToInf ? std::numeric_limits<float>::infinity()
                                                    : std::numeric_limits<float>::max();
    return d < 0 ? -big : big;
  }
  return static_cast<float>(d);
}

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
    // `extent`: the product of the nonzero sizes, bounded even where a zero size makes numel 0,
    // so that contiguous_strides() of any accepted shape (a re-save) cannot overflow.
    std::uint64_t numel = 1, extent = 1, last = static_cast<std::uint64_t>(offset);
    for (std::size_t d = 0; d < shape.size(); ++d) {
      if (shape[d] < 0 || stride[d] < 0)
        return "negative size or stride: size " + shape_string(shape) + ", stride " + shape_string(stride);
      const auto n = static_cast<std::uint64_t>(shape[d]), s = static_cast<std::uint64_t>(stride[d]);
      if (n > limit || s > limit || (n > 0 && extent > limit / n)) return "size " + shape_string(shape) + " is too large";
      numel *= n;
      if (n > 0) extent *= n;
      if (n > 1 && s > (limit - last) / (n - 1)) return "stride " + shape_string(stride) + " is too large";
      if (n > 0) last += (n - 1) * s;
    }
    // Zero strides repeat elements (torch's expand), so a view can hold more elements than its
    // storage; at most 2^31 then, so that materialising it (raw_elements, copies) can neither
    // overflow a byte count nor ask for terabytes.
    if (numel > storage.numel && numel > (std::uint64_t{1} << 31))
      return "size " + shape_string(shape) + " with stride " + shape_string(stride) + " repeats a storage of " +
             std::to_string(storage.numel) + " elements as " + std::to_string(numel) + " (at most 2^31)";
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
  // A contiguous tensor of any dtype from its elements' little-endian bytes (numel(shape) *
  // element_size(dtype) of them), as a storage record holds them.
  static Tensor from_little_endian(DType dtype, TensorShape shape, Bytes bytes) {
    const std::size_t n = ctnn::numel(shape);
    if (bytes.size() != n * element_size(dtype))
      throw std::invalid_argument("ctnn::io::Tensor: " + std::to_string(bytes.size()) + " bytes for " +
                                  std::to_string(n) + " " + dtype_name(dtype) + " elements");
    auto s = std::make_shared<Storage>();
    s->dtype = dtype;
    s->numel = n;
    s->little_endian = true;
    s->buffer = std::make_shared<const std::vector<std::uint8_t>>(bytes.begin(), bytes.end());
    TensorShape stride = contiguous_strides(shape);
    return view(std::move(s), 0, std::move(shape), std::move(stride));
  }

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

  // The values in row-major (C) order into `dst` of exactly numel() elements; throws
  // std::invalid_argument otherwise. float: from any floating dtype (float64, float16 and
  // bfloat16 are converted, rounding to nearest as PyTorch does); int64: from any integer dtype
  // or bool. Anything else (an int64 tensor read as floats, say) is an error, not a conversion.
  void copy_to(std::span<float> dst) const {
    check_destination(dst.size(), is_floating(dtype()), "float32");
    if (dtype() == DType::float32) return gather_raw(reinterpret_cast<std::uint8_t*>(dst.data()));
    const std::vector<std::uint8_t> raw = raw_elements();
    const std::uint8_t* p = raw.data();
    for (std::size_t i = 0; i < dst.size(); ++i) {
      switch (dtype()) {
        case DType::float64: dst[i] = double_to_float(load<double>(p + 8 * i)); break;
        case DType::float16: dst[i] = half_to_float(load<std::uint16_t>(p + 2 * i)); break;
        default: dst[i] = bfloat16_to_float(load<std::uint16_t>(p + 2 * i)); break;
      }
    }
  }
  void copy_to(std::span<std::int64_t> dst) const {
    check_destination(dst.size(), is_integral(dtype()) || dtype() == DType::boolean, "int64");
    if (dtype() == DType::int64) return gather_raw(reinterpret_cast<std::uint8_t*>(dst.data()));
    const std::vector<std::uint8_t> raw = raw_elements();
    const std::uint8_t* p = raw.data();
    for (std::size_t i = 0; i < dst.size(); ++i) {
      switch (dtype()) {
        case DType::int32: dst[i] = load<std::int32_t>(p + 4 * i); break;
        case DType::int16: dst[i] = load<std::int16_t>(p + 2 * i); break;
        case DType::int8: dst[i] = load<std::int8_t>(p + i); break;
        case DType::boolean: dst[i] = p[i] != 0; break;
        default: dst[i] = p[i]; break;  // uint8
      }
    }
  }
  std::vector<float> floats() const {
    std::vector<float> v(numel());
    copy_to(std::span<float>(v));
    return v;
  }
  std::vector<std::int64_t> int64s() const {
    std::vector<std::int64_t> v(numel());
    copy_to(std::span<std::int64_t>(v));
    return v;
  }
  // Every element's bytes in row-major order and the machine's byte order: numel() *
  // element_size(dtype()) bytes, whatever the dtype (complex: real, then imaginary part).
  std::vector<std::uint8_t> raw_elements() const {
    if (!storage_) throw std::invalid_argument("ctnn::io::Tensor: empty tensor handle");
    std::vector<std::uint8_t> out(numel() * element_size(dtype()));
    gather_raw(out.data());
    return out;
  }

 private:
  template <class T>
  static T load(const std::uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  void check_destination(std::size_t size, bool convertible, const char* to) const {
    if (!storage_) throw std::invalid_argument("ctnn::io::Tensor: empty tensor handle");
    if (!convertible)
      throw std::invalid_argument(std::string("ctnn::io::Tensor: a ") + dtype_name(dtype()) + " tensor read as " + to);
    if (size != numel())
      throw std::invalid_argument("ctnn::io::Tensor: destination of " + std::to_string(size) +
                                  " elements for a tensor of " + std::to_string(numel()));
  }
  // Copies the elements' bytes into dst in row-major order, each in the machine's byte order
  // (complex numbers swap their two halves separately).
  void gather_raw(std::uint8_t* dst) const {
    const std::size_t n = numel();
    if (n == 0) return;
    const std::size_t es = element_size(dtype());
    const bool is_complex = dtype() == DType::complex64 || dtype() == DType::complex128;
    const std::size_t word = is_complex ? es / 2 : es;  // the unit whose bytes a byte order reverses
    const std::uint8_t* base = storage_->data();
    const bool swap = word > 1 && storage_->little_endian != (std::endian::native == std::endian::little);
    if (!swap && is_contiguous()) {
      std::memcpy(dst, base + static_cast<std::size_t>(offset_) * es, n * es);
      return;
    }
    auto put = [&](std::size_t i, std::int64_t element) {
      const std::uint8_t* p = base + static_cast<std::size_t>(element) * es;
      std::uint8_t* q = dst + i * es;
      if (!swap) {
        std::memcpy(q, p, es);
        return;
      }
      for (std::size_t w = 0; w < es; w += word)
        for (std::size_t k = 0; k < word; ++k) q[w + k] = p[w + word - 1 - k];
    };
    // Walk the multi-index in row-major order, moving the storage position by the strides.
    const std::size_t nd = shape_.size();
    std::vector<std::int64_t> index(nd, 0);
    std::int64_t pos = offset_;
    for (std::size_t i = 0; i < n; ++i) {
      put(i, pos);
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
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.raw_elements() == b.raw_elements();
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

  // The globals of PyTorch 2.x's weights_only loader that plain data and dense tensors use. Each
  // is only a name here: reduce() gives the few callable ones their meaning, as data.
  void check_global(pickle::Unpickler& u, const std::string& module, const std::string& name) override {
    static const std::unordered_set<std::string> allowed = {
        "collections.OrderedDict", "collections.Counter", "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state", "torch._tensor._rebuild_from_type_v2", "torch.Size",
        "torch.device", "torch.Tensor", "torch.nn.parameter.Parameter", "builtins.set", "__builtin__.set",
        "_codecs.encode",
        // dtypes, as a value (e.g. in metadata): torch.float32 and PyTorch's other names for them
        "torch.float32", "torch.float", "torch.float64", "torch.double", "torch.float16", "torch.half",
        "torch.bfloat16", "torch.int64", "torch.long", "torch.int32", "torch.int", "torch.int16", "torch.short",
        "torch.int8", "torch.uint8", "torch.bool", "torch.complex64", "torch.cfloat", "torch.complex128",
        "torch.cdouble"};
    const std::string full = module + "." + name;
    if (allowed.count(full)) return;
    if (module == "torch" && name.size() > 7 && name.compare(name.size() - 7, 7, "Storage") == 0) return;
    u.fail("refers to the Python object '" + printable(full) +
           "', which checkpoints of tensors and plain data do not contain: ctnn reads what "
           "torch.load(path, weights_only=True) reads (state_dicts and dicts, lists, numbers and strings "
           "around them), not pickled models or other objects");
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
    DType dtype{};
    bool known = false;
    for (const auto& d : detail::kDTypes)
      if (type.text == std::string("torch.") + d.storage) {
        dtype = d.dtype;
        known = true;
      }
    if (!known)
      u.fail("storage '" + printable(key) + "' has type " + printable(type.text) +
             ": ctnn reads the storages of dense tensors (torch.FloatStorage, HalfStorage, BFloat16Storage, "
             "DoubleStorage, LongStorage, IntStorage, ShortStorage, CharStorage, ByteStorage, BoolStorage, "
             "ComplexFloatStorage, ComplexDoubleStorage)");
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
    return reduce(u, callable, args_ref, /*nested=*/false);
  }

 private:
  // What calling an allowed global means, as a value. `nested`: inside _rebuild_from_type_v2,
  // which may name a tensor rebuild function but not itself (so this recurses at most once).
  pickle::Ref reduce(pickle::Unpickler& u, pickle::Ref callable, pickle::Ref args_ref, bool nested) {
    using K = pickle::Value::Kind;
    const std::string f = u.at(callable).text;
    const std::vector<pickle::Ref> args = copied_items(u, args_ref);  // (a copy: u.add moves the arena)
    auto new_value = [&](K kind, std::vector<pickle::Ref> items) {
      pickle::Value v;
      v.kind = kind;
      v.items = std::move(items);
      return u.add(std::move(v));
    };
    if (f == "collections.OrderedDict" || f == "collections.Counter") {
      // OrderedDict() is filled by SETITEMS later; Counter pickles as Counter(dict): a copy, so
      // that later SETITEMs on the Counter leave the argument alone.
      if (args.empty()) return new_value(K::dict, {});
      if (f == "collections.Counter" && args.size() == 1 && u.at(args[0]).kind == K::dict)
        return new_value(K::dict, copied_items(u, args[0]));
      u.fail(printable(f) + " built with unexpected arguments");
    }
    if (f == "builtins.set" || f == "__builtin__.set") {  // set(list): how protocol 2 pickles a set
      if (args.empty()) return new_value(K::set, {});
      if (args.size() == 1 && u.at(args[0]).kind == K::list) return new_value(K::set, copied_items(u, args[0]));
      u.fail("set() built with unexpected arguments");
    }
    if (f == "torch.Size") {  // torch.Size((2, 3)): the tuple of sizes
      if (args.size() == 1 && u.at(args[0]).kind == K::tuple) return new_value(K::tuple, copied_items(u, args[0]));
      u.fail("torch.Size built with unexpected arguments");
    }
    if (f == "torch.device") {  // torch.device('cuda', 0) or ('cpu'): kept as its name, "cuda:0"
      if ((args.size() == 1 || args.size() == 2) && u.at(args[0]).kind == K::string &&
          (args.size() == 1 || u.at(args[1]).kind == K::integer)) {
        u.charge_copy(u.at(args[0]).text.size());
        pickle::Value v;
        v.kind = K::string;
        v.text = u.at(args[0]).text;
        if (args.size() == 2) v.text += ":" + std::to_string(u.at(args[1]).integer);
        return u.add(std::move(v));
      }
      u.fail("torch.device built with unexpected arguments");
    }
    if (f == "_codecs.encode") {  // encode(text, 'latin1'): how protocol 2 pickles bytes
      if (args.size() == 2 && u.at(args[0]).kind == K::string && u.at(args[1]).kind == K::string &&
          (u.at(args[1]).text == "latin1" || u.at(args[1]).text == "latin-1")) {
        u.charge_copy(u.at(args[0]).text.size());
        pickle::Value v;
        v.kind = K::bytes;
        if (!latin1_from_utf8(u.at(args[0]).text, v.text)) u.fail("_codecs.encode: text is not latin-1");
        return u.add(std::move(v));
      }
      u.fail("_codecs.encode with unexpected arguments");
    }
    if (f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state") {
      if (args.size() != (f == "torch._utils._rebuild_parameter" ? 3u : 4u) || !is_tensor(u.at(args[0])))
        u.fail(printable(f) + " with unexpected arguments");
      return args[0];
    }
    if (f == "torch._tensor._rebuild_from_type_v2" && !nested) {
      // (rebuild function, type, its arguments, state): a plain Tensor or Parameter, possibly
      // with Python attributes (the state, which a state_dict does not need).
      if (args.size() != 4 || u.at(args[0]).kind != K::global || u.at(args[1]).kind != K::global ||
          u.at(args[2]).kind != K::tuple)
        u.fail("_rebuild_from_type_v2 with unexpected arguments");
      const std::string& type = u.at(args[1]).text;
      if (type != "torch.Tensor" && type != "torch.nn.parameter.Parameter")
        u.fail("a tensor of the Python class '" + printable(type) + "': ctnn reads plain tensors and Parameters");
      const pickle::Ref t = reduce(u, args[0], args[2], /*nested=*/true);
      if (!is_tensor(u.at(t))) u.fail("_rebuild_from_type_v2 does not rebuild a tensor");
      return t;
    }
    if (f == "torch._utils._rebuild_tensor_v2" || f == "torch._utils._rebuild_tensor") {
      // v2: (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]);
      // the old form: the first four alone.
      const bool v2 = f == "torch._utils._rebuild_tensor_v2";
      if (v2 ? args.size() != 6 && args.size() != 7 : args.size() != 4)
        u.fail(printable(f.substr(13)) + " with " + std::to_string(args.size()) + " arguments");
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
    u.fail("calling '" + printable(f) + "' is not part of a checkpoint of tensors and plain data");
  }

  // Python's str -> bytes for latin-1: each code point below 256 becomes one byte.
  static bool latin1_from_utf8(const std::string& text, std::string& out) {
    for (std::size_t i = 0; i < text.size(); ++i) {
      const auto c = static_cast<unsigned char>(text[i]);
      if (c < 0x80) {
        out += static_cast<char>(c);
      } else if ((c == 0xc2 || c == 0xc3) && i + 1 < text.size() &&
                 (static_cast<unsigned char>(text[i + 1]) & 0xc0) == 0x80) {
        out += static_cast<char>(((c & 0x03) << 6) | (static_cast<unsigned char>(text[++i]) & 0x3f));
      } else {
        return false;
      }
    }
    return true;
  }

  static pickle::Ref object(pickle::Unpickler& u, std::size_t index, std::int64_t tag) {
    pickle::Value v;
    v.kind = pickle::Value::Kind::object;
    v.integer = static_cast<std::int64_t>(index) << 1 | tag;
    return u.add(std::move(v));
  }
  // The items of a container, copied and charged as such (Unpickler::charge_copy).
  static std::vector<pickle::Ref> copied_items(pickle::Unpickler& u, pickle::Ref r) {
    u.charge_copy(u.at(r).items.size() * sizeof(pickle::Ref));
    return u.at(r).items;
  }
  static TensorShape int_tuple(pickle::Unpickler& u, pickle::Ref r, const char* what) {
    const pickle::Value& t = u.at(r);
    if (t.kind != pickle::Value::Kind::tuple) u.fail(std::string("_rebuild_tensor_v2: ") + what + " is not a tuple");
    u.charge_copy(t.items.size() * sizeof(std::int64_t));
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

// One dictionary of tensors inside a checkpoint. `key` is where: the keys of the containers
// around it from data.pkl's root, joined by '.' ("model_state_dict", "state.ema"; list and
// tuple items by index); "" is the root itself.
struct NestedStateDict {
  std::string key;
  StateDict tensors;
};

// What a checkpoint holds, for finding a network's state_dict in it: data.pkl's root may be the
// state_dict itself (torch.save(model.state_dict(), path)) or a container around one or more,
// with plain data beside them (the tutorials' {'epoch': 3, 'model_state_dict': ...,
// 'optimizer_state_dict': ...}).
struct CheckpointContents {
  std::string file;
  bool plain = false;                       // the root is a state_dict: state_dicts[0], key ""
  std::string not_plain;                    // otherwise why not, e.g. "the value of 'epoch' is an int, not a tensor"
  std::vector<NestedStateDict> state_dicts;  // every non-empty dictionary of tensors, in file order
  // The root dict's entries: key and what it holds ("int", "dict of 373 tensors"), for messages.
  std::vector<std::pair<std::string, std::string>> top_level;

  const NestedStateDict* find(const std::string& key) const {
    for (const auto& d : state_dicts)
      if (d.key == key) return &d;
    return nullptr;
  }
};

namespace detail {

// Containers are searched this deep below the root (real checkpoints nest state_dicts two or
// three levels down), under keys of at most kMaxPathKey bytes.
inline constexpr int kMaxNesting = 16;
inline constexpr std::size_t kMaxPathKey = 256;

// Walks the containers under the root (iteratively, each once: shared and cyclic references are
// possible) and collects the dictionaries of tensors. Keys and paths are copied into the result,
// and one memoized key may be referenced from many dictionaries for two bytes each, so the bytes
// copied are bounded by a multiple of the pickle's size: memory and time stay linear in it.
[[gnu::cold]] inline CheckpointContents collect_contents(const pickle::Unpickler& u, pickle::Ref root_ref, const TorchHooks& hooks,
                                           const std::string& file, std::size_t pickle_size) {
  using K = pickle::Value::Kind;
  CheckpointContents c;
  c.file = file;
  const std::size_t budget = 16 * pickle_size + (std::size_t{1} << 20);
  std::size_t spent = 0;
  auto spend = [&](std::size_t n) {
    spent += n;
    if (spent > budget)
      throw CheckpointError(file, "data.pkl: its containers repeat the same keys over and over (more than 16 bytes of "
                                  "keys and paths per byte of pickle): not a checkpoint PyTorch writes");
  };
  auto describe = [&](const pickle::Value& v) -> std::string {
    if (hooks.is_tensor(v)) return "tensor";
    if (v.kind != K::dict) return pickle::kind_name(v.kind);
    std::size_t tensors = 0;
    for (std::size_t i = 1; i < v.items.size(); i += 2) tensors += hooks.is_tensor(u.at(v.items[i]));
    if (tensors == 0) return "dict";
    return "dict of " + std::to_string(v.items.size() / 2) + " entries, " + std::to_string(tensors) + " tensors";
  };

  const pickle::Value& root = u.at(root_ref);
  if (root.kind != K::dict) {
    c.not_plain = "data.pkl holds " + pickle::a_kind(root.kind) + ", not a state_dict (a dict of tensors)";
  } else {
    for (std::size_t i = 0; i + 1 < root.items.size(); i += 2) {
      const pickle::Value &key = u.at(root.items[i]), &value = u.at(root.items[i + 1]);
      if (key.kind != K::string) {
        if (c.not_plain.empty()) c.not_plain = "data.pkl: a state_dict key is " + pickle::a_kind(key.kind) + ", not a str";
        continue;
      }
      if (!hooks.is_tensor(value) && c.not_plain.empty())
        c.not_plain = "data.pkl: the value of '" + printable(key.text) + "' is " + pickle::a_kind(value.kind) +
                      ", not a tensor";
      if (c.top_level.size() < 64) {
        spend(std::min(key.text.size(), std::size_t{200}));
        c.top_level.emplace_back(printable(key.text, 200), describe(value));
      }
    }
    c.plain = c.not_plain.empty();
  }

  struct Frame {
    pickle::Ref ref;
    std::string path;
    int depth;
  };
  std::vector<Frame> stack{{root_ref, "", 0}};
  std::unordered_set<pickle::Ref> seen;
  std::unordered_map<pickle::Ref, bool> all_tensors;
  while (!stack.empty()) {
    Frame f = std::move(stack.back());
    stack.pop_back();
    const pickle::Value& v = u.at(f.ref);
    // A dictionary of tensors holds no containers, so it is recorded under every path that
    // reaches it ({'model': sd, 'ema': sd} pickles one dict twice); other containers are walked
    // once, which also ends cycles.
    if (v.kind == K::dict) {
      // Whether it holds only str -> tensor, looked at once per dict (a big dict reached by
      // many references must not be scanned again for each).
      auto [known, fresh] = all_tensors.try_emplace(f.ref, true);
      for (std::size_t i = 0; fresh && i + 1 < v.items.size() && known->second; i += 2)
        known->second = u.at(v.items[i]).kind == K::string && hooks.is_tensor(u.at(v.items[i + 1]));
      if (known->second && (!v.items.empty() || (f.depth == 0 && c.plain))) {
        NestedStateDict d{f.path, {}};
        for (std::size_t i = 0; i + 1 < v.items.size(); i += 2) {
          const std::string& key = u.at(v.items[i]).text;
          const Tensor& t = hooks.tensor(u.at(v.items[i + 1]));
          spend(key.size() + 32 + 16 * t.shape().size());  // the key and the tensor's handle copied
          // A state_dict pickles each key once. A repeated one is refused rather than
          // overwritten: one memoized key set again for every 5 bytes of pickle would cost a hash
          // of the whole key each time (time quadratic in the input).
          if (d.tensors.contains(key))
            throw CheckpointError(file, f.depth == 0 ? "data.pkl: the state_dict key '" + printable(key) + "' appears twice: corrupt"
                                                     : "data.pkl: the key '" + printable(key) + "' appears twice in '" +
                                                           printable(f.path) + "': corrupt");
          d.tensors.insert_or_assign(key, t);
        }
        c.state_dicts.push_back(std::move(d));
        continue;
      }
    }
    if (!seen.insert(f.ref).second || f.depth >= kMaxNesting) continue;
    // The children that are containers, pushed last first so that they come out in file order.
    const bool is_dict = v.kind == K::dict;
    if (!is_dict && v.kind != K::list && v.kind != K::tuple) continue;  // sets hold no dicts (unhashable)
    const std::size_t step = is_dict ? 2 : 1;
    for (std::size_t i = v.items.size(); i >= step; i -= step) {
      const pickle::Ref child = v.items[i - 1];
      const K kind = u.at(child).kind;
      if (kind != K::dict && kind != K::list && kind != K::tuple) continue;
      std::string segment;
      if (!is_dict) {
        segment = std::to_string((i - 1) / step);
      } else {
        const pickle::Value& key = u.at(v.items[i - 2]);
        if (key.kind == K::string && key.text.size() <= kMaxPathKey) segment = key.text;
        else if (key.kind == K::integer) segment = std::to_string(key.integer);
        else continue;  // no name to give it
      }
      std::string path = f.path.empty() ? std::move(segment) : f.path + "." + segment;
      spend(path.size());
      stack.push_back({child, std::move(path), f.depth + 1});
    }
  }
  return c;
}

// Everything before the pickle's values are interpreted: signatures, zip, records, version.
[[gnu::cold]] inline CheckpointContents parse_contents(std::shared_ptr<const std::vector<std::uint8_t>> buffer, const std::string& file,
                                         ReadOptions options) {
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
  const Bytes pickle_bytes = zip.read(*pkl, options.verify_crc);
  pickle::Unpickler u(pickle_bytes, file, "data.pkl", hooks);
  return collect_contents(u, u.run(), hooks, file, pickle_bytes.size());
}

}  // namespace detail

// What a checkpoint held in memory contains: every dictionary of tensors in it, whatever
// containers hold them. `file` names it in errors.
[[gnu::cold]] inline CheckpointContents parse_checkpoint_contents(std::shared_ptr<const std::vector<std::uint8_t>> buffer,
                                                    const std::string& file, ReadOptions options = {}) {
  return detail::parse_contents(std::move(buffer), file, options);
}
[[gnu::cold]] inline CheckpointContents parse_checkpoint_contents(Bytes bytes, const std::string& file, ReadOptions options = {}) {
  return parse_checkpoint_contents(std::make_shared<const std::vector<std::uint8_t>>(bytes.begin(), bytes.end()), file,
                                   options);
}
// torch.load(path, weights_only=True), as data: every dictionary of tensors in the file.
[[gnu::cold]] inline CheckpointContents read_checkpoint_contents(const std::filesystem::path& path, ReadOptions options = {}) {
  return parse_checkpoint_contents(std::make_shared<const std::vector<std::uint8_t>>(read_file(path)), path.string(),
                                   options);
}

// The state_dict of a plain checkpoint (torch.save(model.state_dict(), path)); anything else
// is a CheckpointError saying what the file holds instead.
[[gnu::cold]] inline StateDict plain_state_dict(CheckpointContents contents) {
  if (contents.plain) return std::move(contents.state_dicts.front().tensors);
  std::string what = contents.not_plain + ": not a plain state_dict (torch.save(model.state_dict(), path))";
  if (!contents.state_dicts.empty()) {
    what += "; it holds " + std::to_string(contents.state_dicts.size()) + " dictionar" +
            (contents.state_dicts.size() == 1 ? "y" : "ies") + " of tensors (";
    for (std::size_t i = 0; i < contents.state_dicts.size() && i < 5; ++i)
      what += (i ? ", '" : "'") + printable(contents.state_dicts[i].key, 100) + "'";
    what += contents.state_dicts.size() > 5 ? ", ...)" : ")";
    what += ": load_state_dict finds a network's among them, or read_checkpoint_contents lists them";
  }
  throw CheckpointError(contents.file, what);
}

// Reads a plain checkpoint held in memory; `file` names it in errors.
[[gnu::cold]] inline StateDict parse_checkpoint(std::shared_ptr<const std::vector<std::uint8_t>> buffer, const std::string& file,
                                  ReadOptions options = {}) {
  return plain_state_dict(detail::parse_contents(std::move(buffer), file, options));
}

[[gnu::cold]] inline StateDict parse_checkpoint(Bytes bytes, const std::string& file, ReadOptions options = {}) {
  return parse_checkpoint(std::make_shared<const std::vector<std::uint8_t>>(bytes.begin(), bytes.end()), file, options);
}

// torch.load(path) for a plain state_dict.
[[gnu::cold]] inline StateDict read_checkpoint(const std::filesystem::path& path, ReadOptions options = {}) {
  return parse_checkpoint(std::make_shared<const std::vector<std::uint8_t>>(read_file(path)), path.string(), options);
}

// Streams `sd` as a PyTorch checkpoint: records `<prefix>/data.pkl`, `<prefix>/byteorder`,
// `<prefix>/data/0..N-1` (each tensor contiguous, in its own storage of the tensor's dtype,
// little-endian) and
// `<prefix>/version`. `file` names the destination in errors.
[[gnu::cold]] inline void write_checkpoint(const StateDict& sd, const ByteSink& sink, const std::string& file,
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
      const char* storage = detail::info(t.dtype()).storage;
      once(storage, [&] { w.global("torch", storage); });
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
    data = t.raw_elements();
    if constexpr (std::endian::native == std::endian::big) {
      // complex numbers are two floats, each reversed on its own
      const bool is_complex = t.dtype() == DType::complex64 || t.dtype() == DType::complex128;
      const std::size_t word = element_size(t.dtype()) / (is_complex ? 2 : 1);
      for (std::size_t i = 0; i < data.size(); i += word) std::reverse(data.begin() + i, data.begin() + i + word);
    }
    zip.add(prefix + "/data/" + std::to_string(index++), data);
  }
  const std::string version = "3\n";
  zip.add(prefix + "/version", Bytes(reinterpret_cast<const std::uint8_t*>(version.data()), version.size()));
  zip.finish();
}

// The checkpoint file in memory.
[[gnu::cold]] inline std::vector<std::uint8_t> serialize_checkpoint(const StateDict& sd, const std::string& prefix = "archive") {
  std::vector<std::uint8_t> out;
  std::size_t estimate = 4096;  // the pickle, headers and central directory, roughly
  for (const auto& [key, t] : sd) estimate += t.numel() * element_size(t.dtype()) + 2 * ZipWriter::kAlignment + 128;
  out.reserve(estimate);
  write_checkpoint(sd, [&](const std::uint8_t* p, std::size_t n) { out.insert(out.end(), p, p + n); }, "<memory>",
                   prefix);
  return out;
}

// torch.save(sd, path), atomically: `path` is replaced only by a complete checkpoint.
[[gnu::cold]] inline void write_checkpoint(const std::filesystem::path& path, const StateDict& sd) {
  write_file_atomically(path, [&](const ByteSink& sink) { write_checkpoint(sd, sink, path.string()); });
}

}  // namespace ctnn::io
