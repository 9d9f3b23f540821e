// A restricted pickle machine for PyTorch's data.pkl, and a writer of the opcodes PyTorch reads.
//
// The Unpickler runs protocol-2 opcodes (plus the bytes, set, FRAME, MEMOIZE, STACK_GLOBAL and
// SHORT_BINUNICODE opcodes of protocols 3 and 4: a superset of what torch.load(weights_only=True)
// runs) into an arena of values addressed by index, so shared and even cyclic
// references cost nothing and destruction never recurses. It never imports or calls anything:
// GLOBAL, BINPERSID and REDUCE go to a Hooks object that decides what they may mean. Every
// length, memo index and stack access is checked; each opcode consumes input, so a run ends
// within the length of the data.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "ctnn/io/error.hpp"
#include "ctnn/io/zip.hpp"

namespace ctnn::io::pickle {

using Ref = std::uint32_t;  // index of a value in the Unpickler's arena

struct Value {
  // big_integer: an int beyond 64 bits (a seed of 2^64 - 1, say), kept only as such: nothing a
  // checkpoint of tensors needs is one, but plain data beside the tensors may be.
  enum class Kind : std::uint8_t { none, boolean, integer, big_integer, floating, string, bytes, tuple, list, set, dict, global, object };
  Kind kind = Kind::none;
  std::int64_t integer = 0;         // boolean (0/1), integer; object: a handle the Hooks chose
  double floating = 0.0;
  std::string text;                 // string (UTF-8), bytes; global: "module.name"
  std::vector<Ref> items;           // tuple, list, set; dict: key0, value0, key1, value1, ...
};

inline const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::Kind::none: return "None";
    case Value::Kind::boolean: return "bool";
    case Value::Kind::integer: return "int";
    case Value::Kind::big_integer: return "int beyond 64 bits";
    case Value::Kind::floating: return "float";
    case Value::Kind::string: return "str";
    case Value::Kind::bytes: return "bytes";
    case Value::Kind::tuple: return "tuple";
    case Value::Kind::list: return "list";
    case Value::Kind::set: return "set";
    case Value::Kind::dict: return "dict";
    case Value::Kind::global: return "global";
    case Value::Kind::object: return "object";
  }
  return "?";
}

// "a dict", "an int": for messages.
inline std::string a_kind(Value::Kind k) {
  const std::string name = kind_name(k);
  return (name == "int" || name == "object" ? "an " : "a ") + name;
}

class Unpickler;

// What GLOBAL, BINPERSID and REDUCE mean. Each may throw (through Unpickler::fail) to reject.
struct Hooks {
  virtual ~Hooks() = default;
  virtual void check_global(Unpickler& u, const std::string& module, const std::string& name) = 0;
  virtual Ref persistent_load(Unpickler& u, Ref pid) = 0;
  virtual Ref reduce(Unpickler& u, Ref callable, Ref args) = 0;
};

class Unpickler {
 public:
  // Module and class names of GLOBAL and STACK_GLOBAL are at most this long (Python's are short).
  static constexpr std::size_t kMaxGlobalName = 255;

  // `file` and `record` name the data in errors ("x.ckpt: data.pkl, byte 12: ...").
  Unpickler(Bytes data, std::string file, std::string record, Hooks& hooks)
      : data_(data), file_(std::move(file)), record_(std::move(record)), hooks_(hooks) {}

  // Runs the opcodes up to STOP and returns the root value.
  [[gnu::cold]] Ref run() {
    for (;;) {
      if (pos_ >= data_.size()) fail_at(data_.size(), "ends before its STOP opcode: truncated");
      op_pos_ = pos_;
      const std::uint8_t op = data_[pos_++];
      switch (op) {
        case 0x80: {  // PROTO
          const unsigned v = take(1)[0];
          if (v < 2 || v > 5) fail("pickle protocol " + std::to_string(v) + " is not supported (2 to 5 are)");
          break;
        }
        case 0x95: take(8); break;  // FRAME: a length hint; the framed opcodes follow inline
        case 'c': {                 // GLOBAL
          std::string module = line();
          std::string name = line();
          push(make_global(module, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          const Ref name = pop(), module = pop();
          if (at(name).kind != Value::Kind::string || at(module).kind != Value::Kind::string)
            fail("STACK_GLOBAL needs two strings");
          // The strings may be one memoized string fetched again and again: without this bound
          // each 5-byte STACK_GLOBAL would copy it twice (memory quadratic in the input).
          if (at(module).text.size() > kMaxGlobalName || at(name).text.size() > kMaxGlobalName)
            fail("STACK_GLOBAL name longer than " + std::to_string(kMaxGlobalName) + " bytes");
          push(make_global(at(module).text, at(name).text));
          break;
        }
        case 'q': memo_put(take(1)[0]); break;                               // BINPUT
        case 'r': memo_put(static_cast<std::uint32_t>(le(4))); break;         // LONG_BINPUT
        case 0x94: memo_put(static_cast<std::uint32_t>(memo_.size())); break;  // MEMOIZE
        case 'h': push(memo_get(take(1)[0])); break;                          // BINGET
        case 'j': push(memo_get(static_cast<std::uint32_t>(le(4)))); break;   // LONG_BINGET
        case '(': marks_.push_back(stack_.size()); break;                     // MARK
        case ')': push(add(container(Value::Kind::tuple, {}))); break;        // EMPTY_TUPLE
        case 't': push(add(container(Value::Kind::tuple, pop_mark()))); break;  // TUPLE
        case 0x85: case 0x86: case 0x87: {                                    // TUPLE1..3
          std::vector<Ref> items(op - 0x84);
          for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
          push(add(container(Value::Kind::tuple, std::move(items))));
          break;
        }
        case ']': push(add(container(Value::Kind::list, {}))); break;         // EMPTY_LIST
        case 'l': push(add(container(Value::Kind::list, pop_mark()))); break;  // LIST
        case 'a': {                                                           // APPEND
          const Ref v = pop();
          target(Value::Kind::list, "APPEND").items.push_back(v);
          break;
        }
        case 'e': {  // APPENDS
          std::vector<Ref> items = pop_mark();
          auto& list = target(Value::Kind::list, "APPENDS").items;
          list.insert(list.end(), items.begin(), items.end());
          break;
        }
        case 0x8f: push(add(container(Value::Kind::set, {}))); break;        // EMPTY_SET
        case 0x91: push(add(container(Value::Kind::set, pop_mark()))); break;  // FROZENSET: a set, as data
        case 0x90: {                                                         // ADDITEMS
          std::vector<Ref> items = pop_mark();
          auto& set = target(Value::Kind::set, "ADDITEMS").items;
          set.insert(set.end(), items.begin(), items.end());
          break;
        }
        case '}': push(add(container(Value::Kind::dict, {}))); break;  // EMPTY_DICT
        case 'd': {                                                    // DICT
          std::vector<Ref> items = pop_mark();
          if (items.size() % 2 != 0) fail("DICT with an odd number of items");
          push(add(container(Value::Kind::dict, std::move(items))));
          break;
        }
        case 's': {  // SETITEM
          const Ref v = pop(), k = pop();
          auto& dict = target(Value::Kind::dict, "SETITEM").items;
          dict.push_back(k);
          dict.push_back(v);
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<Ref> items = pop_mark();
          if (items.size() % 2 != 0) fail("SETITEMS with an odd number of items");
          auto& dict = target(Value::Kind::dict, "SETITEMS").items;
          dict.insert(dict.end(), items.begin(), items.end());
          break;
        }
        case 'X': push(make_string(le(4))); break;     // BINUNICODE
        case 0x8c: push(make_string(take(1)[0])); break;  // SHORT_BINUNICODE
        case 0x8d: push(make_string(le(8))); break;    // BINUNICODE8
        case 'U': case 'C': push(make_bytes(take(1)[0])); break;  // SHORT_BINSTRING, SHORT_BINBYTES
        case 'T': case 'B': push(make_bytes(le(4))); break;        // BINSTRING, BINBYTES
        case 0x8e: push(make_bytes(le(8))); break;                 // BINBYTES8
        case 'J': push(make_int(static_cast<std::int32_t>(le(4)))); break;  // BININT
        case 'K': push(make_int(take(1)[0])); break;                         // BININT1
        case 'M': push(make_int(static_cast<std::int64_t>(le(2)))); break;  // BININT2
        case 0x8b: push(make_big_int(le(4))); break;  // LONG4: an int of more than 255 bytes
        case 0x8a: {                                                         // LONG1
          const unsigned n = take(1)[0];
          if (n > 8) {
            push(make_big_int(n));
            break;
          }
          const std::uint64_t raw = n ? le(static_cast<int>(n)) : 0;
          std::int64_t v = static_cast<std::int64_t>(raw);
          if (n > 0 && n < 8 && (raw >> (8 * n - 1)) & 1) v = static_cast<std::int64_t>(raw - (std::uint64_t{1} << (8 * n)));
          push(make_int(v));
          break;
        }
        case 'G': {  // BINFLOAT: big-endian IEEE double
          const std::uint8_t* p = take(8);
          std::uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = bits << 8 | p[i];
          Value v;
          v.kind = Value::Kind::floating;
          std::memcpy(&v.floating, &bits, sizeof bits);
          push(add(std::move(v)));
          break;
        }
        case 'N': push(add(Value{})); break;  // NONE
        case 0x88: case 0x89: {                // NEWTRUE, NEWFALSE
          Value v;
          v.kind = Value::Kind::boolean;
          v.integer = op == 0x88;
          push(add(std::move(v)));
          break;
        }
        case 'Q': {  // BINPERSID
          const Ref pid = pop();
          push(hooks_.persistent_load(*this, pid));
          break;
        }
        case 'R': {  // REDUCE
          const Ref args = pop(), callable = pop();
          if (at(callable).kind != Value::Kind::global)
            fail("REDUCE on " + a_kind(at(callable).kind) + ", not a global");
          if (at(args).kind != Value::Kind::tuple) fail("REDUCE arguments are not a tuple");
          push(hooks_.reduce(*this, callable, args));
          break;
        }
        case 'b': {  // BUILD: the state (e.g. a state_dict's _metadata) is not needed
          pop();
          top();
          break;
        }
        case '.': return pop();  // STOP
        default: {
          fail("unknown or unsupported pickle opcode " + hex(op, 2));
        }
      }
    }
  }

  const Value& at(Ref r) const { return values_[r]; }
  // Values a Hooks copies from others (REDUCE's arguments, torch.Size's tuple, a string) cost
  // memory the input did not pay for: one memoized tuple given again and again, 5 bytes each
  // time, would grow the arena with the square of the file's size. Each copy is charged, in
  // bytes, against 16 times the pickle's size plus 1 MiB, ample for any checkpoint PyTorch writes.
  void charge_copy(std::size_t bytes) {
    copied_ += bytes;
    if (copied_ > 16 * data_.size() + (std::size_t{1} << 20))
      fail("rebuilds the same values over and over (more than 16 bytes copied per byte of pickle): not a checkpoint "
           "PyTorch writes");
  }
  Ref add(Value v) {
    values_.push_back(std::move(v));
    return static_cast<Ref>(values_.size() - 1);
  }
  // The error at the current opcode.
  [[noreturn]] void fail(const std::string& what) const { fail_at(op_pos_, what); }

 private:
  [[noreturn]] void fail_at(std::size_t pos, const std::string& what) const {
    throw CheckpointError(file_, record_ + ", byte " + std::to_string(pos) + ": " + what);
  }
  const std::uint8_t* take(std::uint64_t n) {
    if (n > data_.size() - pos_) fail_at(data_.size(), "ends inside an opcode's argument: truncated");
    const std::uint8_t* p = data_.data() + pos_;
    pos_ += static_cast<std::size_t>(n);
    return p;
  }
  std::uint64_t le(int n) { return detail::load_le(take(static_cast<std::uint64_t>(n)), n); }
  std::string line() {
    const std::size_t start = pos_;
    const std::size_t limit = std::min(data_.size(), start + kMaxGlobalName + 1);  // the name and its '\n'
    for (std::size_t i = start; i < limit; ++i)
      if (data_[i] == '\n') {
        pos_ = i + 1;
        return std::string(reinterpret_cast<const char*>(data_.data() + start), i - start);
      }
    fail("GLOBAL name is unterminated or too long");
  }

  void push(Ref r) { stack_.push_back(r); }
  // The stack above the innermost MARK is all an opcode may touch, as in Python's unpickler.
  std::size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Ref pop() {
    if (stack_.size() <= floor()) fail("pickle stack underflow");
    const Ref r = stack_.back();
    stack_.pop_back();
    return r;
  }
  Ref top() {
    if (stack_.size() <= floor()) fail("pickle stack underflow");
    return stack_.back();
  }
  std::vector<Ref> pop_mark() {
    if (marks_.empty()) fail("no MARK to pop to");
    const std::size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Ref> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  Value& target(Value::Kind kind, const char* op) {
    Value& v = values_[top()];
    if (v.kind != kind)
      fail(std::string(op) + " on " + a_kind(v.kind) + ", expected " + a_kind(kind));
    return v;
  }
  void memo_put(std::uint32_t index) { memo_[index] = top(); }
  Ref memo_get(std::uint32_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("memo index " + std::to_string(index) + " was never stored");
    return it->second;
  }

  static Value container(Value::Kind kind, std::vector<Ref> items) {
    Value v;
    v.kind = kind;
    v.items = std::move(items);
    return v;
  }
  Ref make_string(std::uint64_t n) {
    const std::uint8_t* p = take(n);
    Value v;
    v.kind = Value::Kind::string;
    v.text.assign(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
    return add(std::move(v));
  }
  Ref make_bytes(std::uint64_t n) {
    const Ref r = make_string(n);
    values_[r].kind = Value::Kind::bytes;
    return r;
  }
  Ref make_int(std::int64_t i) {
    Value v;
    v.kind = Value::Kind::integer;
    v.integer = i;
    return add(std::move(v));
  }
  // An int of `n` bytes, beyond 64 bits: skipped, kept only as such.
  Ref make_big_int(std::uint64_t n) {
    take(n);
    Value v;
    v.kind = Value::Kind::big_integer;
    return add(std::move(v));
  }
  Ref make_global(const std::string& module, const std::string& name) {
    hooks_.check_global(*this, module, name);
    Value v;
    v.kind = Value::Kind::global;
    v.text = module + "." + name;
    return add(std::move(v));
  }

  Bytes data_;
  std::string file_, record_;
  Hooks& hooks_;
  std::size_t pos_ = 0, op_pos_ = 0, copied_ = 0;
  std::vector<Value> values_;
  std::vector<Ref> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<std::uint32_t, Ref> memo_;
};

// Emits protocol-2 opcodes, the subset that torch.load(weights_only=True) accepts.
class Writer {
 public:
  std::vector<std::uint8_t> bytes;

  void proto() {
    op(0x80);
    bytes.push_back(2);
  }
  void op(std::uint8_t code) { bytes.push_back(code); }
  void global(const std::string& module, const std::string& name) {
    op('c');
    bytes.insert(bytes.end(), module.begin(), module.end());
    bytes.push_back('\n');
    bytes.insert(bytes.end(), name.begin(), name.end());
    bytes.push_back('\n');
  }
  void string(const std::string& s) {
    op('X');
    detail::store_le(bytes, s.size(), 4);
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
  void bytes_value(const std::string& b) {  // BINBYTES (protocol 3)
    op('B');
    detail::store_le(bytes, b.size(), 4);
    bytes.insert(bytes.end(), b.begin(), b.end());
  }
  // BINFLOAT: a big-endian IEEE double.
  void floating(double v) {
    std::uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    op('G');
    for (int i = 7; i >= 0; --i) bytes.push_back(static_cast<std::uint8_t>(bits >> (8 * i)));
  }
  void integer(std::int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');
      detail::store_le(bytes, static_cast<std::uint64_t>(v), 1);
    } else if (v >= 0 && v < 65536) {
      op('M');
      detail::store_le(bytes, static_cast<std::uint64_t>(v), 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      detail::store_le(bytes, static_cast<std::uint64_t>(v), 4);
    } else {
      op(0x8a);
      bytes.push_back(8);
      detail::store_le(bytes, static_cast<std::uint64_t>(v), 8);
    }
  }
  void put(std::uint32_t index) {
    if (index < 256) {
      op('q');
      bytes.push_back(static_cast<std::uint8_t>(index));
    } else {
      op('r');
      detail::store_le(bytes, index, 4);
    }
  }
  void get(std::uint32_t index) {
    if (index < 256) {
      op('h');
      bytes.push_back(static_cast<std::uint8_t>(index));
    } else {
      op('j');
      detail::store_le(bytes, index, 4);
    }
  }
  // A tuple of n values: tuple_begin(n), push the values, tuple_end(n).
  void tuple_begin(std::size_t n) {
    if (n > 3) op('(');
  }
  void tuple_end(std::size_t n) {
    if (n == 0) op(')');
    else if (n <= 3) op(static_cast<std::uint8_t>(0x84 + n));
    else op('t');
  }
};

}  // namespace ctnn::io::pickle
