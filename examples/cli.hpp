// A small command-line parser shared by the example programs: --name value flags, validated,
// with one clear error line for anything wrong.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "ctnn/data/cifar.hpp"
#include "ctnn/ops/precision.hpp"
#include "ctnn/data/synthetic.hpp"
#include "ctnn/io/state_dict.hpp"

namespace ctnn::cli {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Args {
 public:
  // `flags` are the accepted --names that take a value, `switches` those that do not.
  Args(int argc, char** argv, std::vector<std::string> flags, std::vector<std::string> switches) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + a + "'");
      std::string name = a.substr(2), value;
      const auto eq = name.find('=');
      const bool inline_value = eq != std::string::npos;
      if (inline_value) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      // Given twice, one of the two would be dropped without a word (`--epochs 2 --epochs 1`).
      if (has(name)) throw UsageError("--" + name + " given twice");
      if (contains(switches, name)) {
        if (inline_value) throw UsageError("--" + name + " takes no value");
        switches_[name] = true;
      } else if (contains(flags, name)) {
        if (!inline_value) {
          // The next option is not this one's value: `--out --resume` would write to a
          // directory named "--resume". (A value that starts with "--" can be given as --out=--x.)
          if (i + 1 >= argc || std::string_view(argv[i + 1]).rfind("--", 0) == 0)
            throw UsageError("--" + name + " needs a value");
          value = argv[++i];
        }
        // No option means anything by an empty value (`--out=` would write to no directory).
        if (value.empty()) throw UsageError("--" + name + " needs a non-empty value");
        values_[name] = value;
      } else {
        throw UsageError("unknown option --" + name);
      }
    }
  }

  bool has(const std::string& name) const { return values_.count(name) || switches_.count(name); }
  std::string get(const std::string& name, const std::string& fallback) const {
    const auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second;
  }
  long integer(const std::string& name, long fallback, long min, long max) const {
    const auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    long v = 0;
    const auto& s = it->second;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size())
      throw UsageError("--" + name + " expects an integer, got '" + s + "'");
    if (v < min || v > max)
      throw UsageError("--" + name + " must be between " + std::to_string(min) + " and " + std::to_string(max) +
                       ", got " + s);
    return v;
  }
  double number(const std::string& name, double fallback, double min_exclusive) const {
    const auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    const auto& s = it->second;
    // Decimal only: stod would also take "inf", "nan", hex and leading spaces.
    double v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, std::chars_format::general);
    if (ec == std::errc::result_out_of_range) throw UsageError("--" + name + " is out of range, got '" + s + "'");
    if (ec != std::errc() || p != s.data() + s.size() || !std::isfinite(v))
      throw UsageError("--" + name + " expects a number, got '" + s + "'");
    if (!(v > min_exclusive)) {
      char bound[32];
      std::snprintf(bound, sizeof bound, "%g", min_exclusive);
      throw UsageError("--" + name + " must be greater than " + bound + ", got '" + s + "'");
    }
    return v;
  }
  bool flag(const std::string& name) const { return switches_.count(name) > 0; }

 private:
  static bool contains(const std::vector<std::string>& v, const std::string& s) {
    for (const auto& x : v)
      if (x == s) return true;
    return false;
  }
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> switches_;
};

// Where the programs look for CIFAR-10 without --data: where the build's `cifar10` target
// unpacks it (CMake's CTNN_CIFAR10_DIR, passed to ctnn's programs as CTNN_DEFAULT_CIFAR10_DIR, an
// absolute path, so any working directory finds it), else data/cifar-10-batches-bin under the
// working directory (programs built without that definition).
inline std::string default_data_dir() {
#ifdef CTNN_DEFAULT_CIFAR10_DIR
  return CTNN_DEFAULT_CIFAR10_DIR;
#else
  return "data/cifar-10-batches-bin";
#endif
}

// The message for a missing CIFAR-10 directory: the build target that fetches it (the command
// names this build's own directory when CMake passed it as CTNN_BUILD_DIR).
inline std::string missing_data_help(const std::string& dir) {
#ifdef CTNN_BUILD_DIR
  const std::string build = CTNN_BUILD_DIR;
#else
  const std::string build = "build";
#endif
  return "CIFAR-10 not found at '" + dir + "'. Fetch it once with the build's target\n" +
         "  cmake --build " + build + " --target cifar10\n" +
         "(the official cifar-10-binary.tar.gz, checked against its checksum and unpacked to " + default_data_dir() +
         ", where the programs look without --data), or unpack that archive yourself and pass --data "
         ".../cifar-10-batches-bin; --synthetic N runs without the data set.";
}

// The options of --checkpoint-key KEY and --strip-prefix PREFIX (shared by ctnn-eval's
// --checkpoint and ctnn-train's --load); `what` names the option they refine, for the error
// when they come without it.
inline io::LoadOptions load_options(const Args& args, bool have_checkpoint, const std::string& what) {
  io::LoadOptions o;
  o.checkpoint_key = args.get("checkpoint-key", "");
  o.strip_prefix = args.get("strip-prefix", "");
  for (const char* name : {"checkpoint-key", "strip-prefix"}) {
    if (!args.has(name)) continue;
    if (!have_checkpoint) throw UsageError(std::string("--") + name + " applies to " + what + ", which is not given");
  }
  return o;
}

// Loads a checkpoint into `net` as `options` say and prints what was done on the way (which
// dictionary of a nested checkpoint, prefixes stripped, dtypes converted), one line each.
template <class Net>
void load_checkpoint(Net& net, const std::string& file, const io::LoadOptions& options, std::ostream& out) {
  const io::LoadResult r = io::load_state_dict(net, file, options);
  for (const auto& note : r.notes) out << file << ": " << note << "\n";
}

// The shortest text that reads back as v.
inline std::string shortest(double v) {
  char b[32];
  return std::string(b, std::to_chars(b, b + sizeof b, v).ptr);
}
// A number as Python's str() of a float writes it (the shortest text, with ".0" when it has no
// fraction): main.py prints its accuracy with '{} %'.format(...), 37.0 %.
inline std::string python_float(double v) {
  std::string s = shortest(v);
  if (std::isfinite(v) && s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

// The SYNTHETIC stand-in for CIFAR-10 that --synthetic N selects in every example: N training
// images and N/5 test images, from the run's seed, so ctnn-train and ctnn-eval see the same sets.
inline data::Dataset synthetic_split(long n, std::uint64_t seed, data::Split split) {
  return split == data::Split::train ? data::make_synthetic_cifar(static_cast<int>(n), seed + 1)
                                     : data::make_synthetic_cifar(static_cast<int>(n > 5 ? n / 5 : 1), seed + 2);
}

// The data every example runs on: --synthetic N's generated split, else CIFAR-10's from `dir`.
inline data::Dataset dataset(long synthetic, std::uint64_t seed, const std::string& dir, data::Split split) {
  if (synthetic > 0) return synthetic_split(synthetic, seed, split);
  // A folder it may not look at (an error code other than "no such file") is
  // load_cifar10's to report, with the reason, not a raw filesystem exception.
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec) && (!ec || io::missing(ec))) throw UsageError(missing_data_help(dir));
  return data::load_cifar10(dir, split);
}

// --data names CIFAR-10's folder and --synthetic N replaces CIFAR-10 by generated images: given
// both, one of them would be ignored without a word.
inline void check_data_source(const Args& args) {
  if (args.has("data") && args.has("synthetic"))
    throw UsageError("--data and --synthetic exclude each other (--synthetic N generates its images instead of reading CIFAR-10)");
}

// --precision fp32|bf16 (default fp32, the assignment's arithmetic).
inline Precision precision_option(const Args& args) {
  const std::string p = args.get("precision", "fp32");
  if (const auto v = parse_precision(p)) return *v;
  throw UsageError("--precision must be fp32 or bf16, got '" + p + "'");
}

// The line programs print beside the GEMM line: the precision and, for bf16, its kernels.
inline std::string precision_summary(Precision p) {
  return p == Precision::fp32 ? "Precision: fp32"
                              : "Precision: bf16 products, fp32 sums, weights and everything else; " + ops::bf16_kernel_summary();
}

// The choice (anything with a `name`) that --model names; --model is required, and a missing or
// unknown one is a UsageError that lists the names ("vgg16 or resnet50").
template <class Choice>
const Choice& model_option(const Args& args, const std::vector<Choice>& choices) {
  std::string names;
  for (std::size_t i = 0; i < choices.size(); ++i)
    names += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + choices[i].name;
  const std::string model = args.get("model", "");
  if (model.empty()) throw UsageError("--model is required (" + names + ")");
  const auto it = std::find_if(choices.begin(), choices.end(), [&](const Choice& c) { return c.name == model; });
  if (it == choices.end()) throw UsageError("--model must be " + names + ", got '" + model + "'");
  return *it;
}

}  // namespace ctnn::cli
