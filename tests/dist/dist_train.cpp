// Data-parallel training as a user writes it (the README's loop plus ctnn::dist), for the `mpi`
// tests: trains a network for a few steps on synthetic data under mpiexec and writes what it
// learnt, so that runs at different process counts, thread counts and BatchNorm modes can be
// compared; and compares two such files.
//
//   dist_train --model small|resnet50 --steps K --batch B --out FILE [--local-bn] [--threads T]
//              [--seed S] [--lr LR] [--optimizer adam|sgd] [--data DIR]
//   dist_train --compare A B --max-diff X      exit 0 if every loss and state value agrees within
//                                              X (relative to the largest magnitude of its tensor)
//   dist_train --compare A B --differ X        exit 0 only if some value differs by more than X
//   dist_train --compare A.ckpt B.ckpt --checkpoints X [KEY...]   two PyTorch-format
//                                              checkpoints agree within X of each tensor's
//                                              largest value (the KEYs left out: see run.cmake)
//   dist_train --compare A.csv B.csv --logs X  two ctnn-train loss logs: the same steps, losses
//                                              and running means within X relative
//   dist_train --compare A B --within C D F    exit 0 if A and B are at most F times as far apart
//                                              as C and D (Euclidean distance over every value):
//                                              C and D are two correct runs that add in another
//                                              order (--rotate), the network's own rounding noise
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctnn/ctnn.hpp>
#include <ctnn/dist/data_parallel.hpp>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace ctnn;

namespace {

// Small enough to train in milliseconds, with every layer kind that sees the batch: BatchNorm2d,
// BatchNorm1d and Dropout.
using Small = Network<Shape<3, 32, 32>,
                      Sequential<Conv2d<3, 8, 3, 1, 1>, BatchNorm2d<8>, ReLU, MaxPool2d<4>, Conv2d<8, 16, 3, 1, 1>,
                                 BatchNorm2d<16>, ReLU, MaxPool2d<4>, Flatten, Linear<64, 32>, BatchNorm1d<32>, ReLU,
                                 Dropout<>, Linear<32, 10>>>;

struct Options {
  std::string model = "small", out, data;
  int steps = 3, batch = 16, threads = 0;
  std::uint64_t seed = 1;
  double lr = 1e-3;
  bool local_bn = false, rotate = false;
  std::string optimizer = "adam";
};

// Every float of the network's state (parameters and buffers), in state_dict order.
struct Collect : StateVisitor {
  std::vector<std::pair<std::string, std::vector<float>>> tensors;
  void parameter(const std::string& name, const TensorShape&, Param& p) override {
    tensors.emplace_back(name, std::vector<float>(p.value, p.value + p.numel));
  }
  void buffer(const std::string& name, const TensorShape&, std::span<float> v) override {
    tensors.emplace_back(name, std::vector<float>(v.begin(), v.end()));
  }
  void counter(const std::string& name, std::int64_t& v) override {
    tensors.emplace_back(name, std::vector<float>{static_cast<float>(v)});
  }
};

// Moves the second half of the batch's samples to the front: the same global batch, summed in
// another order (weight gradients add over the batch), a correct run that rounds differently.
void rotate_half(data::LoaderBatch& b) {
  const int n = b.size(), h = n / 2;
  const std::size_t plane = data::ImageBatch::shape::plane;
  std::vector<float> tmp(b.images.size());
  for (int c = 0; c < data::ImageBatch::shape::channels; ++c)
    for (int i = 0; i < n; ++i)
      std::copy_n(b.images.data() + (static_cast<std::size_t>(c) * n + (i + h) % n) * plane, plane,
                  tmp.data() + (static_cast<std::size_t>(c) * n + i) * plane);
  std::copy(tmp.begin(), tmp.end(), b.images.data());
  std::rotate(b.labels.begin(), b.labels.begin() + h, b.labels.end());
}

template <class Net>
int train(const dist::Communicator& comm, const Options& o) {
  data::Dataset set = o.data.empty() ? data::make_synthetic_cifar(o.batch * o.steps, o.seed)
                                     : data::load_cifar10(o.data, data::Split::test);
  auto lo = data::LoaderOptions::train(o.seed, o.batch);
  lo.shard = dist::shard_of(comm);
  data::DataLoader loader(set, lo);
  auto net = std::make_unique<Net>(o.seed);
  // SGD for comparisons across process counts: Adam divides each gradient by its own running
  // magnitude, so a parameter whose exact gradient is zero (a convolution's bias before a
  // BatchNorm) takes full-size steps in the direction of its rounding noise, in any framework,
  // and two correct runs that round differently move it apart by up to 2 lr per step.
  Adam adam(*net, {.lr = o.lr});
  SGD sgd(*net, {.lr = o.lr, .momentum = 0.9});
  auto step_optimizer = [&] { o.optimizer == "sgd" ? sgd.step() : adam.step(); };
  CrossEntropyLoss<10> criterion;
  const auto bn = o.local_bn ? dist::BatchNormMode::local : dist::BatchNormMode::global;
  std::vector<double> losses;
  data::LoaderBatch batch;
  for (loader.start_epoch(0); loader.next(batch) && static_cast<int>(losses.size()) < o.steps;) {
    if (o.rotate) rotate_half(batch);
    dist::StepScope step(comm, batch, bn);
    net->zero_grad();
    const float share = criterion.forward(net->forward(batch.images), batch.labels, batch.global_size);
    net->backward(batch.images, criterion.grad());
    dist::allreduce_gradients(comm, net->gradients());
    step_optimizer();
    losses.push_back(dist::global_loss(comm, share));
  }
  if (comm.rank() != 0) return 0;
  Collect c;
  net->visit_state(c);
  // Binary: per tensor its name, a newline, its count and its values as doubles (a file of
  // ResNet50's 23 million values in text took seconds to write and read).
  std::ofstream f(o.out, std::ios::binary);
  auto put = [&](const std::string& name, const std::vector<double>& v) {
    const std::uint64_t n = v.size();
    f << name << '\n';
    f.write(reinterpret_cast<const char*>(&n), sizeof n);
    f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(n * sizeof(double)));
  };
  for (std::size_t i = 0; i < losses.size(); ++i) put("loss." + std::to_string(i), {losses[i]});
  for (const auto& [name, v] : c.tensors) put(name, std::vector<double>(v.begin(), v.end()));
  if (!f) throw std::runtime_error("cannot write " + o.out);
  std::printf("rank 0 of %d: %zu steps, last loss %.6f, wrote %s\n", comm.size(), losses.size(), losses.back(),
              o.out.c_str());
  return 0;
}

// A run gone to NaN or infinity must fail every comparison, whichever way it leans: a NaN
// compares false with any limit, so it would pass a check that two runs differ, and be skipped
// by a running maximum.
void require_finite(double v, const std::string& where) {
  if (!std::isfinite(v)) throw std::runtime_error("non-finite value " + std::to_string(v) + " at " + where);
}

std::map<std::string, std::vector<double>> read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::map<std::string, std::vector<double>> out;
  std::string name;
  while (std::getline(f, name)) {
    std::uint64_t n = 0;
    f.read(reinterpret_cast<char*>(&n), sizeof n);
    auto& v = out[name];
    v.resize(n);
    f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(double)));
    if (!f) throw std::runtime_error(path + " is truncated at " + name);
    for (std::size_t i = 0; i < n; ++i) require_finite(v[i], path + ": " + name + "[" + std::to_string(i) + "]");
  }
  if (out.empty()) throw std::runtime_error(path + " holds nothing");
  return out;
}

// The largest difference between A and B, relative to each tensor's largest magnitude. A limit
// of 0 asks for the same bits (-0 and +0 differ); so far only here, not for --checkpoints.
int compare(const std::string& a_path, const std::string& b_path, double limit, bool expect_differ) {
  const auto a = read(a_path), b = read(b_path);
  if (a.size() != b.size()) throw std::runtime_error("the two files hold different tensors");
  double worst = 0.0;
  std::string where;
  for (const auto& [name, va] : a) {
    const auto it = b.find(name);
    if (it == b.end() || it->second.size() != va.size()) throw std::runtime_error(name + " differs in size");
    double scale = 1e-30;
    for (double x : va) scale = std::max(scale, std::abs(x));
    for (std::size_t i = 0; i < va.size(); ++i) {
      double d = std::abs(va[i] - it->second[i]) / scale;
      if (limit == 0.0 && std::bit_cast<std::uint64_t>(va[i]) != std::bit_cast<std::uint64_t>(it->second[i]))
        d = std::max(d, std::numeric_limits<double>::min());
      if (d > worst) worst = d, where = name + "[" + std::to_string(i) + "]";
    }
  }
  std::printf("largest relative difference %.3g at %s (limit %.3g)\n", worst, where.empty() ? "-" : where.c_str(),
              limit);
  return expect_differ ? (worst > limit ? 0 : 1) : (worst <= limit ? 0 : 1);
}

// Two checkpoints, tensor by tensor.
int compare_checkpoints(const std::string& a_path, const std::string& b_path, double limit,
                        const std::vector<std::string>& skip) {
  const io::StateDict a = io::read_checkpoint(a_path), b = io::read_checkpoint(b_path);
  double worst = 0.0;
  std::string where;
  std::size_t tensors = 0;
  for (const auto& [name, ta] : a) {
    const io::Tensor* tb = b.find(name);
    if (!tb || tb->numel() != ta.numel() || tb->dtype() != ta.dtype()) throw std::runtime_error(name + " differs in kind");
    if (std::find(skip.begin(), skip.end(), name) != skip.end() || ta.dtype() != io::DType::float32) continue;
    std::vector<float> va(ta.numel()), vb(ta.numel());
    ta.copy_to(va);
    tb->copy_to(vb);
    double scale = 1e-30;
    for (float x : va) scale = std::max(scale, std::abs(static_cast<double>(x)));
    for (std::size_t i = 0; i < va.size(); ++i) {
      require_finite(va[i], a_path + ": " + name + "[" + std::to_string(i) + "]");
      require_finite(vb[i], b_path + ": " + name + "[" + std::to_string(i) + "]");
      const double d = std::abs(static_cast<double>(va[i]) - vb[i]) / scale;
      if (d > worst) worst = d, where = name + "[" + std::to_string(i) + "]";
    }
    ++tensors;
  }
  std::printf("%zu tensors: largest relative difference %.3g at %s (limit %.3g)\n", tensors, worst,
              where.empty() ? "-" : where.c_str(), limit);
  return tensors > 0 && worst <= limit ? 0 : 1;
}

// Two loss logs (epoch,step,loss,running_loss,lr rows), row by row.
int compare_logs(const std::string& a_path, const std::string& b_path, double limit) {
  auto rows = [](const std::string& path) {
    std::ifstream f(path);
    if (!f) throw std::runtime_error("cannot read " + path);
    std::vector<std::vector<double>> out;
    std::string line;
    std::getline(f, line);  // header
    while (std::getline(f, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::vector<double> v;
      std::stringstream ss(line);
      for (std::string cell; std::getline(ss, cell, ',');) {
        v.push_back(std::stod(cell));
        require_finite(v.back(), path + ": row " + std::to_string(out.size() + 1));
      }
      out.push_back(v);
    }
    return out;
  };
  const auto a = rows(a_path), b = rows(b_path);
  if (a.empty() || a.size() != b.size()) throw std::runtime_error("the logs have different numbers of steps");
  double worst = 0.0;
  for (std::size_t r = 0; r < a.size(); ++r) {
    if (a[r].size() != 5 || b[r].size() != 5 || a[r][0] != b[r][0] || a[r][1] != b[r][1] || a[r][4] != b[r][4])
      throw std::runtime_error("row " + std::to_string(r + 1) + ": different step or learning rate");
    for (int k : {2, 3}) worst = std::max(worst, std::abs(a[r][k] - b[r][k]) / std::abs(a[r][k]));
  }
  std::printf("%zu steps: largest relative loss difference %.3g (limit %.3g)\n", a.size(), worst, limit);
  return worst <= limit ? 0 : 1;
}

double distance(const std::map<std::string, std::vector<double>>& a, const std::map<std::string, std::vector<double>>& b) {
  double s = 0.0;
  for (const auto& [name, va] : a) {
    if (name.rfind("loss.", 0) == 0) continue;
    const auto& vb = b.at(name);
    for (std::size_t i = 0; i < va.size(); ++i) s += (va[i] - vb[i]) * (va[i] - vb[i]);
  }
  return std::sqrt(s);
}

}  // namespace

// The --compare forms: 0 when the check holds, 1 when it does not, 2 on an error (an unreadable
// or non-finite file), so that a check expected to fail (1) is not passed by a broken run.
int compare_main(int argc, char** argv) {
  if (argc < 6) throw std::invalid_argument("usage: --compare A B --max-diff|--differ LIMIT (or --within, --checkpoints, --logs)");
  if (argc == 8 && std::strcmp(argv[4], "--within") == 0) {
    const auto a = read(argv[2]);
    const double ab = distance(a, read(argv[3])), cd = distance(read(argv[5]), read(argv[6]));
    // The reference never counts as less than one float rounding (2^-24) of every weight: on a
    // CPU whose kernels sum the swapped halves of the batch almost as before, the reordered run
    // lands closer than the float noise of any other order (measured on AMD Zen 4 with
    // OpenBLAS's Cooperlake kernels: 7.5e-7 against 3.1e-6 for 2 processes, with weights of norm
    // in the hundreds).
    std::map<std::string, std::vector<double>> zero;
    for (const auto& [name, v] : a) zero[name].assign(v.size(), 0.0);
    const double floor = 0x1p-24 * distance(a, zero), factor = std::stod(argv[7]);
    const double allowed = factor * std::max(cd, floor);
    std::printf("distance %.3g, reference distance %.3g (floor %.3g), allowed %.3g\n", ab, cd, floor, allowed);
    return ab <= allowed ? 0 : 1;
  }
  if (argc >= 6 && std::strcmp(argv[4], "--checkpoints") == 0)
    return compare_checkpoints(argv[2], argv[3], std::stod(argv[5]), std::vector<std::string>(argv + 6, argv + argc));
  if (argc == 6 && std::strcmp(argv[4], "--logs") == 0) return compare_logs(argv[2], argv[3], std::stod(argv[5]));
  if (argc != 6) throw std::invalid_argument("--compare A B --max-diff|--differ LIMIT takes nothing more");
  return compare(argv[2], argv[3], std::stod(argv[5]), std::strcmp(argv[4], "--differ") == 0);
}

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--compare") == 0) {
    try {
      return compare_main(argc, argv);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dist_train: %s\n", e.what());
      return 2;
    }
  }
  dist::Environment env(argc, argv);
  dist::Communicator comm;
  return dist::run_or_abort(comm, "dist_train", [&] {
    Options o;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      if (a == "--model") o.model = value();
      else if (a == "--steps") o.steps = std::stoi(value());
      else if (a == "--batch") o.batch = std::stoi(value());
      else if (a == "--threads") o.threads = std::stoi(value());
      else if (a == "--seed") o.seed = std::stoull(value());
      else if (a == "--lr") o.lr = std::stod(value());
      else if (a == "--out") o.out = value();
      else if (a == "--data") o.data = value();
      else if (a == "--local-bn") o.local_bn = true;
      else if (a == "--rotate") o.rotate = true;
      else if (a == "--optimizer") o.optimizer = value();
      else throw std::invalid_argument("unknown option " + a);
    }
    set_num_threads(o.threads);
    // Settings every process must share (the thread count may differ; the data path is each
    // machine's own).
    dist::require_same(comm, "model " + o.model + "\nsteps " + std::to_string(o.steps) + "\nbatch " +
                                 std::to_string(o.batch) + "\nseed " + std::to_string(o.seed) + "\nlr " +
                                 std::to_string(o.lr) + "\nlocal-bn " + std::to_string(o.local_bn) + "\noptimizer " + o.optimizer);
    if (o.model == "small") return train<Small>(comm, o);
    if (o.model == "resnet50") return train<ResNet50_layer4<10>>(comm, o);
    throw std::invalid_argument("unknown model " + o.model);
  });
}
