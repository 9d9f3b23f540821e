// The restricted pickle machine on its own (include/ctnn/io/pickle.hpp), with hooks that accept
// every global: what the fuzzer (tests/fuzz/fuzz_pickle.cpp) found or checks, as fixed inputs.
// Its use inside checkpoints is test_checkpoint's.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ctnn/io/pickle.hpp"

using namespace ctnn::io;
using pickle::Ref;
using Bytes8 = std::vector<std::uint8_t>;

namespace {

struct AcceptAll : pickle::Hooks {
  void check_global(pickle::Unpickler&, const std::string&, const std::string&) override {}
  Ref persistent_load(pickle::Unpickler&, Ref pid) override { return pid; }
  Ref reduce(pickle::Unpickler&, Ref, Ref args) override { return args; }
};

// Runs `bytes`; returns the root's text (for a global or string) or the error message.
std::string run(const Bytes8& bytes) {
  AcceptAll hooks;
  pickle::Unpickler u(bytes, "x.pkl", "data.pkl", hooks);
  try {
    return u.at(u.run()).text;
  } catch (const CheckpointError& e) {
    return e.what();
  }
}

void binunicode(Bytes8& b, const std::string& s) {
  b.push_back('X');
  detail::store_le(b, s.size(), 4);
  b.insert(b.end(), s.begin(), s.end());
}

}  // namespace

TEST_CASE("STACK_GLOBAL names are bounded as GLOBAL's are: one long memoized name cannot be copied over and over") {
  // Review finding, while fuzzing: a string memoized once and fetched twice per STACK_GLOBAL (5
  // bytes of pickle each) was copied into every global, 2 x its length per 5 bytes: this 110 KB
  // pickle allocated 400 MB, a 1 MB one could ask for ~100 GB. Now a name longer than 255 bytes
  // is refused at once, like the GLOBAL opcode's.
  for (std::size_t length : {std::size_t{255}, std::size_t{256}, std::size_t{100000}}) {
    CAPTURE(length);
    Bytes8 p = {0x80, 2};
    binunicode(p, std::string(length, 'm'));
    p.insert(p.end(), {'q', 0});  // BINPUT 0
    for (int i = 0; i < 2000; ++i) p.insert(p.end(), {'h', 0, 'h', 0, 0x93});  // BINGET, BINGET, STACK_GLOBAL
    p.push_back('.');
    const std::string result = run(p);
    if (length <= 255) {
      CHECK(result == std::string(length, 'm') + "." + std::string(length, 'm'));
    } else {
      CHECK(result == "x.pkl: data.pkl, byte " + std::to_string(2 + 5 + length + 2 + 4) +
                          ": STACK_GLOBAL name longer than 255 bytes");
    }
  }
  // GLOBAL's own bound, unchanged: 255 bytes and the newline.
  Bytes8 g = {0x80, 2, 'c'};
  g.insert(g.end(), 255, 'a');
  g.push_back('\n');
  g.insert(g.end(), {'b', '\n', '.'});
  CHECK(run(g) == std::string(255, 'a') + ".b");
  g.insert(g.begin() + 3, 'a');
  CHECK(run(g) == "x.pkl: data.pkl, byte 2: GLOBAL name is unterminated or too long");
}

TEST_CASE("Bytes and sets of protocols 3 and 4 are data: SHORT_BINSTRING, BINBYTES, EMPTY_SET, ADDITEMS, FROZENSET") {
  AcceptAll hooks;
  // [b'ab', {1, 2}, frozenset({3}), b'']
  Bytes8 p = {0x80, 4, ']', '(', 'U', 2, 'a', 'b', 0x8f, '(', 'K', 1, 'K', 2, 0x90, '(', 'K', 3, 0x91, 'B', 0, 0, 0, 0, 'e', '.'};
  pickle::Unpickler u(p, "x.pkl", "data.pkl", hooks);
  const pickle::Value& list = u.at(u.run());
  REQUIRE(list.kind == pickle::Value::Kind::list);
  REQUIRE(list.items.size() == 4);
  CHECK(u.at(list.items[0]).kind == pickle::Value::Kind::bytes);
  CHECK(u.at(list.items[0]).text == "ab");
  CHECK(u.at(list.items[1]).kind == pickle::Value::Kind::set);
  CHECK(u.at(list.items[1]).items.size() == 2);
  CHECK(u.at(u.at(list.items[2]).items.at(0)).integer == 3);
  CHECK(u.at(list.items[3]).text.empty());
  // ADDITEMS only on a set; a bytes length past the end is truncation.
  CHECK(run({0x80, 4, ']', '(', 'K', 1, 0x90, '.'}) == "x.pkl: data.pkl, byte 6: ADDITEMS on a list, expected a set");
  CHECK(run({0x80, 4, 'B', 9, 0, 0, 0, 'a', '.'}) == "x.pkl: data.pkl, byte 9: ends inside an opcode's argument: truncated");
}
