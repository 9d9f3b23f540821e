// PyTorch checkpoints without PyTorch: ctnn's writer and reader agree with each other and with
// the format (zip layout, alignment, CRCs, key order, dtypes); every kind of bad file gives a
// CheckpointError that names the file and the problem; writes are atomic. The bad files are
// built here from checkpoints ctnn writes itself. (Agreement with PyTorch's own files is
// test_parity's job.)
#include "support/check.hpp"

#include <filesystem>
#include <array>
#include <bit>
#include <cmath>
#include <limits>

#include <sys/stat.h>

#include "ctnn/io/state_dict.hpp"
#include "ctnn/train/trainer.hpp"
#include "support/temp_dir.hpp"
#include "support/nested_checkpoint.hpp"
#include "support/zip_layouts.hpp"

using namespace ctnn;
using namespace ctnn::io;

namespace {

namespace fs = std::filesystem;

// The small network of test_optim: Conv2d, BatchNorm2d, ReLU, MaxPool2d, Flatten, Linear.
using SmallNet = Network<Shape<3, 4, 4>, Sequential<Conv2d<3, 4, 3, 1, 1>, BatchNorm2d<4>, ReLU, MaxPool2d<2, 2>,
                                                    Flatten, Linear<16, 10>>>;

using test::pytorch_style_zip;
using test::Record;
using test::records_of;
using test::TempDir;

std::size_t entries_in(const fs::path& dir) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), {}));
}

std::vector<std::uint8_t> slurp(const fs::path& p) { return read_file(p); }

// Gives every buffer and counter a recognisable value, so a round trip that lost them shows.
template <class Net>
void mark_buffers(Net& net) {
  struct Marker : StateVisitor {
    int n = 0;
    void buffer(const std::string&, const TensorShape&, std::span<float> data) override {
      for (std::size_t i = 0; i < data.size(); ++i) data[i] = 0.25f + static_cast<float>((n * 7 + i) % 13) * 0.5f;
      ++n;
    }
    void counter(const std::string&, std::int64_t& v) override { v = 1000 + n++; }
  } marker;
  net.visit_state(marker);
}

// Every parameter, buffer and counter of a network, flattened, for exact comparisons.
template <class Net>
std::pair<std::vector<float>, std::vector<std::int64_t>> everything(Net& net) {
  std::pair<std::vector<float>, std::vector<std::int64_t>> out;
  const auto slots = io::detail::slots_of(net);
  std::size_t total = 0;
  for (const auto& s : slots) total += s.values.size();
  out.first.reserve(total);
  for (const auto& s : slots) {
    if (s.counter) out.second.push_back(*s.counter);
    else out.first.insert(out.first.end(), s.values.begin(), s.values.end());
  }
  return out;
}

// Whether two networks of one type hold identical values, compared in place.
template <class Net>
bool same_state(Net& a, Net& b) {
  const auto sa = io::detail::slots_of(a), sb = io::detail::slots_of(b);
  for (std::size_t i = 0; i < sa.size(); ++i) {
    if (sa[i].counter ? *sa[i].counter != *sb[i].counter
                      : !std::equal(sa[i].values.begin(), sa[i].values.end(), sb[i].values.begin()))
      return false;
  }
  return true;
}

// Network a -> checkpoint bytes -> network b, in memory (the file path is tested on a small net).
template <class Net>
void round_trip(std::uint64_t seed_a, std::uint64_t seed_b) {
  Net a(seed_a);
  mark_buffers(a);
  auto bytes = std::make_shared<const std::vector<std::uint8_t>>(serialize_checkpoint(state_dict(a)));
  Net b(seed_b);
  REQUIRE(!same_state(a, b));
  const StateDict sd = parse_checkpoint(bytes, "a.ckpt");
  const LoadResult r = load_state_dict(b, sd);
  CHECK(r.missing_keys.empty());
  CHECK(r.unexpected_keys.empty());
  CHECK(same_state(a, b));

  // The file holds the network's entries in state_dict order, counters as 0-d int64.
  const auto& entries = a.state_entries();
  REQUIRE(sd.size() == entries.size());
  std::size_t i = 0;
  for (const auto& item : sd) {
    const auto& [key, t] = item;
    INFO(item.first);  // not the binding: clang before 16 cannot capture one in doctest's lambda
    CHECK(key == entries[i].name);
    CHECK(t.shape() == entries[i].shape);
    CHECK(t.dtype() == (entries[i].kind == StateEntry::Kind::counter ? DType::int64 : DType::float32));
    ++i;
  }
}

// Rewrites an archive entry by entry through ctnn's zip writer; `edit` may change any record's
// bytes (CRCs are recomputed, so only the intended damage remains).
std::vector<std::uint8_t> rezip(const std::vector<std::uint8_t>& file,
                                const std::function<void(const std::string&, std::vector<std::uint8_t>&)>& edit,
                                const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  const ZipReader in(file, "in");
  std::vector<std::uint8_t> out;
  ZipWriter w([&](const std::uint8_t* p, std::size_t n) { out.insert(out.end(), p, p + n); }, "out");
  for (const auto& e : in.entries()) {
    const Bytes b = in.read(e);
    std::vector<std::uint8_t> data(b.begin(), b.end());
    edit(e.name, data);
    w.add(e.name, data);
  }
  for (const auto& [name, text] : extra)
    w.add(name, Bytes(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
  w.finish();
  return out;
}

// The same keys in the same order, with identical tensors.
void expect_same(const StateDict& a, const StateDict& b) {
  REQUIRE(a.keys() == b.keys());
  for (const auto& item : a) CHECK_MESSAGE(identical(item.second, b.at(item.first)), item.first);
}

// A checkpoint whose data.pkl is `pkl`, with one float storage record "archive/data/0" of
// `storage_bytes` bytes.
std::vector<std::uint8_t> archive_with(const std::vector<std::uint8_t>& pkl, std::size_t storage_bytes) {
  std::vector<std::uint8_t> out;
  ZipWriter w([&](const std::uint8_t* p, std::size_t n) { out.insert(out.end(), p, p + n); }, "out");
  w.add("archive/data.pkl", pkl);
  w.add("archive/data/0", std::vector<std::uint8_t>(storage_bytes, 0));
  const std::string version = "3\n";
  w.add("archive/version", Bytes(reinterpret_cast<const std::uint8_t*>(version.data()), version.size()));
  w.finish();
  return out;
}

// Pushes _rebuild_tensor_v2(FloatStorage "0" of `numel` on the cpu, offset, size, stride, False,
// {}): a float32 tensor as torch.save pickles one.
void push_tensor(pickle::Writer& w, std::int64_t numel, std::int64_t offset, const TensorShape& size,
                 const TensorShape& stride) {
  auto ints = [&](const TensorShape& v) {
    w.op('(');
    for (auto x : v) w.integer(x);
    w.op('t');
  };
  w.global("torch._utils", "_rebuild_tensor_v2");
  w.op('(');
  test::storage_reference(w, "FloatStorage", "0", "cpu", numel);
  w.integer(offset);
  ints(size);
  ints(stride);
  w.op(0x89);
  w.op('}');
  w.op('t');
  w.op('R');
}

// data.pkl of {"t": _rebuild_tensor_v2(FloatStorage "0" of `numel`, offset, size, stride, ...)}.
std::vector<std::uint8_t> one_tensor_pickle(std::int64_t numel, std::int64_t offset, const TensorShape& size,
                                            const TensorShape& stride) {
  pickle::Writer w;
  w.proto();
  w.global("collections", "OrderedDict");
  w.op(')');
  w.op('R');
  w.string("t");
  push_tensor(w, numel, offset, size, stride);
  w.op('s');
  w.op('.');
  return w.bytes;
}

// Parsing `bytes` must fail with a CheckpointError naming `name` and saying `expected`.
void expect_error(const std::vector<std::uint8_t>& bytes, const std::string& expected, const std::string& name = "bad.ckpt") {
  try {
    parse_checkpoint(bytes, name);
    FAIL("no error; expected one saying \"" << expected << "\"");
  } catch (const CheckpointError& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.rfind(name + ": ", 0) == 0);
    CHECK(what.find(expected) != std::string::npos);
  }
}

std::vector<std::uint8_t> small_checkpoint() {
  SmallNet net(3);
  mark_buffers(net);
  return serialize_checkpoint(state_dict(net));
}

}  // namespace

TEST_CASE("VGG16 and ResNet50_layer4 round-trip through a checkpoint exactly, in state_dict order") {
  SUBCASE("VGG16") { round_trip<VGG16>(1, 2); }
  SUBCASE("ResNet50_layer4") { round_trip<ResNet50_layer4<10>>(1, 2); }
}

TEST_CASE("save_state_dict and load_state_dict by file name") {
  TempDir dir;
  SmallNet a(1), b(2);
  mark_buffers(a);
  save_state_dict(a, dir.path / "small.ckpt");
  CHECK(entries_in(dir.path) == 1);  // no temporary file left behind
  CHECK(slurp(dir.path / "small.ckpt") == serialize_checkpoint(state_dict(a)));
  load_state_dict(b, dir.path / "small.ckpt");
  CHECK(same_state(a, b));
}

TEST_CASE("The writer's zip is PyTorch's layout: records in order, 64-byte aligned, sizes and CRCs in both headers") {
  SmallNet net;
  const std::size_t tensors = net.state_entries().size();
  const auto file = serialize_checkpoint(state_dict(net));
  const ZipReader zip(file, "small.ckpt");
  const auto& entries = zip.entries();
  REQUIRE(entries.size() == tensors + 3);
  CHECK(entries[0].name == "archive/data.pkl");
  CHECK(entries[1].name == "archive/byteorder");
  for (std::size_t i = 0; i < tensors; ++i) CHECK(entries[2 + i].name == "archive/data/" + std::to_string(i));
  CHECK(entries.back().name == "archive/version");
  for (const auto& e : entries) {
    INFO(e.name);
    CHECK(e.data_offset % 64 == 0);
    CHECK_NOTHROW(zip.read(e, true));
    // The local header repeats CRC and sizes (no data descriptor, flag bit 3 clear).
    const std::uint8_t* h = file.data() + e.header_offset;
    CHECK(io::detail::load_le(h + 6, 2) == 0);
    CHECK(io::detail::load_le(h + 14, 4) == e.crc32);
    CHECK(io::detail::load_le(h + 18, 4) == e.size);
    CHECK(io::detail::load_le(h + 22, 4) == e.size);
  }
  const Bytes version = zip.read(entries.back());
  CHECK(std::string(version.begin(), version.end()) == "3\n");
  const Bytes pkl = zip.read(entries[0]);
  CHECK(pkl[0] == 0x80);
  CHECK(pkl[1] == 2);  // protocol 2
  CHECK(pkl.back() == '.');
  // Deterministic: the same network gives the same bytes.
  CHECK(serialize_checkpoint(state_dict(net)) == file);
}

TEST_CASE("Strided, offset, 0-d and empty tensors are read element by element from their storage") {
  auto storage = std::make_shared<Storage>();
  storage->numel = 24;
  auto bytes = std::make_shared<std::vector<std::uint8_t>>(24 * 4);
  for (int i = 0; i < 24; ++i) {
    const float v = static_cast<float>(i);
    std::memcpy(bytes->data() + 4 * i, &v, 4);
  }
  storage->buffer = bytes;
  // base = arange(24).reshape(4, 6)
  CHECK(Tensor::view(storage, 0, {4, 6}, {6, 1}).floats()[23] == 23.0f);
  CHECK(Tensor::view(storage, 6, {6}, {1}).floats() == std::vector<float>{6, 7, 8, 9, 10, 11});        // base[1]
  CHECK(Tensor::view(storage, 2, {4}, {6}).floats() == std::vector<float>{2, 8, 14, 20});              // base[:, 2]
  CHECK(Tensor::view(storage, 0, {6, 4}, {1, 6}).floats()[1] == 6.0f);                                // base.t()
  CHECK(Tensor::view(storage, 8, {2, 3}, {6, 1}).floats() == std::vector<float>{8, 9, 10, 14, 15, 16});  // base[1:3, 2:5]
  CHECK(Tensor::view(storage, 5, {}, {}).floats() == std::vector<float>{5});                           // 0-d
  CHECK(Tensor::view(storage, 3, {3, 2}, {0, 1}).floats() == std::vector<float>{3, 4, 3, 4, 3, 4});    // expand
  CHECK(Tensor::view(storage, 24, {0, 3}, {3, 1}).numel() == 0);
  CHECK_FALSE(Tensor::view(storage, 8, {2, 3}, {6, 1}).is_contiguous());
  CHECK(identical(Tensor::view(storage, 8, {2, 3}, {6, 1}),
                  Tensor::from_floats({2, 3}, std::vector<float>{8, 9, 10, 14, 15, 16})));
  CHECK_FALSE(identical(Tensor::view(storage, 8, {2, 3}, {6, 1}), Tensor::view(storage, 8, {3, 2}, {6, 1})));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK(identical(Tensor::from_floats({1}, std::vector<float>{nan}), Tensor::from_floats({1}, std::vector<float>{nan})));
  CHECK(contiguous_strides({2, 3, 4}) == TensorShape{12, 4, 1});
  // Views that leave the storage, and nonsense, are refused.
  CHECK(!Tensor::check_view(*storage, 0, {4, 7}, {6, 1}).empty());
  CHECK(!Tensor::check_view(*storage, 19, {6}, {1}).empty());
  CHECK(!Tensor::check_view(*storage, -1, {1}, {1}).empty());
  CHECK(!Tensor::check_view(*storage, 0, {2}, {-1}).empty());
  CHECK(!Tensor::check_view(*storage, 0, {2, 2}, {1}).empty());
  CHECK(!Tensor::check_view(*storage, 25, {0}, {1}).empty());
  CHECK(!Tensor::check_view(*storage, 0, {1LL << 40, 1LL << 40}, {1, 1}).empty());
  CHECK(!Tensor::check_view(*storage, 0, {2, 2}, {1LL << 62, 1}).empty());
  // Zero strides may repeat a storage up to 2^31 elements, not into a byte count that overflows.
  CHECK(Tensor::check_view(*storage, 0, {1LL << 31}, {0}).empty());
  CHECK(Tensor::check_view(*storage, 0, {1LL << 62}, {0}).find("at most 2^31") != std::string::npos);
  CHECK(!Tensor::check_view(*storage, 0, {(1LL << 31) + 1}, {0}).empty());
  CHECK(!Tensor::check_view(*storage, 0, {1LL << 20, 1LL << 20}, {0, 0}).empty());
  CHECK_THROWS_AS(Tensor::view(storage, 0, {25}, {1}), std::invalid_argument);
  // Reading with the wrong dtype or size is an error, not a reinterpretation.
  std::vector<std::int64_t> wrong(24);
  CHECK_THROWS_AS(Tensor::view(storage, 0, {24}, {1}).copy_to(std::span<std::int64_t>(wrong)), std::invalid_argument);
  std::vector<float> short_dst(3);
  CHECK_THROWS_AS(Tensor::view(storage, 0, {24}, {1}).copy_to(std::span<float>(short_dst)), std::invalid_argument);
}

TEST_CASE("Files laid out as PyTorch 1.6 to 2.x write them are read, whatever the archive prefix") {
  SmallNet net(5);
  mark_buffers(net);
  const StateDict original = state_dict(net);
  std::vector<Record> records = records_of(serialize_checkpoint(original));
  for (Record& r : records) r.name.replace(0, std::string("archive").size(), "resnet50_epoch285");

  SUBCASE("PyTorch's zip layout, extra records of newer versions, another order, a comment") {
    std::vector<Record> v2 = {{"resnet50_epoch285/.format_version", {'1'}},
                              {"resnet50_epoch285/.storage_alignment", {'6', '4'}}};
    for (auto it = records.rbegin(); it != records.rend(); ++it) v2.push_back(*it);  // version first
    v2.push_back({"resnet50_epoch285/.data/serialization_id", {'4', '2'}});
    for (bool zip64 : {false, true}) {
      CAPTURE(zip64);
      const StateDict read = parse_checkpoint(pytorch_style_zip(v2, zip64, zip64 ? "a comment" : ""), "v2.ckpt");
      expect_same(original, read);
    }
  }
  SUBCASE("big-endian storages, as a byteorder record announces them") {
    std::size_t index = 0;
    for (const auto& [key, t] : original) {
      auto& data = records[2 + index++].data;  // data.pkl, byteorder, then data/0, data/1, ...
      const std::size_t es = element_size(t.dtype());
      for (std::size_t i = 0; i < data.size(); i += es) std::reverse(data.begin() + i, data.begin() + i + es);
    }
    REQUIRE(records[1].name == "resnet50_epoch285/byteorder");
    records[1].data = {'b', 'i', 'g'};
    expect_same(original, parse_checkpoint(pytorch_style_zip(records, false), "big.ckpt"));
  }
}

TEST_CASE("Bad files each give a CheckpointError that names the file and the problem") {
  const auto good = small_checkpoint();
  REQUIRE_NOTHROW(parse_checkpoint(good, "good.ckpt"));

  SUBCASE("empty and truncated files") {
    expect_error({}, "empty file");
    for (std::size_t keep : {good.size() - 1, good.size() - 22, good.size() / 2, std::size_t{100}, std::size_t{4}})
      expect_error(std::vector<std::uint8_t>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(keep)),
                   "truncated");
  }
  SUBCASE("wrong magic") {
    auto bad = good;
    bad[0] = 'X';
    expect_error(bad, "not a PyTorch checkpoint: it does not start with a zip signature");
  }
  SUBCASE("a pickle with an unknown opcode") {
    const auto bad = rezip(good, [](const std::string& name, std::vector<std::uint8_t>& data) {
      if (name == "archive/data.pkl") data[2] = 0xff;  // the first opcode after PROTO 2
    });
    expect_error(bad, "data.pkl, byte 2: unknown or unsupported pickle opcode 0xff");
  }
  SUBCASE("a truncated pickle") {
    const auto bad = rezip(good, [](const std::string& name, std::vector<std::uint8_t>& data) {
      if (name == "archive/data.pkl") data.resize(data.size() / 2);
    });
    expect_error(bad, "truncated");
  }
  SUBCASE("a storage record shorter than its storage") {
    const auto bad = rezip(good, [](const std::string& name, std::vector<std::uint8_t>& data) {
      if (name == "archive/data/0") data.resize(data.size() - 4);
    });
    expect_error(bad, "storage record 'archive/data/0' holds 428 bytes, fewer than the 108 float32 elements");
  }
  SUBCASE("a tensor reaching past the end of its storage") {
    expect_error(archive_with(one_tensor_pickle(4, 0, {5}, {1}), 16), "tensor does not fit its storage");
    expect_error(archive_with(one_tensor_pickle(6, 1, {2, 3}, {3, 1}), 24), "reaches element 6 of a storage of only 6");
    expect_error(archive_with(one_tensor_pickle(6, 0, {2}, {-1}), 24), "negative size or stride");
    // The same pickle with a storage that fits is read.
    CHECK(parse_checkpoint(archive_with(one_tensor_pickle(6, 0, {2, 3}, {3, 1}), 24), "ok").at("t").numel() == 6);
    // One element repeated 2^62 times through a zero stride: its bytes would overflow a size_t.
    expect_error(archive_with(one_tensor_pickle(1, 0, {1LL << 62}, {0}), 4), "(at most 2^31)");
    // An empty tensor whose other sizes multiply past 2^62: no element, but its contiguous
    // strides (a re-save) would overflow.
    expect_error(archive_with(one_tensor_pickle(1, 0, {0, 1LL << 40, 1LL << 40}, {0, 1, 1}), 4), "is too large");
    CHECK(parse_checkpoint(archive_with(one_tensor_pickle(1, 0, {0, 1LL << 20, 1LL << 20}, {0, 1, 1}), 4), "ok")
              .at("t")
              .numel() == 0);
  }
  SUBCASE("a corrupt storage (CRC-32 mismatch)") {
    auto bad = good;
    const ZipReader zip(good, "good");
    bad[zip.find("archive/data/0")->data_offset] ^= 0x40;
    expect_error(bad, "entry 'archive/data/0' is corrupt: its CRC-32 is");
  }
  SUBCASE("a legacy (pre-1.6) checkpoint and a TorchScript archive") {
    std::vector<std::uint8_t> legacy = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};
    expect_error(legacy, "a legacy PyTorch checkpoint");
    const auto script = rezip(good, [](const std::string&, std::vector<std::uint8_t>&) {}, {{"archive/constants.pkl", "x"}});
    expect_error(script, "a TorchScript archive (torch.jit.save), not a state_dict");
  }
  SUBCASE("a pickle that is not a state_dict of tensors") {
    pickle::Writer w;
    w.proto();
    w.op('}');
    w.string("epoch");
    w.integer(5);
    w.op('s');
    w.op('.');
    expect_error(archive_with(w.bytes, 0), "the value of 'epoch' is an int, not a tensor");
    pickle::Writer g;
    g.proto();
    g.global("os", "system");
    g.op('.');
    expect_error(archive_with(g.bytes, 0), "refers to the Python object 'os.system'");
  }
  SUBCASE("a missing file") {
    CHECK_THROWS_WITH_AS(read_checkpoint("/nonexistent/x.ckpt"), "/nonexistent/x.ckpt: no such file", CheckpointError);
  }
  SUBCASE("a file too large to hold in memory") {
#if CTNN_TEST_UNDER_ASAN
    MESSAGE("skipped in this ASan build: its allocator reports an allocation of 2^50 bytes as an error of its own");
#else
    CHECK_THROWS_WITH_AS(ctnn::io::detail::file_buffer("huge.ckpt", std::uint64_t{1} << 50),
                         "huge.ckpt: is 1125899906842624 bytes: too large to read into memory", CheckpointError);
#endif
  }
}

TEST_CASE("A checkpoint of the other network is refused with every missing and unexpected key counted") {
  ResNet50_layer4<10> resnet;
  VGG16 vgg;
  const StateDict resnet_sd = parse_checkpoint(serialize_checkpoint(state_dict(resnet)), "resnet.ckpt");
  const auto before = everything(vgg);
  try {
    load_state_dict(vgg, resnet_sd, true, "resnet.ckpt");
    FAIL("a ResNet checkpoint loaded into VGG16");
  } catch (const StateDictMismatch& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.rfind("resnet.ckpt: ", 0) == 0);
    CHECK(e.missing_keys.size() == 33);
    CHECK(e.unexpected_keys.size() == 373);
    CHECK(what.find("missing keys (33): features.0.weight, features.0.bias") != std::string::npos);
    CHECK(what.find("unexpected keys (373): layer1.0.weight") != std::string::npos);
    CHECK(what.find("saved from a different model") != std::string::npos);
  }
  CHECK(everything(vgg) == before);  // nothing was loaded
  CHECK_THROWS_WITH_AS(load_state_dict(resnet, state_dict(vgg)),
                       doctest::Contains("missing keys (373)"), StateDictMismatch);
}

TEST_CASE("Size mismatches fail even when not strict; missing and unexpected keys only when strict") {
  SmallNet net(1), other(2);
  const StateDict good = state_dict(other);
  const auto before = everything(net);

  StateDict wrong_shape;
  for (const auto& [key, t] : good) {
    if (key == "5.weight") wrong_shape.insert_or_assign(key, Tensor::from_floats({10, 4, 4}, t.floats()));
    else wrong_shape.insert_or_assign(key, t);
  }
  for (bool strict : {true, false}) {
    try {
      load_state_dict(net, wrong_shape, strict, "reshaped");
      FAIL("a reshaped weight was accepted");
    } catch (const StateDictMismatch& e) {
      CHECK(e.mismatched_keys.size() == 1);
      CHECK(std::string(e.what()).find("5.weight: checkpoint [10, 4, 4] float32, network [10, 16] float32") !=
            std::string::npos);
    }
  }
  StateDict partial;  // without 1.running_var, with one extra key
  for (const auto& [key, t] : good)
    if (key != "1.running_var") partial.insert_or_assign(key, t);
  partial.insert_or_assign("extra.weight", Tensor::from_floats({1}, std::vector<float>{1.0f}));
  StateDict counter_as_float = good;
  counter_as_float.insert_or_assign("1.num_batches_tracked", Tensor::from_floats({}, std::vector<float>{0.0f}));
  CHECK_THROWS_WITH_AS(load_state_dict(net, counter_as_float), doctest::Contains("checkpoint [] float32, network [] int64"),
                       StateDictMismatch);
  CHECK_THROWS_WITH_AS(load_state_dict(net, partial),
                       doctest::Contains("missing keys (1): 1.running_var\n  unexpected keys (1): extra.weight"),
                       StateDictMismatch);
  CHECK(everything(net) == before);

  const LoadResult r = load_state_dict(net, partial, false);
  CHECK(r.missing_keys == std::vector<std::string>{"1.running_var"});
  CHECK(r.unexpected_keys == std::vector<std::string>{"extra.weight"});
  const StateDict after = state_dict(net);
  CHECK(after.at("5.weight").floats() == good.at("5.weight").floats());    // loaded
  CHECK(after.at("1.running_var").floats() == std::vector<float>(4, 1.0f));  // left as it was
}

TEST_CASE("Every truncation and single-byte corruption of a checkpoint is a CheckpointError, never a crash") {
  // A deterministic sweep (the libFuzzer targets in tests/fuzz explore further), over
  // ctnn's own layout and PyTorch's (data descriptors, ZIP64 records): with CRC checks on,
  // damage is caught at the zip level; with them off, it reaches the pickle and tensor checks.
  // Either way the only acceptable outcomes are a StateDict or a CheckpointError.
  std::size_t parsed = 0, refused = 0;
  auto attempt = [&](const std::vector<std::uint8_t>& bytes, bool verify_crc) {
    try {
      const StateDict sd = parse_checkpoint(bytes, "fuzzed", {.verify_crc = verify_crc});
      for (const auto& [key, t] : sd)
        if (t.numel() <= 4096) (void)t.raw_elements().size();
      ++parsed;
    } catch (const CheckpointError&) {
      ++refused;
    }
  };
  const auto ours = small_checkpoint();
  for (const auto& good : {ours, pytorch_style_zip(records_of(ours), true)}) {
    for (std::size_t n = 0; n < good.size(); ++n) {
      const std::vector<std::uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
      CHECK_THROWS_AS(parse_checkpoint(cut, "cut"), CheckpointError);
    }
    for (std::size_t i = 0; i < good.size(); ++i)
      for (std::uint8_t flip : {std::uint8_t{0x01}, std::uint8_t{0x80}, std::uint8_t{0xff}}) {
        auto bad = good;
        bad[i] ^= flip;
        attempt(bad, true);
        attempt(bad, false);
      }
    Rng rng(42);
    for (int trial = 0; trial < 3000; ++trial) {
      auto bad = good;
      const int edits = 1 + static_cast<int>(rng.uniform(0.0, 8.0));
      for (int k = 0; k < edits; ++k)
        bad[static_cast<std::size_t>(rng.uniform(0.0, static_cast<double>(bad.size())))] =
            static_cast<std::uint8_t>(rng.uniform(0.0, 256.0));
      attempt(bad, false);
    }
  }
  MESSAGE(parsed << " damaged files still parsed, " << refused << " refused");
  CHECK(refused > 0);
}

TEST_CASE("A state_dict key that appears twice is refused: a memoized key repeated cannot make reading quadratic") {
  // Review finding, while fuzzing: a key memoized once could be set again for 5 bytes of pickle
  // each time ("BINGET key, BINGET tensor, SETITEM"), and every time the reader hashed the whole
  // key: a crafted 1 MB checkpoint took 3 s to read, a 4 MB one 98 s. A state_dict pickles each
  // key once, so a repeated key is now refused instead of overwriting the first.
  auto checkpoint = [](const std::vector<std::uint8_t>& pkl) { return archive_with(pkl, 4); };
  // Pushes OrderedDict().
  auto start = [](pickle::Writer& w) {
    w.proto();
    w.global("collections", "OrderedDict");
    w.op(')');
    w.op('R');
  };
  // Pushes a one-element float32 tensor on storage "0" and memoizes it as 1.
  auto tensor = [](pickle::Writer& w) {
    push_tensor(w, 1, 0, {1}, {1});
    w.put(1);
  };

  pickle::Writer once;
  start(once);
  once.string("weight");
  tensor(once);
  once.op('s');
  once.op('.');
  CHECK(parse_checkpoint(checkpoint(once.bytes), "once.ckpt").keys() == std::vector<std::string>{"weight"});

  pickle::Writer twice;
  start(twice);
  for (int i = 0; i < 2; ++i) {
    twice.string("weight");
    tensor(twice);
    twice.op('s');
  }
  twice.op('.');
  expect_error(checkpoint(twice.bytes), "data.pkl: the state_dict key 'weight' appears twice: corrupt");

  // The crafted form: a 64 KiB key memoized as 2, then set 100,000 times.
  pickle::Writer crafted;
  start(crafted);
  crafted.string(std::string(65536, 'x'));
  crafted.put(2);
  tensor(crafted);
  crafted.op('s');
  for (int i = 0; i < 100000; ++i) {
    crafted.get(2);
    crafted.get(1);
    crafted.op('s');
  }
  crafted.op('.');
  expect_error(checkpoint(crafted.bytes), "' appears twice: corrupt");
}

TEST_CASE("Checkpoint writes are atomic: a failed or interrupted save leaves the old file and no temporary") {
  TempDir dir;
  SmallNet net(1);
  const fs::path target = dir.path / "net.ckpt";
  save_state_dict(net, target);
  const auto original = slurp(target);
  CHECK(entries_in(dir.path) == 1);

  SUBCASE("the writer fails half-way") {
    CHECK_THROWS_AS(write_file_atomically(target,
                                          [&](const ByteSink& sink) {
                                            sink(original.data(), original.size() / 2);
                                            throw std::runtime_error("interrupted");
                                          }),
                    std::runtime_error);
    CHECK(slurp(target) == original);
    CHECK(entries_in(dir.path) == 1);
  }
  SUBCASE("a second save replaces the file completely") {
    SmallNet other(2);
    save_state_dict(other, target);
    CHECK(slurp(target) == serialize_checkpoint(state_dict(other)));
    CHECK(entries_in(dir.path) == 1);
  }
  SUBCASE("the directory does not exist") {
    CHECK_THROWS_WITH_AS(save_state_dict(net, dir.path / "missing" / "net.ckpt"), doctest::Contains("does not exist"),
                         CheckpointError);
    CHECK(entries_in(dir.path) == 1);
  }
  SUBCASE("the target is a directory") {
    fs::create_directory(dir.path / "sub");
    CHECK_THROWS_WITH_AS(save_state_dict(net, dir.path / "sub"), doctest::Contains("cannot rename"), CheckpointError);
    CHECK(fs::is_directory(dir.path / "sub"));
    CHECK(entries_in(dir.path) == 2);
  }
}

// ---------------------------------------------------------------------------------------------
// The checkpoints people have (issue 16), built by hand: test_checkpoint_forms repeats each with
// files PyTorch itself wrote.

namespace {

using test::nested_checkpoint;
using test::PyValue;

PyValue str(const std::string& s) { return PyValue::string(s); }
PyValue num(std::int64_t i) { return PyValue::integer_value(i); }

// The tutorials' pattern: {'epoch', 'model_state_dict', 'optimizer_state_dict', 'loss'}, the
// optimizer's state_dict as Adam's after one step: per-parameter dicts of tensors under integer
// keys, and param_groups of floats, bools, None, a tuple and a list of ints.
PyValue tutorial_checkpoint(const StateDict& model) {
  std::vector<PyValue> state, params;
  std::int64_t index = 0;
  for (const auto& [key, t] : model) {
    if (t.dtype() != DType::float32) continue;
    state.push_back(num(index));
    state.push_back(PyValue::dict({str("step"), PyValue::tensor_value(Tensor::from_floats({}, std::vector<float>{1.0f})),
                                   str("exp_avg"), PyValue::tensor_value(t), str("exp_avg_sq"),
                                   PyValue::tensor_value(t)}));
    params.push_back(num(index++));
  }
  PyValue group = PyValue::dict({str("lr"), PyValue::floating_value(0.001), str("betas"),
                                 PyValue::tuple({PyValue::floating_value(0.9), PyValue::floating_value(0.999)}),
                                 str("eps"), PyValue::floating_value(1e-8), str("weight_decay"), num(0), str("amsgrad"),
                                 PyValue::boolean(false), str("foreach"), PyValue::none(), str("params"),
                                 PyValue::list(params)});
  return PyValue::dict({str("epoch"), num(3), str("model_state_dict"), PyValue::state_dict(model),
                        str("optimizer_state_dict"),
                        PyValue::dict({str("state"), PyValue::dict(state), str("param_groups"), PyValue::list({group})}),
                        str("loss"), PyValue::floating_value(0.25)});
}

// Loads `file` (in memory) into a fresh SmallNet.
LoadResult load_bytes(SmallNet& net, const std::vector<std::uint8_t>& file, const LoadOptions& options = {},
                      const std::string& name = "f.ckpt") {
  return load_state_dict(net, parse_checkpoint_contents(file, name), options);
}

std::string load_error(const std::vector<std::uint8_t>& file, const LoadOptions& options = {},
                       const std::string& name = "f.ckpt") {
  SmallNet net(9);
  const auto before = everything(net);
  try {
    load_bytes(net, file, options, name);
  } catch (const CheckpointError& e) {
    CHECK(everything(net) == before);  // a refused load changes nothing
    return e.what();
  }
  FAIL("no error");
  return "";
}

}  // namespace

TEST_CASE("A tutorial-style checkpoint: the state_dict inside is found, and the pickle's plain data is read") {
  SmallNet saved(4);
  mark_buffers(saved);
  const StateDict model = state_dict(saved);
  const auto file = nested_checkpoint(tutorial_checkpoint(model));

  SmallNet net(5);
  REQUIRE(!same_state(net, saved));
  const LoadResult r = load_bytes(net, file);
  CHECK(same_state(net, saved));
  CHECK(r.checkpoint_key == "model_state_dict");
  CHECK(r.notes == std::vector<std::string>{"using 'model_state_dict'"});

  // Every dictionary of tensors is listed, in file order, with its path.
  const CheckpointContents c = parse_checkpoint_contents(file, "f.ckpt");
  CHECK_FALSE(c.plain);
  REQUIRE(c.state_dicts.size() == 1 + 8);  // the model's, and the optimizer's per float tensor
  CHECK(c.state_dicts[0].key == "model_state_dict");
  CHECK(c.state_dicts[1].key == "optimizer_state_dict.state.0");
  CHECK(c.state_dicts[1].tensors.keys() == std::vector<std::string>{"step", "exp_avg", "exp_avg_sq"});
  CHECK(c.state_dicts[8].key == "optimizer_state_dict.state.7");
  REQUIRE(c.top_level.size() == 4);
  CHECK(c.top_level[0] == std::pair<std::string, std::string>{"epoch", "int"});
  CHECK(c.top_level[3] == std::pair<std::string, std::string>{"loss", "float"});

  // The explicit key gives the same; read_checkpoint still wants a plain state_dict and says why not.
  SmallNet again(6);
  CHECK(load_bytes(again, file, {.checkpoint_key = "model_state_dict"}).notes.front() == "using 'model_state_dict'");
  CHECK(same_state(again, saved));
  expect_error(file, "data.pkl: the value of 'epoch' is an int, not a tensor: not a plain state_dict", "f.ckpt");
  expect_error(file, "it holds 9 dictionaries of tensors ('model_state_dict', 'optimizer_state_dict.state.0'", "f.ckpt");

  // Through a file, as ctnn-eval and ctnn-train load it.
  TempDir dir;
  write_file_atomically(dir.path / "tutorial.ckpt", [&](const ByteSink& sink) { sink(file.data(), file.size()); });
  SmallNet from_file(7);
  CHECK(load_state_dict(from_file, dir.path / "tutorial.ckpt", LoadOptions{}).checkpoint_key == "model_state_dict");
  CHECK(same_state(from_file, saved));
}

TEST_CASE("Nested checkpoints that do not say which state_dict: ambiguity, none, a wrong key, each a clear error") {
  SmallNet a(1), b(2);
  const StateDict sa = state_dict(a), sb = state_dict(b);

  const auto two = nested_checkpoint(PyValue::dict({str("model"), PyValue::state_dict(sa), str("ema"), PyValue::state_dict(sb)}));
  CHECK(load_error(two) ==
        "f.ckpt: 2 dictionaries of tensors in it match the network: 'model' (9 tensors), 'ema' (9 tensors): pick one with "
        "--checkpoint-key KEY (LoadOptions::checkpoint_key)");
  SmallNet net(3);
  CHECK(load_bytes(net, two, {.checkpoint_key = "ema"}).checkpoint_key == "ema");
  CHECK(same_state(net, b));

  // Paths join keys with dots: a key 'a.b' and a dictionary 'b' inside 'a' have one path, which
  // names neither.
  const auto dotted = nested_checkpoint(PyValue::dict(
      {str("a.b"), PyValue::state_dict(sa), str("a"), PyValue::dict({str("b"), PyValue::state_dict(sb)})}));
  CHECK(load_error(dotted, {.checkpoint_key = "a.b"}) ==
        "f.ckpt: 'a.b' is the path of 2 dictionaries of tensors (keys with dots in them, and nested dictionaries, give "
        "the same path): ambiguous, not loaded");

  // A wrong key names what is there instead.
  const auto tutorial = nested_checkpoint(tutorial_checkpoint(sa));
  CHECK(load_error(tutorial, {.checkpoint_key = "epoch"})
            .starts_with("f.ckpt: no dictionary of tensors at 'epoch' (it holds int); the checkpoint's are: "
                         "'model_state_dict' (9 tensors), 'optimizer_state_dict.state.0' (3 tensors)"));
  CHECK(load_error(tutorial, {.checkpoint_key = "model"}).starts_with("f.ckpt: no dictionary of tensors at 'model';"));
  // A key for a plain state_dict is a mistake too.
  CHECK(load_error(serialize_checkpoint(sa), {.checkpoint_key = "model_state_dict"}) ==
        "f.ckpt: a plain state_dict, not a nested checkpoint: there is no 'model_state_dict' in it (load it without a "
        "checkpoint key)");

  // Nothing of this network's in it.
  VGG16 vgg;
  const auto other = nested_checkpoint(PyValue::dict({str("epoch"), num(1), str("model"), PyValue::state_dict(state_dict(vgg))}));
  CHECK(load_error(other) ==
        "f.ckpt: data.pkl: the value of 'epoch' is an int, not a tensor; no dictionary of tensors in it has any of the "
        "network's 9 keys: 'model' (" + std::to_string(state_dict(vgg).size()) + " tensors): pick one with --checkpoint-key KEY (LoadOptions::checkpoint_key) and "
        "--strip-prefix if needed");
  const auto none = nested_checkpoint(PyValue::dict({str("epoch"), num(1), str("losses"), PyValue::list({PyValue::floating_value(0.5)})}));
  CHECK(load_error(none) ==
        "f.ckpt: data.pkl: the value of 'epoch' is an int, not a tensor, and it holds no dictionary of tensors: not a "
        "checkpoint of a network's weights");
  // The one dictionary that shares keys is used even if it does not fit: the mismatch is reported key by key.
  StateDict partial;
  for (const auto& [key, t] : sa)
    if (key != "5.bias") partial.insert_or_assign(key, t);
  const auto almost = nested_checkpoint(PyValue::dict({str("epoch"), num(1), str("model"), PyValue::state_dict(partial)}));
  const std::string e = load_error(almost);
  CHECK(e.starts_with("f.ckpt, 'model': the checkpoint does not match the network's state_dict\n  missing keys (1): 5.bias"));
}

TEST_CASE("Keys under nn.DataParallel's 'module.' or torch.compile's '_orig_mod.': a hint, and strip_prefix loads them") {
  SmallNet saved(4);
  mark_buffers(saved);
  const StateDict sd = state_dict(saved);
  for (const std::string prefix : {"module.", "_orig_mod.", "_orig_mod.module."}) {
    CAPTURE(prefix);
    const auto flat = serialize_checkpoint(test::with_prefix(sd, prefix));
    const std::string e = load_error(flat);
    CHECK(e.find("unexpected keys (9): " + prefix + "0.weight") != std::string::npos);
    CHECK(e.find("the checkpoint's keys start with '" + prefix + "' (saved from ") != std::string::npos);
    CHECK(e.find("strip that prefix on load (--strip-prefix " + prefix + ", or LoadOptions::strip_prefix)") !=
          std::string::npos);
    CHECK(e.find("saved from a different model") == std::string::npos);  // not another model's keys
    SmallNet net(5);
    const LoadResult r = load_bytes(net, flat, {.strip_prefix = prefix});
    CHECK(same_state(net, saved));
    CHECK(r.notes == std::vector<std::string>{"stripped the prefix '" + prefix + "' from 9 of 9 keys"});
  }
  CHECK(load_error(serialize_checkpoint(test::with_prefix(sd, "module."))).find("nn.DataParallel or DistributedDataParallel") !=
        std::string::npos);

  // Nested as well: the listing says which prefix would make it fit.
  const auto nested = nested_checkpoint(tutorial_checkpoint(test::with_prefix(sd, "module.")));
  CHECK(load_error(nested).find("'model_state_dict' (9 tensors; the network's with --strip-prefix module.)") !=
        std::string::npos);
  SmallNet net(6);
  const LoadResult r = load_bytes(net, nested, {.strip_prefix = "module."});
  CHECK(same_state(net, saved));
  CHECK(r.notes == std::vector<std::string>{"using 'model_state_dict'", "stripped the prefix 'module.' from 9 of 9 keys"});

  // A prefix that is not there changes nothing, and says so; one that merges two keys is refused.
  SmallNet plain(7);
  CHECK(load_bytes(plain, serialize_checkpoint(sd), {.strip_prefix = "module."}).notes ==
        std::vector<std::string>{"no key starts with 'module.': nothing stripped"});
  StateDict both = sd;
  both.insert_or_assign("module.5.bias", sd.at("5.bias"));
  CHECK(load_error(serialize_checkpoint(both), {.strip_prefix = "module."}) ==
        "f.ckpt: stripping the prefix 'module.' makes two keys '5.bias': the checkpoint has the key with and without it");
}

TEST_CASE("float16, bfloat16 and float64 tensors load converted to float32, int32 counters to int64; ints where floats are expected do not") {
  // Conversions, checked on values whose results are known exactly.
  CHECK(half_to_float(0x3c00) == 1.0f);
  CHECK(half_to_float(0xc100) == -2.5f);
  CHECK(half_to_float(0x7bff) == 65504.0f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));  // the smallest subnormal
  CHECK(half_to_float(0x03ff) == std::ldexp(1023.0f, -24));
  CHECK(half_to_float(0x7c00) == std::numeric_limits<float>::infinity());
  CHECK(std::signbit(half_to_float(0x8000)));
  CHECK(std::isnan(half_to_float(0x7e00)));
  CHECK(bfloat16_to_float(0x3f80) == 1.0f);
  CHECK(bfloat16_to_float(0xc020) == -2.5f);
  CHECK(bfloat16_to_float(0x7f7f) == std::bit_cast<float>(0x7f7f0000u));
  CHECK(double_to_float(0.1) == 0.1f);
  CHECK(double_to_float(3.4028235e38) == std::numeric_limits<float>::max());  // within half an ulp of it
  CHECK(double_to_float(3.4028235677973366e38) == std::numeric_limits<float>::infinity());  // the tie goes to even: inf
  CHECK(double_to_float(1e300) == std::numeric_limits<float>::infinity());
  CHECK(double_to_float(-1e300) == -std::numeric_limits<float>::infinity());
  CHECK(double_to_float(1e-50) == 0.0f);

  SmallNet saved(4);
  mark_buffers(saved);
  const StateDict sd = state_dict(saved);
  auto le = [](auto v) {
    std::array<std::uint8_t, sizeof v> b{};
    for (std::size_t i = 0; i < sizeof v; ++i) b[i] = static_cast<std::uint8_t>(std::bit_cast<std::conditional_t<sizeof v == 8, std::uint64_t, std::conditional_t<sizeof v == 4, std::uint32_t, std::uint16_t>>>(v) >> (8 * i));
    return b;
  };
  // bfloat16 keeps float's top 16 bits (truncation is fine here: what matters is that the
  // reader turns exactly these bits back into floats).
  auto to_bf16 = [&](float f) { return le(static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(f) >> 16)); };
  auto to_f64 = [&](float f) { return le(static_cast<double>(f) * (1.0 + 0x1p-40)); };  // rounds back to f
  // Half: a few exact values, cycled.
  const std::uint16_t halves[] = {0x3c00, 0xc100, 0x7bff, 0x0001, 0x3555, 0x8000};
  std::size_t k = 0;
  auto to_f16 = [&](float) { return le(halves[k++ % 6]); };

  struct Case {
    const char* name;
    StateDict file;
  };
  const StateDict bf16 = test::floats_as(sd, DType::bfloat16, to_bf16);
  const StateDict f64 = test::floats_as(sd, DType::float64, to_f64);
  const StateDict f16 = test::floats_as(sd, DType::float16, to_f16);
  for (const Case& c : {Case{"bfloat16", bf16}, Case{"float64", f64}, Case{"float16", f16}}) {
    const auto& [name, file] = c;
    CAPTURE(c.name);
    SmallNet net(5);
    const LoadResult r = load_bytes(net, serialize_checkpoint(file));
    CHECK(r.notes == std::vector<std::string>{"converted 8 " + std::string(name) +
                                              " tensors to float32 (the network's dtypes), as PyTorch's load_state_dict does"});
    const StateDict after = state_dict(net);
    std::size_t h = 0;
    for (const auto& item : sd) {
      const auto& [key, t] = item;
      CAPTURE(item.first);
      if (t.dtype() == DType::int64) {
        CHECK(after.at(key).int64s() == t.int64s());
        continue;
      }
      std::vector<float> expected = t.floats();
      for (float& x : expected) {
        if (std::string(name) == "bfloat16") x = std::bit_cast<float>(std::bit_cast<std::uint32_t>(x) & 0xffff0000u);
        if (std::string(name) == "float16") x = half_to_float(halves[h++ % 6]);
      }
      CHECK(after.at(key).floats() == expected);
    }
  }

  // A counter saved as int32 (or any integer width) converts; a float counter does not.
  StateDict counter32 = sd;
  counter32.insert_or_assign("1.num_batches_tracked", Tensor::from_little_endian(DType::int32, {}, std::vector<std::uint8_t>{0x39, 0x30, 0, 0}));
  SmallNet net(5);
  CHECK(load_bytes(net, serialize_checkpoint(counter32)).notes ==
        std::vector<std::string>{"converted 1 int32 tensors to int64 (the network's dtypes), as PyTorch's load_state_dict does"});
  CHECK(state_dict(net).at("1.num_batches_tracked").int64s() == std::vector<std::int64_t>{12345});
  StateDict mixed = f16;
  mixed.insert_or_assign("1.num_batches_tracked", counter32.at("1.num_batches_tracked"));
  CHECK(load_bytes(net, serialize_checkpoint(mixed)).notes.front() ==
        "converted 8 float16 tensors to float32 and 1 int32 tensors to int64 (the network's dtypes), as PyTorch's "
        "load_state_dict does");

  // Integers or bools where floats are expected: an error naming the key, nothing loaded.
  StateDict ints = sd;
  ints.insert_or_assign("5.bias", Tensor::from_int64({10}, std::vector<std::int64_t>(10, 1)));
  ints.insert_or_assign("1.weight", Tensor::from_little_endian(DType::boolean, {4}, std::vector<std::uint8_t>{1, 0, 1, 1}));
  const std::string e = load_error(serialize_checkpoint(ints));
  CHECK(e.find("1.weight: checkpoint [4] bool, network [4] float32 (bool values where floats are expected)") != std::string::npos);
  CHECK(e.find("5.bias: checkpoint [10] int64, network [10] float32 (integer values where floats are expected)") !=
        std::string::npos);

  // Every dtype round-trips through ctnn's writer unchanged (the storage class follows the dtype).
  StateDict all;
  for (const auto& d : io::detail::kDTypes) {
    std::vector<std::uint8_t> bytes(3 * d.size);
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 37 + d.size);
    if (d.dtype == DType::boolean) bytes = {1, 0, 1};
    all.insert_or_assign(d.name, Tensor::from_little_endian(d.dtype, {3}, bytes));
  }
  expect_same(all, parse_checkpoint(serialize_checkpoint(all), "all.ckpt"));
  CHECK(parse_checkpoint(serialize_checkpoint(all), "all.ckpt").at("bfloat16").dtype() == DType::bfloat16);
}

TEST_CASE("The plain data of torch.load(weights_only=True) is read as data; other objects are refused by name") {
  // {'sd': OrderedDict(w=_rebuild_from_type_v2(_rebuild_tensor_v2, torch.Tensor, (...), {})),
  //  'shape': torch.Size((2, 3)), 'device': torch.device('cuda', 0), 'counts': Counter({'a': 1}),
  //  'blob': _codecs.encode('\u00e9x', 'latin1'), 'dtype': torch.float16, 'tags': set([1, 2]),
  //  'old': _rebuild_tensor(storage, 0, (1,), (1,))}
  auto build = [](const std::string& tensor_type, const std::string& extra_global) {
    pickle::Writer w;
    auto tensor_args = [&](std::int64_t numel) {
      w.op('(');
      test::storage_reference(w, "FloatStorage", "0", "cuda:0", numel);
      w.integer(0);
      w.integer(numel);
      w.tuple_end(1);
      w.integer(1);
      w.tuple_end(1);
    };
    w.proto();
    w.op('}');
    w.op('(');
    w.string("sd");
    w.global("collections", "OrderedDict");
    w.op(')');
    w.op('R');
    w.string("w");
    w.global("torch._tensor", "_rebuild_from_type_v2");
    w.op('(');
    w.global("torch._utils", "_rebuild_tensor_v2");
    w.global(tensor_type.substr(0, tensor_type.rfind('.')), tensor_type.substr(tensor_type.rfind('.') + 1));
    tensor_args(2);
    w.op(0x89);
    w.global("collections", "OrderedDict");
    w.op(')');
    w.op('R');
    w.op('t');
    w.op('}');
    w.op('t');
    w.op('R');
    w.op('s');
    w.string("shape");
    w.global("torch", "Size");
    w.integer(2);
    w.integer(3);
    w.tuple_end(2);
    w.tuple_end(1);
    w.op('R');
    w.string("device");
    w.global("torch", "device");
    w.string("cuda");
    w.integer(0);
    w.tuple_end(2);
    w.op('R');
    w.string("counts");
    w.global("collections", "Counter");
    w.op('}');
    w.string("a");
    w.integer(1);
    w.op('s');
    w.tuple_end(1);
    w.op('R');
    w.string("blob");
    w.global("_codecs", "encode");
    w.string("\xc3\xa9x");
    w.string("latin1");
    w.tuple_end(2);
    w.op('R');
    w.string("dtype");
    w.global("torch", "float16");
    w.string("tags");
    w.global("__builtin__", "set");
    w.op(']');
    w.op('(');
    w.integer(1);
    w.integer(2);
    w.op('e');
    w.tuple_end(1);
    w.op('R');
    w.string("old");
    w.global("torch._utils", "_rebuild_tensor");
    w.op('(');
    test::storage_reference(w, "FloatStorage", "0", "cpu", 2);
    w.integer(1);
    w.integer(1);
    w.tuple_end(1);
    w.integer(1);
    w.tuple_end(1);
    w.op('t');
    w.op('R');
    if (!extra_global.empty()) {
      w.string("extra");
      w.global(extra_global.substr(0, extra_global.rfind('.')), extra_global.substr(extra_global.rfind('.') + 1));
    }
    w.op('u');
    w.op('.');
    return archive_with(w.bytes, 8);
  };
  const CheckpointContents c = parse_checkpoint_contents(build("torch.Tensor", ""), "extras.ckpt");
  REQUIRE(c.state_dicts.size() == 1);
  CHECK(c.state_dicts[0].key == "sd");
  CHECK(c.state_dicts[0].tensors.at("w").shape() == TensorShape{2});
  const std::vector<std::pair<std::string, std::string>> top = {
      {"sd", "dict of 1 entries, 1 tensors"}, {"shape", "tuple"}, {"device", "str"}, {"counts", "dict"},
      {"blob", "bytes"}, {"dtype", "global"}, {"tags", "set"}, {"old", "tensor"}};
  CHECK(c.top_level == top);
  CHECK_NOTHROW(parse_checkpoint_contents(build("torch.nn.parameter.Parameter", ""), "p.ckpt"));

  auto refused = [&](const std::vector<std::uint8_t>& file, const std::string& expected) {
    try {
      parse_checkpoint_contents(file, "bad.ckpt");
      FAIL("accepted");
    } catch (const CheckpointError& e) {
      CHECK(std::string(e.what()).find(expected) != std::string::npos);
    }
  };
  refused(build("torch.nn.Linear", ""), "refers to the Python object 'torch.nn.Linear'");
  refused(build("torch.Tensor", "torch._utils._rebuild_qtensor"), "refers to the Python object 'torch._utils._rebuild_qtensor'");
  refused(build("torch.Tensor", "__main__.Net"), "not pickled models or other objects");
}

TEST_CASE("One state_dict object saved under two keys is found under both") {
  // {'model': sd, 'ema': sd}: pickle writes the dict once and fetches it from the memo again.
  pickle::Writer w;
  w.proto();
  w.op('}');
  w.string("model");
  w.global("collections", "OrderedDict");
  w.op(')');
  w.op('R');
  w.put(0);
  w.string("w");
  push_tensor(w, 2, 0, {2}, {1});
  w.op('s');
  w.op('s');
  w.string("ema");
  w.get(0);
  w.op('s');
  w.op('.');
  const CheckpointContents c = parse_checkpoint_contents(archive_with(w.bytes, 8), "shared.ckpt");
  REQUIRE(c.state_dicts.size() == 2);
  CHECK(c.state_dicts[0].key == "model");
  CHECK(c.state_dicts[1].key == "ema");
  CHECK(identical(c.state_dicts[0].tensors.at("w"), c.state_dicts[1].tensors.at("w")));
}

TEST_CASE("One long memoized key in many nested dictionaries is refused: the contents walk stays linear") {
  // Each dictionary of tensors found is copied out (keys included), and a memoized key costs two
  // bytes to use again: a 64 KiB key in 200,000 five-byte dictionaries would copy 13 GB. The
  // walk refuses once the keys copied pass 16 bytes per byte of pickle.
  auto build = [](int dicts) {
    pickle::Writer w;
    w.proto();
    w.op(']');
    w.op('(');
    w.op('}');
    w.string(std::string(65536, 'k'));
    w.put(0);
    push_tensor(w, 1, 0, {}, {});
    w.put(1);
    w.op('s');
    for (int i = 0; i < dicts; ++i) {
      w.op('}');
      w.get(0);
      w.get(1);
      w.op('s');
    }
    w.op('e');
    w.op('.');
    return archive_with(w.bytes, 4);
  };
  // A few copies are fine (as an optimizer's per-parameter dicts share 'exp_avg').
  CHECK(parse_checkpoint_contents(build(10), "few.ckpt").state_dicts.size() == 11);
  expect_error(build(200000), "data.pkl: its containers repeat the same keys over and over");
}

TEST_CASE("ctnn-train's resume snapshot loads as its weights: Adam's moments and the position are left out, and said") {
  // A snapshot as the Trainer really writes it (a run stopped by max_steps), so that the loader
  // and the writer cannot drift apart.
  using TinyNet = Network<Shape<3, 32, 32>, Sequential<Conv2d<3, 4, 3, 1, 1>, BatchNorm2d<4>, ReLU, MaxPool2d<8>,
                                                       Flatten, Linear<64, 10>>>;
  TempDir dir;
  TinyNet trained(3);
  TrainerOptions o;
  o.batch_size = 20;
  o.max_steps = 2;
  o.out_dir = dir.path;
  o.model_name = "tiny";
  std::ostringstream log;
  Trainer<TinyNet>(trained, o).fit(data::make_synthetic_cifar(60, 1), log);
  const fs::path snapshot = dir.path / "tiny_resume.ckpt";
  REQUIRE(fs::exists(snapshot));
  REQUIRE(read_checkpoint(snapshot).contains("optimizer.exp_avg"));  // Adam's moments are in the file

  TinyNet net(9);
  REQUIRE(!same_state(net, trained));
  const LoadResult r = load_state_dict(net, snapshot, LoadOptions{});
  CHECK(same_state(net, trained));  // weights, BatchNorm statistics and counters
  CHECK(r.notes == std::vector<std::string>{
                       "a ctnn-train resume snapshot after step 2 (epoch 1, 2 batches into it): loaded its weights (the "
                       "model.* entries), not Adam's moments or the run's position (--resume takes those)"});

  // Another network's snapshot: the usual strict mismatch, naming the file and the entries used.
  SmallNet other(1);
  try {
    load_state_dict(other, snapshot, LoadOptions{});
    FAIL("a TinyNet snapshot loaded into SmallNet");
  } catch (const CheckpointError& e) {
    CHECK(std::string(e.what()).find(snapshot.string() + " (its model.* entries)") != std::string::npos);
  }

  // A plain state_dict that merely has a key named like the trainer's is not taken for a snapshot.
  StateDict sd = state_dict(trained);
  sd.insert_or_assign("trainer.total_steps", Tensor::scalar_int64(2));
  sd.insert_or_assign("optimizer.exp_avg", sd.at("0.weight"));
  TinyNet plain(2);
  CHECK_THROWS_WITH(load_state_dict(plain, parse_checkpoint_contents(serialize_checkpoint(sd), "f.ckpt")),
                    doctest::Contains("unexpected keys (2): trainer.total_steps, optimizer.exp_avg"));
}

TEST_CASE("Rebuilding one memoized value over and over is refused: reading stays linear in the file's size") {
  // Review finding: torch.Size(t), set(l), Counter(d), torch.device(s) and _codecs.encode(s, ..)
  // each copied their argument, and one memoized argument costs 5 bytes to rebuild again
  // (BINGET callable, BINGET args, REDUCE): a 90 KB file took 766 MB, a 360 KB one 3.7 GB. Each
  // copy is now charged against 16 bytes per byte of pickle.
  auto build = [](int rebuilds, const char* module, const char* name, bool string_argument) {
    pickle::Writer w;
    w.proto();
    w.op(']');
    w.op('(');  // the list's items: the first call, then `rebuilds` more from the memo
    w.global(module, name);
    w.put(0);
    w.op('(');
    if (string_argument) {  // (a 20000-byte string[, 'latin1'])
      w.string(std::string(20000, 'c'));
      if (std::string(name) == "encode") w.string("latin1");
    } else if (std::string(name) == "Size") {  // ((1, 1, ..., 1),)
      w.op('(');
      for (int i = 0; i < 5000; ++i) w.integer(1);
      w.op('t');
    } else {  // ([1, 1, ..., 1],)
      w.op(']');
      w.op('(');
      for (int i = 0; i < 5000; ++i) w.integer(1);
      w.op('e');
    }
    w.op('t');
    w.put(1);
    w.op('R');
    for (int i = 0; i < rebuilds; ++i) {
      w.get(0);
      w.get(1);
      w.op('R');
    }
    w.op('e');
    w.op('.');
    return archive_with(w.bytes, 4);
  };
  struct Call {
    const char *module, *name;
    bool string_argument;
  };
  // (not a structured binding: clang before 16 cannot capture one in doctest's CAPTURE)
  for (const Call& c : {Call{"torch", "Size", false}, Call{"builtins", "set", false}, Call{"torch", "device", true},
                        Call{"_codecs", "encode", true}}) {
    CAPTURE(c.name);
    CHECK_NOTHROW(parse_checkpoint_contents(build(3, c.module, c.name, c.string_argument), "few.ckpt"));
    expect_error(build(20000, c.module, c.name, c.string_argument), "rebuilds the same values over and over");
  }
}

TEST_CASE("An int beyond 64 bits among a checkpoint's plain data is read, as PyTorch's weights_only loader reads it") {
  // Review finding: {'model_state_dict': ..., 'seed': 2**63 + 12345} (LONG1 of 9 bytes) made the
  // whole file unreadable. LONG4 (ints of more than 255 bytes) likewise.
  for (const bool long4 : {false, true}) {
    CAPTURE(long4);
    pickle::Writer w;
    w.proto();
    w.op('}');
    w.op('(');
    w.string("seed");
    if (long4) {
      w.op(0x8b);
      w.bytes.insert(w.bytes.end(), {0, 1, 0, 0});  // 256 bytes
      w.bytes.insert(w.bytes.end(), 256, 0x11);
    } else {
      w.op(0x8a);
      w.bytes.insert(w.bytes.end(), {9, 0x39, 0x30, 0, 0, 0, 0, 0, 0x80, 0});  // 2^63 + 12345
    }
    w.string("model_state_dict");
    w.global("collections", "OrderedDict");
    w.op(')');
    w.op('R');
    w.string("t");
    push_tensor(w, 1, 0, {}, {});
    w.op('s');
    w.op('u');
    w.op('.');
    const CheckpointContents c = parse_checkpoint_contents(archive_with(w.bytes, 4), "seed64.ckpt");
    REQUIRE(c.state_dicts.size() == 1);
    CHECK(c.state_dicts[0].key == "model_state_dict");
    // Where a size or an offset must be an int, a big one is refused by name.
    pickle::Writer t;
    t.proto();
    t.global("collections", "OrderedDict");
    t.op(')');
    t.op('R');
    t.string("t");
    push_tensor(t, 1, 0, {}, {});
    t.op('s');
    t.op('.');
    std::vector<std::uint8_t> bytes = t.bytes;
    // (the storage offset 0 is BININT1 'K' 0 right after the persistent id's BINPERSID 'Q')
    const auto q = std::find(bytes.begin(), bytes.end(), std::uint8_t{'Q'});
    REQUIRE(q + 2 < bytes.end());
    REQUIRE(q[1] == 'K');
    const std::vector<std::uint8_t> big = {0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    bytes.erase(q + 1, q + 3);
    bytes.insert(bytes.begin() + (q - bytes.begin()) + 1, big.begin(), big.end());
    expect_error(archive_with(bytes, 4), "_rebuild_tensor_v2: storage offset is not an int");
  }
}

TEST_CASE("An atomic rewrite keeps the file's permissions, and names near the 255-byte limit can be written") {
  // Review findings: the temporary file (0666 less the umask) replaced a 0600 checkpoint, which
  // became world-readable; and the temporary name, 30-odd bytes longer than the target's, could
  // not be created for a target name of 225 bytes or more.
  const test::TempDir dir("ctnn_test_atomic_mode");
  SmallNet net(3);
  const auto file = dir.path / "private.ckpt";
  save_state_dict(net, file);
  REQUIRE(::chmod(file.c_str(), 0600) == 0);
  save_state_dict(net, file);
  struct stat st;
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  const auto long_name = dir.path / (std::string(240, 'n') + ".ckpt");  // 245 bytes
  save_state_dict(net, long_name);
  SmallNet back(4);
  load_state_dict(back, long_name);
  CHECK(state_dict(back).keys() == state_dict(net).keys());
  CHECK(ctnn::io::abandoned_temp_files(dir.path, "").empty());
}
