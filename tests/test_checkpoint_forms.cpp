// The checkpoints people have, as PyTorch itself writes them (the README's table of checkpoint
// forms, issue 16): tests/pytorch/make_checkpoint_forms.py saves a small network the ways
// tutorials and training scripts do, and every form must load into ctnn's equivalent network
// with exactly the values of the plain state_dict (or of PyTorch's own float32 conversion), or
// be refused with the message the table promises. test_checkpoint has the same cases built by
// hand, so that they run without PyTorch.
//
// The data directory is CTNN_FORMS_DIR (tests/CMakeLists.txt; the environment may override it).
// Without PyTorch the generator leaves a SKIPPED marker and every case prints
// "CTNN_FORMS_SKIPPED", which CTest reports as a skip.
#include "support/check.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "ctnn/io/state_dict.hpp"

#ifndef CTNN_FORMS_DIR
#define CTNN_FORMS_DIR ""
#endif

using namespace ctnn;
using namespace ctnn::io;
namespace fs = std::filesystem;

namespace {

// PyTorch's nn.Sequential(Conv2d(3, 4, 3, 1, 1), BatchNorm2d(4), ReLU, MaxPool2d(2, 2), Flatten, Linear(16, 10)).
using SmallNet = Network<Shape<3, 4, 4>, Sequential<Conv2d<3, 4, 3, 1, 1>, BatchNorm2d<4>, ReLU, MaxPool2d<2, 2>,
                                                    Flatten, Linear<16, 10>>>;

fs::path dir() {
  if (const char* env = std::getenv("CTNN_FORMS_DIR"); env && *env) return env;
  return CTNN_FORMS_DIR;
}

// True (after saying so) when the generator found no PyTorch; fails when there is no data at all.
bool skipped() {
  if (fs::exists(dir() / "SKIPPED")) {
    std::ifstream in(dir() / "SKIPPED");
    std::string reason;
    std::getline(in, reason);
    std::cout << "CTNN_FORMS_SKIPPED: " << reason << std::endl;
    return true;
  }
  REQUIRE_MESSAGE(fs::exists(dir() / "small_plain.ckpt"),
                  "no checkpoint forms in '" << dir().string() << "': run the tests with ctest, whose "
                                             << "checkpoint_forms_generate test writes them, or set CTNN_FORMS_DIR");
  return false;
}

std::string path(const std::string& name) { return (dir() / name).string(); }

// The network's state after loading `name` with `options`; the notes through `notes`.
StateDict loaded(const std::string& name, const LoadOptions& options = {}, std::vector<std::string>* notes = nullptr) {
  SmallNet net(99);
  const LoadResult r = load_state_dict(net, path(name), options);
  if (notes) *notes = r.notes;
  return state_dict(net);
}

// Same keys, and every tensor bit-identical (dtypes as the network holds them).
void expect_same(const StateDict& a, const StateDict& b) {
  REQUIRE(a.keys() == b.keys());
  for (const auto& item : a) CHECK_MESSAGE(identical(item.second, b.at(item.first)), item.first);
}

std::string error_of(const std::string& name, const LoadOptions& options = {}) {
  SmallNet net(99);
  try {
    load_state_dict(net, path(name), options);
  } catch (const CheckpointError& e) {
    const std::string what = e.what();
    CHECK(what.rfind(path(name), 0) == 0);  // names the file
    return what;
  }
  FAIL("no error for " << name);
  return "";
}

}  // namespace

TEST_CASE("PyTorch's tutorial-style checkpoint: the state_dict inside is found; the optimizer's floats and Nones are read") {
  if (skipped()) return;
  const StateDict plain = loaded("small_plain.ckpt");
  std::vector<std::string> notes;
  expect_same(loaded("small_tutorial.ckpt", {}, &notes), plain);
  CHECK(notes == std::vector<std::string>{"using 'model_state_dict'"});
  expect_same(loaded("small_tutorial.ckpt", {.checkpoint_key = "model_state_dict"}), plain);
  // Adam's per-parameter state is there too, under integer keys.
  const CheckpointContents c = read_checkpoint_contents(path("small_tutorial.ckpt"));
  REQUIRE(c.state_dicts.size() >= 2);
  CHECK(c.state_dicts[1].key == "optimizer_state_dict.state.0");
  CHECK(c.state_dicts[1].tensors.contains("exp_avg"));
  CHECK(c.top_level.front() == std::pair<std::string, std::string>{"epoch", "int"});

  CHECK(error_of("small_two_models.ckpt").find("2 dictionaries of tensors in it match the network: 'model' (9 tensors), "
                                               "'ema' (9 tensors): pick one with --checkpoint-key KEY") != std::string::npos);
  expect_same(loaded("small_two_models.ckpt", {.checkpoint_key = "ema"}), loaded("small_ema_plain.ckpt"));
  CHECK(error_of("small_tutorial.ckpt", {.checkpoint_key = "epoch"}).find("no dictionary of tensors at 'epoch' (it holds int)") !=
        std::string::npos);
}

TEST_CASE("PyTorch's DataParallel and torch.compile names: a hint without strip_prefix, the plain values with it") {
  if (skipped()) return;
  const StateDict plain = loaded("small_plain.ckpt");
  const std::string e = error_of("small_dataparallel.ckpt");
  CHECK(e.find("unexpected keys (9): module.0.weight") != std::string::npos);
  CHECK(e.find("the checkpoint's keys start with 'module.' (saved from nn.DataParallel or DistributedDataParallel): strip "
               "that prefix on load (--strip-prefix module., or LoadOptions::strip_prefix)") != std::string::npos);
  std::vector<std::string> notes;
  expect_same(loaded("small_dataparallel.ckpt", {.strip_prefix = "module."}, &notes), plain);
  CHECK(notes == std::vector<std::string>{"stripped the prefix 'module.' from 9 of 9 keys"});

  CHECK(error_of("small_dataparallel_tutorial.ckpt").find("'model_state_dict' (9 tensors; the network's with --strip-prefix module.)") !=
        std::string::npos);
  expect_same(loaded("small_dataparallel_tutorial.ckpt", {.strip_prefix = "module."}, &notes), plain);
  CHECK(notes == std::vector<std::string>{"using 'model_state_dict'", "stripped the prefix 'module.' from 9 of 9 keys"});

  CHECK(error_of("small_compiled.ckpt").find("start with '_orig_mod.' (saved from torch.compile)") != std::string::npos);
  expect_same(loaded("small_compiled.ckpt", {.strip_prefix = "_orig_mod."}), plain);
}

TEST_CASE("PyTorch's float16, bfloat16 and float64 state_dicts load as PyTorch's own .float() of them; int32 counters load") {
  if (skipped()) return;
  for (const std::string dtype : {"half", "bfloat16", "float64"}) {
    CAPTURE(dtype);
    std::vector<std::string> notes;
    const StateDict got = loaded("small_" + dtype + ".ckpt", {}, &notes);
    expect_same(got, loaded("small_" + dtype + "_expected.ckpt"));
    const std::string name = dtype == "half" ? "float16" : dtype;
    CHECK(notes == std::vector<std::string>{"converted 8 " + name +
                                            " tensors to float32 (the network's dtypes), as PyTorch's load_state_dict does"});
    // The file really holds that dtype (not a float32 copy).
    CHECK(read_checkpoint(path("small_" + dtype + ".ckpt")).at("0.weight").dtype() ==
          (dtype == "half" ? DType::float16 : dtype == "bfloat16" ? DType::bfloat16 : DType::float64));
  }
  // float64 values float32 cannot hold were rounded, not truncated to the same values as the plain file's.
  CHECK_FALSE(identical(loaded("small_float64.ckpt").at("0.weight"), loaded("small_plain.ckpt").at("0.weight")));

  std::vector<std::string> notes;
  expect_same(loaded("small_counter_int32.ckpt", {}, &notes), loaded("small_plain.ckpt"));
  CHECK(notes == std::vector<std::string>{"converted 1 int32 tensors to int64 (the network's dtypes), as PyTorch's "
                                          "load_state_dict does"});
  CHECK(error_of("small_int_weight.ckpt").find("5.bias: checkpoint [10] int64, network [10] float32 (integer values where "
                                               "floats are expected)") != std::string::npos);
}

TEST_CASE("PyTorch's legacy files and whole pickled models are still refused with a clear message") {
  if (skipped()) return;
  CHECK(error_of("small_legacy.ckpt").find("a legacy PyTorch checkpoint (PyTorch < 1.6") != std::string::npos);
  CHECK(error_of("small_whole_model.ckpt").find("refers to the Python object 'torch.nn.modules.container.Sequential'") !=
        std::string::npos);
}
