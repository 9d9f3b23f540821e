// Writes the fuzzers' seed corpora: small VALID files made with ctnn's own writers (and the
// tests' PyTorch-layout zip builder), one directory per target:
//
//   ctnn_fuzz_seeds SEED_DIR
//     SEED_DIR/cifar/       CIFAR-10 batches (write_cifar_batch) of 1, 2 and 4 images
//     SEED_DIR/checkpoint/  checkpoints (save_state_dict / write_checkpoint): the fuzzers' TinyNet
//                           state, a small Conv/BatchNorm/Linear network, int64, 0-d and empty
//                           tensors, another archive prefix, PyTorch's zip layout (data
//                           descriptors, ZIP64, a comment, extra records), big-endian storages;
//                           nested checkpoints (a tutorial-style dict with an optimizer's state,
//                           two models, DataParallel / torch.compile names) and float16,
//                           bfloat16, float64 and int32 tensors
//     SEED_DIR/zip/         every checkpoint above, plus archives that are not checkpoints
//     SEED_DIR/pickle/      the data.pkl of every checkpoint above, plus pickles using every
//                           opcode the reader knows (protocol 2 and 4)
//
// Files already in SEED_DIR/checkpoint and SEED_DIR/pickle (make_seed_corpus.py writes PyTorch's
// own there first, when python3 has torch) are kept, and their zip and data.pkl records are
// added to the zip and pickle corpora too. Every checkpoint is read back before it is written,
// so a seed that ctnn cannot read fails the build instead of starting a fuzzer from garbage.
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "ctnn/ctnn.hpp"
#include "ctnn/data/cifar.hpp"
#include "ctnn/io/state_dict.hpp"
#include "support/nested_checkpoint.hpp"
#include "support/zip_layouts.hpp"
#include "tiny_net.hpp"

namespace fs = std::filesystem;
using namespace ctnn;
using namespace ctnn::io;
using Blob = std::vector<std::uint8_t>;

namespace {

using ctnn::fuzz::TinyNet;

using SmallNet = Network<Shape<3, 4, 4>, Sequential<Conv2d<3, 4, 3, 1, 1>, BatchNorm2d<4>, ReLU, MaxPool2d<2, 2>,
                                                    Flatten, Linear<16, 10>>>;

void write(const fs::path& file, const Blob& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + file.string());
}

Blob slurp(const fs::path& file) { return read_file(file); }

Blob text(const std::string& s) { return Blob(s.begin(), s.end()); }

void write_cifar(const fs::path& dir) {
  for (int n : {1, 2, 4}) {
    data::Dataset d;
    d.pixels.resize(static_cast<std::size_t>(n) * data::kImageBytes);
    for (std::size_t i = 0; i < d.pixels.size(); ++i) d.pixels[i] = static_cast<std::uint8_t>((i * 41 + i / 1024 * 89) & 0xff);
    for (int i = 0; i < n; ++i) d.labels.push_back(static_cast<std::uint8_t>((i * 7 + n) % data::kNumClasses));
    const fs::path file = dir / ("batch_" + std::to_string(n) + ".bin");
    data::write_cifar_batch(file, d);
    if (data::read_cifar_batch(file).labels != d.labels) throw std::runtime_error("CIFAR seed does not read back");
  }
}

void write_checkpoints(const fs::path& dir) {
  auto save = [&](const std::string& name, const Blob& bytes) {
    (void)parse_checkpoint(bytes, name);  // must be valid
    write(dir / name, bytes);
  };
  TinyNet tiny;
  save_state_dict(tiny, dir / "tiny.ckpt");
  (void)read_checkpoint(dir / "tiny.ckpt");
  SmallNet net(3);
  save_state_dict(net, dir / "small_net.ckpt");
  (void)read_checkpoint(dir / "small_net.ckpt");

  // Every tensor form the reader handles: int64, 0-d, empty, a single element.
  StateDict forms;
  forms.insert_or_assign("w", Tensor::from_floats({2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6}));
  forms.insert_or_assign("ids", Tensor::from_int64({3}, std::vector<std::int64_t>{-1, 0, 1LL << 40}));
  forms.insert_or_assign("scalar", Tensor::from_floats({}, std::vector<float>{2.5f}));
  forms.insert_or_assign("count", Tensor::scalar_int64(1000));
  forms.insert_or_assign("empty", Tensor::from_floats({0, 2}, std::vector<float>{}));
  forms.insert_or_assign("one", Tensor::from_floats({1, 1, 1, 1}, std::vector<float>{-0.0f}));
  save("forms.ckpt", serialize_checkpoint(forms));
  save("prefix.ckpt", serialize_checkpoint(state_dict(tiny), "resnet50_epoch285"));
  save("empty_dict.ckpt", serialize_checkpoint(StateDict{}));

  // PyTorch's layout of the tiny state: data descriptors; then ZIP64 and a comment; then newer
  // versions' extra records; then big-endian storages.
  const std::vector<test::Record> records = test::records_of(serialize_checkpoint(state_dict(tiny)));
  save("pytorch_layout.ckpt", test::pytorch_style_zip(records, false));
  save("pytorch_zip64.ckpt", test::pytorch_style_zip(records, true, "a comment"));
  std::vector<test::Record> v2 = {{"archive/.format_version", text("1")}, {"archive/.storage_alignment", text("64")}};
  v2.insert(v2.end(), records.rbegin(), records.rend());
  v2.push_back({"archive/.data/serialization_id", text("42")});
  save("pytorch_v2_records.ckpt", test::pytorch_style_zip(v2, false));
  std::vector<test::Record> big = test::records_of(serialize_checkpoint(forms));
  for (auto& r : big) {
    if (r.name == "archive/byteorder") r.data = text("big");
    if (r.name.rfind("archive/data/", 0) == 0) {
      const std::size_t es = r.name == "archive/data/1" || r.name == "archive/data/3" ? 8 : 4;  // ids, count: int64
      for (std::size_t i = 0; i + es <= r.data.size(); i += es) std::reverse(r.data.begin() + i, r.data.begin() + i + es);
    }
  }
  save("big_endian.ckpt", test::pytorch_style_zip(big, false));
  if (!identical(parse_checkpoint(test::pytorch_style_zip(big, false), "big").at("ids"), forms.at("ids")))
    throw std::runtime_error("big-endian seed does not read back");
}

// Archives that are not checkpoints, from ctnn's writer.
void write_zips(const fs::path& dir) {
  auto zip = [&](const std::string& name, const std::vector<std::pair<std::string, Blob>>& entries) {
    Blob out;
    ZipWriter w([&](const std::uint8_t* p, std::size_t n) { out.insert(out.end(), p, p + n); }, name);
    for (const auto& [entry, data] : entries) w.add(entry, data);
    w.finish();
    (void)ZipReader(out, name);
    write(dir / name, out);
  };
  zip("empty.zip", {});
  zip("one.zip", {{"a", text("hello")}});
  zip("several.zip", {{"dir/", {}}, {"dir/x.txt", text("x\n")}, {"dir/sub/y.bin", Blob(100, 0xab)}, {"z", Blob(1, 0)}});
}

// Pickles that use every opcode the Unpickler knows, written opcode by opcode.
void write_pickles(const fs::path& dir) {
  auto save = [&](const std::string& name, const Blob& bytes) { write(dir / name, bytes); };
  auto le = [](Blob& b, std::uint64_t v, int n) { io::detail::store_le(b, v, n); };

  // Protocol 2: nested containers, every int width, floats, bools, None, memo, BUILD.
  pickle::Writer w;
  w.proto();
  w.op('}');
  w.put(0);
  w.op('(');
  w.string("ints");
  w.op('(');
  for (std::int64_t v : std::initializer_list<std::int64_t>{0, 255, 256, 65535, -1, 1LL << 31, -(1LL << 40), INT64_MIN})
    w.integer(v);
  w.op('l');
  w.put(300);  // LONG_BINPUT
  w.string("float");
  w.op('G');
  for (std::uint8_t b : {0x3f, 0xf8, 0, 0, 0, 0, 0, 0}) w.bytes.push_back(b);  // 1.5
  w.string("flags");
  w.op(0x88);
  w.op(0x89);
  w.op('N');
  w.tuple_end(3);
  w.string("tuples");
  w.tuple_begin(4);
  w.op(')');
  w.integer(1);
  w.tuple_end(1);
  w.integer(1);
  w.integer(2);
  w.tuple_end(2);
  w.tuple_begin(4);
  w.integer(1);
  w.integer(2);
  w.integer(3);
  w.integer(4);
  w.tuple_end(4);
  w.tuple_end(4);
  w.string("shared");
  w.get(300);  // LONG_BINGET
  w.string("list");
  w.op(']');
  w.integer(7);
  w.op('a');
  w.op('(');
  w.integer(8);
  w.integer(9);
  w.op('e');
  w.string("dict");
  w.op('(');
  w.string("k");
  w.integer(1);
  w.op('d');
  w.op('u');
  w.op('N');
  w.op('b');  // BUILD with a None state
  w.op('.');
  save("protocol2.pkl", w.bytes);

  // Protocol 4: FRAME, SHORT_BINUNICODE, BINUNICODE8, MEMOIZE, STACK_GLOBAL, LONG1, REDUCE,
  // BINPERSID.
  Blob p = {0x80, 4, 0x95};
  Blob body;
  auto short_str = [&](const std::string& s) {
    body.push_back(0x8c);
    body.push_back(static_cast<std::uint8_t>(s.size()));
    body.insert(body.end(), s.begin(), s.end());
  };
  short_str("collections");
  body.push_back(0x94);
  short_str("OrderedDict");
  body.push_back(0x94);
  body.push_back(0x93);
  body.push_back(0x94);
  body.push_back(')');
  body.push_back('R');
  body.push_back(0x94);
  body.push_back(0x8d);  // BINUNICODE8
  le(body, 3, 8);
  body.insert(body.end(), {'k', 'e', 'y'});
  body.push_back(0x8a);  // LONG1, 3 bytes, negative
  body.push_back(3);
  body.insert(body.end(), {0x01, 0x00, 0x80});
  body.push_back('s');
  short_str("pid");
  body.push_back(0x85);
  body.push_back('Q');
  body.push_back('b');
  body.push_back('.');
  le(p, body.size(), 8);
  p.insert(p.end(), body.begin(), body.end());
  save("protocol4.pkl", p);

  // A self-referencing list (the reader allows cycles).
  save("cycle.pkl", Blob{0x80, 2, ']', 'q', 0, 'h', 0, 'a', '.'});
}

// The zip and data.pkl records of every checkpoint, for the zip and pickle corpora.
void derive(const fs::path& seeds) {
  for (const auto& entry : fs::directory_iterator(seeds / "checkpoint")) {
    const Blob bytes = slurp(entry.path());
    const std::string stem = entry.path().filename().string();
    write(seeds / "zip" / (stem + ".zip"), bytes);
    try {
      const ZipReader zip(bytes, stem);
      for (const ZipEntry& e : zip.entries())
        if (e.name.size() >= 8 && e.name.compare(e.name.size() - 8, 8, "data.pkl") == 0 && e.method == 0) {
          const Bytes pkl = zip.read(e);
          write(seeds / "pickle" / (stem + ".data.pkl"), Blob(pkl.begin(), pkl.end()));
        }
    } catch (const CheckpointError&) {
      // PyTorch's legacy format is not a zip: a checkpoint seed only.
    }
  }
}

// Checkpoints with more than a state_dict (tests/support/nested_checkpoint.hpp): the tutorials'
// dict around the TinyNet state with an optimizer's state_dict, two candidate state_dicts,
// DataParallel and torch.compile names, and float16 / bfloat16 / float64 / int32 tensors. Each
// must load into TinyNet as written (the two-model one with a key).
void write_nested(const fs::path& dir) {
  using test::PyValue;
  TinyNet tiny;
  const StateDict sd = state_dict(tiny);
  auto save = [&](const std::string& name, const Blob& bytes, const LoadOptions& options) {
    TinyNet net;
    (void)load_state_dict(net, parse_checkpoint_contents(bytes, name), options);
    write(dir / name, bytes);
  };
  auto str = [](const char* s) { return PyValue::string(s); };
  const PyValue optimizer = PyValue::dict(
      {str("state"),
       PyValue::dict({PyValue::integer_value(0),
                      PyValue::dict({str("step"), PyValue::tensor_value(Tensor::from_floats({}, std::vector<float>{1})),
                                     str("exp_avg"), PyValue::tensor_value(sd.at("0.weight"))})}),
       str("param_groups"),
       PyValue::list({PyValue::dict({str("lr"), PyValue::floating_value(1e-3), str("betas"),
                                     PyValue::tuple({PyValue::floating_value(0.9), PyValue::floating_value(0.999)}),
                                     str("amsgrad"), PyValue::boolean(false), str("foreach"), PyValue::none(),
                                     str("params"), PyValue::list({PyValue::integer_value(0), PyValue::integer_value(1)})})})});
  auto tutorial = [&](const StateDict& model) {
    return PyValue::dict({str("epoch"), PyValue::integer_value(3), str("model_state_dict"), PyValue::state_dict(model),
                          str("optimizer_state_dict"), optimizer, str("loss"), PyValue::floating_value(0.25)});
  };
  save("nested_tutorial.ckpt", test::nested_checkpoint(tutorial(sd)), {});
  save("nested_two_models.ckpt",
       test::nested_checkpoint(PyValue::dict({str("model"), PyValue::state_dict(sd), str("ema"), PyValue::state_dict(sd)})),
       {.checkpoint_key = "ema"});
  save("nested_dataparallel.ckpt", test::nested_checkpoint(tutorial(test::with_prefix(sd, "module."))),
       {.strip_prefix = "module."});
  save("flat_compiled.ckpt", serialize_checkpoint(test::with_prefix(sd, "_orig_mod.")), {.strip_prefix = "_orig_mod."});
  auto bytes_of = [](auto v) {
    std::array<std::uint8_t, sizeof v> b{};
    std::memcpy(b.data(), &v, sizeof v);  // little-endian machines only write seeds
    return b;
  };
  save("dtype_float64.ckpt",
       serialize_checkpoint(test::floats_as(sd, DType::float64, [&](float f) { return bytes_of(static_cast<double>(f)); })), {});
  save("dtype_bfloat16.ckpt",
       serialize_checkpoint(test::floats_as(
           sd, DType::bfloat16, [&](float f) { return bytes_of(static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(f) >> 16)); })),
       {});
  StateDict half = test::floats_as(sd, DType::float16, [&](float) { return bytes_of(std::uint16_t{0x3c00}); });
  half.insert_or_assign("1.num_batches_tracked",
                        Tensor::from_little_endian(DType::int32, {}, std::vector<std::uint8_t>{7, 0, 0, 0}));
  save("dtype_float16_int32.ckpt", serialize_checkpoint(half), {});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: ctnn_fuzz_seeds SEED_DIR\n";
    return 2;
  }
  try {
    const fs::path seeds = argv[1];
    for (const char* sub : {"cifar", "checkpoint", "zip", "pickle"}) fs::create_directories(seeds / sub);
    write_cifar(seeds / "cifar");
    write_checkpoints(seeds / "checkpoint");
    write_nested(seeds / "checkpoint");
    write_zips(seeds / "zip");
    write_pickles(seeds / "pickle");
    derive(seeds);
    for (const char* sub : {"cifar", "checkpoint", "zip", "pickle"}) {
      std::size_t n = 0, bytes = 0;
      for (const auto& e : fs::directory_iterator(seeds / sub)) {
        ++n;
        bytes += static_cast<std::size_t>(fs::file_size(e.path()));
      }
      std::cout << "ctnn_fuzz_seeds: " << n << " seeds (" << bytes << " bytes) in " << (seeds / sub).string() << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "ctnn_fuzz_seeds: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
