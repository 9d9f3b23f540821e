// libFuzzer target for the restricted pickle machine (include/ctnn/io/pickle.hpp) and the
// tensor hooks a checkpoint's data.pkl runs with.
//
// Each input is a pickle, run twice:
//  1. By the Unpickler with hooks that accept every global and record every persistent id and
//     REDUCE, so that all opcodes and value kinds are reached. It must end in a value or a
//     CheckpointError naming the file and the byte. A value is then written back with
//     pickle::Writer (memo entries for shared values, STACK_GLOBAL for globals) and read again:
//     the result must be the same graph (kinds, numbers bit for bit, strings, sharing). The
//     rewritten pickle must stay within a constant factor of the input's size: memory linear in
//     the input.
//  2. As data.pkl of a checkpoint whose other records are fixed (storages "0" to "15", float32
//     and int64, each 1 KiB), through parse_checkpoint: a StateDict, whose tensors must read
//     back identically after serialize_checkpoint, or a CheckpointError.
// Every message must pass fuzz_common.hpp's check_message (the file's name first, no raw control
// characters, short). Any other exception, a sanitizer report, a hang or an out-of-memory is a
// finding. Build and run: tests/fuzz/CMakeLists.txt.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "ctnn/io/pickle.hpp"
#include "ctnn/io/torch_checkpoint.hpp"
#include "fuzz_common.hpp"

namespace {

using namespace ctnn::io;
using pickle::Ref;
using pickle::Unpickler;
using Kind = pickle::Value::Kind;
using ctnn::fuzz::fail;

// Accepts every global; records what each persistent id and REDUCE was applied to.
struct Recorder : pickle::Hooks {
  struct Object {
    bool persistent;
    Ref a, b;  // persistent: pid; reduce: callable, args
  };
  std::vector<Object> objects;

  void check_global(Unpickler&, const std::string&, const std::string&) override {}
  Ref persistent_load(Unpickler& u, Ref pid) override { return record(u, {true, pid, 0}); }
  Ref reduce(Unpickler& u, Ref callable, Ref args) override { return record(u, {false, callable, args}); }

 private:
  Ref record(Unpickler& u, Object o) {
    objects.push_back(o);
    pickle::Value v;
    v.kind = Kind::object;
    v.integer = static_cast<std::int64_t>(objects.size() - 1);
    return u.add(std::move(v));
  }
};

// Writes the graph under a value as a pickle. Gives up (returns false) on cycles and on nesting
// deeper than kMaxDepth, which the reader accepts but a tree walk cannot follow.
class Rewriter {
 public:
  static constexpr int kMaxDepth = 200;
  Rewriter(const Unpickler& u, const Recorder& rec) : u_(u), rec_(rec) {}
  pickle::Writer w;

  bool emit(Ref r, int depth = 0) {
    if (auto it = memo_.find(r); it != memo_.end()) {
      w.get(it->second);
      return true;
    }
    if (depth > kMaxDepth || !active_.insert(r).second) return false;
    const pickle::Value& v = u_.at(r);
    switch (v.kind) {
      case Kind::none: w.op('N'); break;
      case Kind::boolean: w.op(v.integer ? 0x88 : 0x89); break;
      case Kind::integer: w.integer(v.integer); break;
      case Kind::big_integer:  // (its value is not kept: any int beyond 64 bits reads back as one)
        w.op(0x8a);
        w.bytes.insert(w.bytes.end(), {9, 0, 0, 0, 0, 0, 0, 0, 0, 1});
        break;
      case Kind::floating: {
        std::uint64_t bits;
        std::memcpy(&bits, &v.floating, sizeof bits);
        w.op('G');
        for (int i = 7; i >= 0; --i) w.bytes.push_back(static_cast<std::uint8_t>(bits >> (8 * i)));
        break;
      }
      case Kind::string: w.string(v.text); break;
      case Kind::bytes: w.bytes_value(v.text); break;
      case Kind::set:
        w.op(0x8f);  // EMPTY_SET, then ADDITEMS
        if (!v.items.empty()) {
          w.op('(');
          for (Ref item : v.items)
            if (!emit(item, depth + 1)) return false;
          w.op(0x90);
        }
        break;
      case Kind::tuple:
        w.tuple_begin(v.items.size());
        for (Ref item : v.items)
          if (!emit(item, depth + 1)) return false;
        w.tuple_end(v.items.size());
        break;
      case Kind::list:
      case Kind::dict:
        w.op(v.kind == Kind::list ? ']' : '}');
        if (!v.items.empty()) {
          w.op('(');
          for (Ref item : v.items)
            if (!emit(item, depth + 1)) return false;
          w.op(v.kind == Kind::list ? 'e' : 'u');
        }
        break;
      case Kind::global: {
        // text is "module.name": any split at a dot rebuilds the same text; take one whose parts
        // are short enough for the reader (the original split was).
        std::size_t dot = v.text.find('.');
        while (dot != std::string::npos && (dot > 255 || v.text.size() - dot - 1 > 255)) dot = v.text.find('.', dot + 1);
        if (dot == std::string::npos) fail("a global without a dot", v.text);
        w.string(v.text.substr(0, dot));
        w.string(v.text.substr(dot + 1));
        w.op(0x93);  // STACK_GLOBAL
        break;
      }
      case Kind::object: {
        const Recorder::Object& o = rec_.objects.at(static_cast<std::size_t>(v.integer));
        if (!emit(o.a, depth + 1)) return false;
        if (!o.persistent && !emit(o.b, depth + 1)) return false;
        w.op(o.persistent ? 'Q' : 'R');
        break;
      }
    }
    active_.erase(r);
    w.put(next_);
    memo_.emplace(r, next_++);
    return true;
  }

 private:
  const Unpickler& u_;
  const Recorder& rec_;
  std::unordered_map<Ref, std::uint32_t> memo_;
  std::unordered_set<Ref> active_;
  std::uint32_t next_ = 0;
};

// Whether the graphs under a (in ua) and b (in ub) are the same, sharing included.
struct Same {
  const Unpickler &ua, &ub;
  const Recorder &ra, &rb;
  std::unordered_map<Ref, Ref> forward, backward;

  bool operator()(Ref a, Ref b) {
    if (auto it = forward.find(a); it != forward.end()) return it->second == b;
    if (!backward.emplace(b, a).second) return false;
    forward.emplace(a, b);
    const pickle::Value &x = ua.at(a), &y = ub.at(b);
    if (x.kind != y.kind) return false;
    switch (x.kind) {
      case Kind::none:
      case Kind::big_integer: return true;
      case Kind::boolean:
      case Kind::integer: return x.integer == y.integer;
      case Kind::floating: return std::memcmp(&x.floating, &y.floating, sizeof x.floating) == 0;
      case Kind::string:
      case Kind::bytes:
      case Kind::global: return x.text == y.text;
      case Kind::tuple:
      case Kind::set:
      case Kind::list:
      case Kind::dict:
        if (x.items.size() != y.items.size()) return false;
        for (std::size_t i = 0; i < x.items.size(); ++i)
          if (!(*this)(x.items[i], y.items[i])) return false;
        return true;
      case Kind::object: {
        const auto &p = ra.objects.at(static_cast<std::size_t>(x.integer)),
                   &q = rb.objects.at(static_cast<std::size_t>(y.integer));
        return p.persistent == q.persistent && (*this)(p.a, q.a) && (p.persistent || (*this)(p.b, q.b));
      }
    }
    return false;
  }
};

void generic(const Bytes input) {
  Recorder rec;
  Unpickler u(input, "fuzz.pkl", "data.pkl", rec);
  Ref root;
  try {
    root = u.run();
  } catch (const CheckpointError& e) {
    ctnn::fuzz::check_message(e.what(), "fuzz.pkl: data.pkl, byte ");
    return;
  }
  Rewriter rw(u, rec);
  if (!rw.emit(root)) return;  // cyclic or very deep
  rw.w.op('.');
  if (rw.w.bytes.size() > 128 * input.size() + 4096)
    fail("the value is out of proportion to the pickle",
         std::to_string(input.size()) + " bytes of pickle, " + std::to_string(rw.w.bytes.size()) + " rewritten");
  Recorder rec2;
  Unpickler u2(rw.w.bytes, "rewritten.pkl", "data.pkl", rec2);
  const Ref root2 = u2.run();  // an error here is a finding: not caught
  Same same{u, u2, rec, rec2, {}, {}};
  if (!same(root, root2)) fail("the rewritten pickle reads back as another value");
}

// data.pkl = input, with fixed storages.
void as_checkpoint(const Bytes input) {
  auto file = std::make_shared<std::vector<std::uint8_t>>();
  file->reserve(input.size() + 16 * 1200 + 4096);  // one allocation: this runs for every input
  ZipWriter zip([&](const std::uint8_t* p, std::size_t n) { file->insert(file->end(), p, p + n); }, "fuzz.ckpt");
  zip.add("archive/data.pkl", input);
  std::vector<std::uint8_t> storage(1024);
  for (int k = 0; k < 16; ++k) {
    for (std::size_t i = 0; i < storage.size(); ++i) storage[i] = static_cast<std::uint8_t>(i * 7 + static_cast<std::size_t>(k));
    zip.add("archive/data/" + std::to_string(k), storage);
  }
  const std::string version = "3\n";
  zip.add("archive/version", Bytes(reinterpret_cast<const std::uint8_t*>(version.data()), version.size()));
  zip.finish();

  StateDict sd;
  try {
    sd = parse_checkpoint(std::move(file), "fuzz.ckpt");
  } catch (const CheckpointError& e) {
    ctnn::fuzz::check_message(e.what(), "fuzz.ckpt: ");
    return;
  }
  std::size_t total = 0;
  for (const auto& [key, t] : sd) total += t.numel();
  if (total > (1u << 20)) return;  // views may repeat elements (stride 0): do not materialise huge ones
  const StateDict again = parse_checkpoint(serialize_checkpoint(sd), "rewritten.ckpt");
  if (again.keys() != sd.keys()) fail("keys changed in a round trip");
  for (const auto& [key, t] : sd)
    if (!identical(t, again.at(key))) fail("a tensor changed in a round trip", key);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Bytes input(data, size);
  generic(input);
  as_checkpoint(input);
  return 0;
}
