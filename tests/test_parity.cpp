// Whole-network parity with PyTorch, through PyTorch's own checkpoint files.
//
// tests/pytorch/make_parity.py (CTest test `parity_generate`) writes, for both assignment
// networks, a checkpoint and PyTorch 1.13's results on a fixed batch of 4 images (in float32,
// and in float64 to measure how far float32 itself is from exact arithmetic). This test loads
// the checkpoint into the ctnn network, repeats the evaluation and one training step (dropout
// off, Adam lr 1e-3) and compares everything. It then writes what ctnn did for the two scripts
// that run after it:
//   <model>_ctnn_step.pt    ctnn's activation pattern (every ReLU mask and max-pool choice),
//                           logits, loss, gradients and post-step state of the training step:
//                           tests/pytorch/check_train_step.py (test `parity_train_step`) repeats
//                           the step in PyTorch on exactly that pattern, which allows a tight
//                           gradient comparison (see "Gradients" below);
//   <model>_ctnn_step100.pt the same for the assignment's batch of 100 (parity_full_batch);
//   <model>_ctnn.ckpt,      ctnn's checkpoint of the stepped network and its eval-mode logits:
//   <model>_ctnn_logits.pt  tests/pytorch/check_roundtrip.py (test `parity_roundtrip`) loads the
//                           checkpoint with weights_only=True and strict=True and compares.
//
// The data directory is CTNN_PARITY_DIR (set by tests/CMakeLists.txt, or in the environment).
// When PyTorch is not installed, the generator leaves a SKIPPED marker there and every test case
// prints "CTNN_PARITY_SKIPPED", which CTest reports as a skip.
#include "support/check.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>

#include "ctnn/io/state_dict.hpp"

using namespace ctnn;
using namespace ctnn::io;
namespace fs = std::filesystem;

#ifndef CTNN_PARITY_DIR
#define CTNN_PARITY_DIR ""
#endif

namespace {

constexpr int kBatch = 4;
constexpr double kLr = 1e-3, kAdamEps = 1e-8;

fs::path parity_dir() {
  if (const char* env = std::getenv("CTNN_PARITY_DIR"); env && *env) return env;
  return CTNN_PARITY_DIR;
}

// True (after saying so) when the generator found no PyTorch; fails when there is no data at all.
bool skipped() {
  const fs::path dir = parity_dir();
  if (fs::exists(dir / "SKIPPED")) {
    std::ifstream in(dir / "SKIPPED");
    std::string reason;
    std::getline(in, reason);
    std::cout << "CTNN_PARITY_SKIPPED: " << reason << std::endl;
    return true;
  }
  REQUIRE_MESSAGE(fs::exists(dir / "vgg16_expected.pt"),
                  "no parity data in '" << dir.string() << "': run the tests with ctest, whose parity_generate "
                                        << "test writes it, or set CTNN_PARITY_DIR");
  return false;
}

double max_abs(std::span<const float> v) {
  double m = 0.0;
  for (float x : v) m = std::max(m, std::abs(static_cast<double>(x)));
  return m;
}

// max |a - b| over max |b|: the error measure for logits, losses and statistics.
double scaled_error(std::span<const float> a, std::span<const float> b) {
  double err = 0.0;
  for (std::size_t i = 0; i < b.size(); ++i) err = std::max(err, std::abs(static_cast<double>(a[i]) - b[i]));
  const double scale = max_abs(b);
  return scale > 0.0 ? err / scale : err;
}

// ||a - b|| / ||b|| (Euclidean): the error measure for whole gradient tensors.
double l2_error(std::span<const float> a, std::span<const float> b) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

// The worst value of an error measure over a group of tensors, and where it was.
struct Worst {
  double value = 0.0;
  std::string key;
  void add(double e, const std::string& k) {
    if (e > value) value = e, key = k;
  }
};

template <class Net>
void disable_dropout(Net& net) {
  net.for_each_layer([](auto& layer, const std::string&) {
    if constexpr (requires { layer.p; }) layer.p = 0.0;
  });
}

// The biases whose gradient is exactly 0 in exact arithmetic: those of a convolution or linear
// layer directly followed by BatchNorm, which subtracts the per-channel batch mean and so
// cancels any constant added before it (every convolution of ResNet50_layer4; VGG16's
// classifier.1). What both libraries compute for them is rounding noise.
template <class Net>
std::set<std::string> biases_cancelled_by_batchnorm(Net& net) {
  std::vector<std::string> names;
  std::vector<bool> is_bn, has_bias;
  net.for_each_layer([&](auto& layer, const std::string& name) {
    using L = std::decay_t<decltype(layer)>;
    const bool bn = requires { L::num_features; };
    names.push_back(name);
    is_bn.push_back(bn);
    has_bias.push_back(!bn && requires { layer.bias; });
  });
  std::set<std::string> out;
  for (std::size_t i = 0; i + 1 < names.size(); ++i)
    if (has_bias[i] && is_bn[i + 1]) out.insert(names[i] + ".bias");
  return out;
}

// Every parameter's value and gradient, every buffer and counter, by state_dict key.
struct NamedState : StateVisitor {
  std::map<std::string, std::span<float>> values, gradients, buffers;
  std::map<std::string, std::int64_t*> counters;
  std::vector<std::string> parameter_keys;
  void parameter(const std::string& name, const TensorShape&, Param& p) override {
    values[name] = p.data();
    gradients[name] = p.gradient();
    parameter_keys.push_back(name);
  }
  void buffer(const std::string& name, const TensorShape&, std::span<float> data) override { buffers[name] = data; }
  void counter(const std::string& name, std::int64_t& v) override { counters[name] = &v; }
};

// Each of `tensors` as `<prefix><key>`, shaped as the checkpoint's parameter of that key.
void add_parameters(StateDict& out, const std::string& prefix, const std::map<std::string, std::span<float>>& tensors,
                    const StateDict& initial) {
  for (const auto& [key, data] : tensors) out.insert_or_assign(prefix + key, Tensor::from_floats(initial.at(key).shape(), data));
}

// Adam's first step moves a parameter by lr * g / (|g| + eps) (m^ = g, v^ = g^2 at t = 1).
double adam_first_move(double g) { return kLr * g / (std::abs(g) + kAdamEps); }

// ctnn's activation pattern of the last forward, in PyTorch's layouts: "relu.<layer>" the
// float mask (1 where the ReLU's output is > 0, i.e. where it passes gradients), NCHW;
// "maxpool.<layer>" the int64 index within each input plane that each output took, NCHW.
template <class Net>
void add_activation_pattern(Net& net, StateDict& out) {
  net.for_each_layer([&](auto& layer, const std::string& name) {
    using L = std::decay_t<decltype(layer)>;
    using S = typename L::out_shape;
    const int n = layer.output().batch();
    const TensorShape shape{n, S::channels, S::height, S::width};
    if constexpr (ctnn::test::is_relu<L>::value) {
      std::vector<float> mask = layer.output().to_nchw();
      for (float& v : mask) v = v > 0.0f ? 1.0f : 0.0f;
      out.insert_or_assign("relu." + name, Tensor::from_floats(shape, mask));
    } else if constexpr (requires { layer.indices(); }) {
      // ctnn keeps planes channel-major (plane q = c * N + i); PyTorch's order is (i, c).
      const auto& arg = layer.indices();
      std::vector<std::int64_t> nchw(arg.size());
      for (int c = 0; c < S::channels; ++c)
        for (int i = 0; i < n; ++i)
          for (int p = 0; p < S::plane; ++p)
            nchw[(static_cast<std::size_t>(i) * S::channels + c) * S::plane + p] =
                arg[(static_cast<std::size_t>(c) * n + i) * S::plane + p];
      out.insert_or_assign("maxpool." + name, Tensor::from_int64(shape, nchw));
    }
  });
}

// What check_train_step.py reads of a training step: the activation pattern, logits and loss
// of the forward and every parameter's gradient; `after.<key>` is added after the optimiser's step.
template <class Net>
StateDict step_record(Net& net, const NamedState& state, const StateDict& initial, const std::vector<float>& logits,
                      float loss) {
  StateDict step;
  add_activation_pattern(net, step);
  step.insert_or_assign("logits_train", Tensor::from_floats({static_cast<int>(logits.size() / 10), 10}, logits));
  step.insert_or_assign("loss", Tensor::from_floats({}, std::vector<float>{loss}));
  add_parameters(step, "grad.", state.gradients, initial);
  return step;
}

// A make_parity.py file's batch: its n images into x (the network's input), its labels returned.
template <class Input>
std::vector<int> parity_batch(const StateDict& d, int n, Input& x) {
  REQUIRE(d.at("x").shape() == TensorShape{n, 3, 32, 32});
  const std::vector<float> nchw = d.at("x").floats();
  x.from_nchw(nchw.data(), n);
  std::vector<int> labels;
  for (std::int64_t l : d.at("labels").int64s()) labels.push_back(static_cast<int>(l));
  return labels;
}

template <class Net>
void parity(const std::string& model) {
  if (skipped()) return;
  const fs::path dir = parity_dir();
  const StateDict expected = read_checkpoint(dir / (model + "_expected.pt"));
  const StateDict exact = read_checkpoint(dir / (model + "_float64.pt"));  // float64 results, rounded to float
  const StateDict initial = read_checkpoint(dir / (model + ".ckpt"));
  auto net = std::make_unique<Net>(12345);  // every value is then overwritten by the checkpoint
  load_state_dict(*net, initial, true, (dir / (model + ".ckpt")).string());
  NamedState state;
  net->visit_state(state);

  typename Net::Input x;
  const std::vector<int> labels = parity_batch(expected, kBatch, x);

  // Logits in evaluation mode: float32 sums of up to 4,608 products per value through 14 (VGG)
  // or 54 (ResNet) weight layers, in another order than PyTorch's. Rounding leaves ~1e-6 of the
  // logits' scale; 1e-4 leaves room and still catches any wrong weight, statistic or layer.
  net->eval();
  const double e_eval = scaled_error(net->forward(x).to_nchw(), expected.at("logits_eval").floats());
  CHECK_MESSAGE(e_eval <= 1e-4, "logits_eval: " << e_eval);
  // The same under NoGrad, as evaluate() and ctnn-eval run it: each Conv2d then applies the
  // BatchNorm and ReLU after it in its own epilogue, buffers are given back as the forward goes,
  // and the second pass reuses the transforms of the weights the first one cached.
  {
    const NoGrad no_grad;
    for (int pass = 1; pass <= 2; ++pass) {
      const double e = scaled_error(net->forward(x).to_nchw(), expected.at("logits_eval").floats());
      CHECK_MESSAGE(e <= 1e-4, "logits_eval under NoGrad, pass " << pass << ": " << e);
    }
  }

  // Training mode: BatchNorm normalises with batch statistics, which amplifies rounding (in
  // ResNet's layer4 each channel has only 4 x 2 x 2 = 16 values), so here the tolerance is
  // 1e-4 or three times PyTorch's own float32 error (against its float64 run), whichever is
  // larger. The same holds for the running statistics this forward updates.
  net->train();
  disable_dropout(*net);
  net->zero_grad();
  Adam adam(*net, {.lr = kLr});
  CrossEntropyLoss<10> criterion;
  const auto& logits = net->forward(x);
  const std::vector<float> logits_train = logits.to_nchw();
  const double torch_train_error =
      scaled_error(expected.at("logits_train").floats(), exact.at("logits_train").floats());
  const double rtol_train = std::max(1e-4, 3 * torch_train_error);
  const double e_train = scaled_error(logits_train, expected.at("logits_train").floats());
  CHECK_MESSAGE(e_train <= rtol_train, "logits_train: " << e_train << " (allowed " << rtol_train << ")");
  const float loss = criterion.forward(logits, labels);
  const double e_loss = std::abs(loss - expected.at("loss").floats()[0]) / std::abs(expected.at("loss").floats()[0]);
  CHECK_MESSAGE(e_loss <= rtol_train, "loss: " << loss << " vs " << expected.at("loss").floats()[0]);
  net->backward(x, criterion.grad());

  // Gradients. ReLU and max pooling switch where a value crosses 0 or a tie: a value within
  // rounding of such a kink may switch differently in two float32 computations, and the whole
  // gradient behind it changes by that unit's share. In VGG16 (eval-like arithmetic, rounding
  // ~1e-6) that does not happen; in ResNet's training step the float32 noise of layer4 flips a
  // few units and PyTorch's own float32 gradients differ from its float64 ones by ~2% (L2). So
  // this test bounds each gradient tensor's L2 error by 1e-4 or three times the worst such
  // error of PyTorch itself, whichever is larger, which catches any structural mistake; the
  // tight comparison is check_train_step.py's, which repeats the step in PyTorch on ctnn's
  // activation pattern (there all gradients agree to ~1e-3 of their tensor's largest value).
  // The BatchNorm-cancelled biases are checked to be noise: below 1e-3 of the largest gradient
  // of their layer's weight, in both libraries.
  const auto cancelled = biases_cancelled_by_batchnorm(*net);
  CHECK(!cancelled.empty());
  double torch_grad_error = 0.0;
  for (const auto& key : state.parameter_keys)
    if (!cancelled.count(key))
      torch_grad_error = std::max(torch_grad_error, l2_error(expected.at("grad." + key).floats(),
                                                              exact.at("grad." + key).floats()));
  const double rtol_grad = std::max(1e-4, 3 * torch_grad_error);
  Worst w_grad;
  StateDict step = step_record(*net, state, initial, logits_train, loss);
  for (const auto& key : state.parameter_keys) {
    const std::span<const float> g = state.gradients[key];
    const std::vector<float> g_torch = expected.at("grad." + key).floats();
    if (cancelled.count(key)) {
      const double weight_scale = max_abs(expected.at("grad." + key.substr(0, key.size() - 4) + "weight").floats());
      CHECK_MESSAGE(max_abs(g) <= 1e-3 * weight_scale, key << ": ctnn's gradient " << max_abs(g) << " is not noise");
      CHECK_MESSAGE(max_abs(g_torch) <= 1e-3 * weight_scale, key << ": PyTorch's gradient is not noise");
      continue;
    }
    const double e = l2_error(g, g_torch);
    w_grad.add(e, key);
    CHECK_MESSAGE(e <= rtol_grad, "grad." << key << ": L2 error " << e << " (allowed " << rtol_grad << ")");
  }

  // After one Adam step. The parameters started equal (the same checkpoint p0). Adam's first
  // step moves each by lr * g / (|g| + eps), a sign-like function of its gradient that turns
  // gradients equal to within rounding but near 0 into moves up to 2 lr apart, so the two
  // libraries' results are not compared to each other; two links are checked instead, each
  // against a formula with a fixed tolerance (the rounding of p - move, 1e-6 |p| = 8 ulp, and
  // 1e-9 for the move's own): PyTorch's step is that formula on PyTorch's gradient (the formula
  // is PyTorch's Adam), and ctnn's step is the same formula on ctnn's gradient (ctnn's Adam is
  // PyTorch's); the gradients agree, checked above. Buffers are the running statistics of the
  // training forward (tolerance as for its logits); counters are exact.
  for (const auto& key : state.parameter_keys) {
    const std::span<const float> p = state.values[key];
    CHECK_MESSAGE(std::vector<float>(p.begin(), p.end()) == initial.at(key).floats(), key << " is not as loaded");
  }
  adam.step();
  Worst w_param, w_buffer;
  std::size_t moved_apart = 0, parameters = 0;
  for (const auto& key : state.parameter_keys) {
    const std::span<const float> p = state.values[key], g = state.gradients[key];
    const std::vector<float> torch_after = expected.at("after." + key).floats(),
                             g_torch = expected.at("grad." + key).floats(), p0 = initial.at(key).floats();
    // How far `after` is beyond the rounding allowance of p0 - adam_first_move(grad), at worst.
    auto worst_excess = [&](auto&& after, auto&& grad, std::size_t& worst) {
      double excess = -1.0;
      for (std::size_t i = 0; i < p0.size(); ++i) {
        const double want = p0[i] - adam_first_move(grad[i]);
        const double e = std::abs(after[i] - want) - (1e-6 * std::abs(want) + 1e-9);
        if (e > excess) excess = e, worst = i;
      }
      return excess;
    };
    for (std::size_t i = 0; i < p.size(); ++i)
      moved_apart += std::abs(adam_first_move(g[i]) - adam_first_move(g_torch[i])) > 1e-3 * kLr;
    std::size_t worst = 0, worst_torch = 0;
    const double excess = worst_excess(p, g, worst), excess_torch = worst_excess(torch_after, g_torch, worst_torch);
    parameters += p.size();
    w_param.add(excess, key);
    CHECK_MESSAGE(excess <= 0.0, "after." << key << "[" << worst << "]: ctnn " << p[worst] << " from " << p0[worst]
                                          << " with gradient " << g[worst] << " is not Adam's first step");
    CHECK_MESSAGE(excess_torch <= 0.0, "after." << key << "[" << worst_torch << "]: PyTorch " << torch_after[worst_torch]
                                                << " from " << p0[worst_torch] << " with gradient "
                                                << g_torch[worst_torch] << " is not the formula's Adam step");
  }
  add_parameters(step, "after.", state.values, initial);
  for (const auto& [name, data] : state.buffers) {
    const std::string& key = name;  // doctest's message lambda cannot capture a binding in clang < 16
    const double e = scaled_error(data, expected.at("after." + key).floats());
    w_buffer.add(e, key);
    CHECK_MESSAGE(e <= rtol_train, "after." << key << ": " << e << " (allowed " << rtol_train << ")");
  }
  for (const auto& item : state.counters)
    CHECK_MESSAGE(*item.second == expected.at("after." + item.first).int64s().at(0), "after." << item.first);

  MESSAGE(model << " vs PyTorch: logits eval " << e_eval << ", train " << e_train << ", loss " << e_loss
                << " (PyTorch float32 vs float64: " << torch_train_error << "); gradients L2 " << w_grad.value << " ("
                << w_grad.key << "; PyTorch float32 vs float64: " << torch_grad_error << "); running statistics "
                << w_buffer.value << " (" << w_buffer.key << "); after the Adam step every parameter within rounding "
                << "of Adam's formula, " << moved_apart << " of " << parameters
                << " moved differently by more than 1e-3 lr because their gradients differ");

  // For check_train_step.py and check_roundtrip.py.
  net->eval();
  const std::vector<float> logits_after = net->forward(x).to_nchw();
  write_checkpoint(dir / (model + "_ctnn_step.pt"), step);
  save_state_dict(*net, dir / (model + "_ctnn.ckpt"));
  StateDict out;
  out.insert_or_assign("logits_eval", Tensor::from_floats({kBatch, 10}, logits_after));
  write_checkpoint(dir / (model + "_ctnn_logits.pt"), out);
}

// The small network of make_parity.py's format files: Conv2d(3,4,3), BatchNorm2d(4), Flatten,
// Linear(4,2) on 3x3 inputs.
// bf16 (ops/precision.hpp) against PyTorch's autocast, from the same checkpoint and batch. Two
// bf16 computations of a deep network differ by about as much as bf16 differs from fp32: every
// rounded operand moves its products by up to 2^-9, the two libraries round different
// intermediate values (autocast rounds each convolution's output too; ctnn keeps F(4x4)
// Winograd layers in fp32) and depth compounds it. So the yardstick is PyTorch's own distance
// between its autocast and fp32 results: ctnn's bf16 logits, loss and gradients must lie within
// 3x that distance of PyTorch's autocast ones (logits and loss: max error over the logits'
// scale; gradients: L2 error of each tensor against the worst tensor's distance), which still
// catches a layer computed wrongly, and ctnn's bf16 logits must differ from its fp32 ones (the
// policy applied). The BatchNorm-cancelled biases' gradients are noise and left out.
// The training step (`train`) is compared only where PyTorch's autocast sums its convolutions in
// fp32, as ctnn does (make_parity.py probes it): on a CPU without AVX512_BF16 or AMX its
// convolutions sum in bf16, and on a batch of 4 in training mode, where BatchNorm divides by
// small deviations, its gradients then lie as far from fp32's as from zero (relative L2 error
// over 1), a yardstick any result meets. Evaluation stays comparable there (PyTorch's distance
// from fp32 6 % of the logits' scale).
template <class Net>
void parity_bf16(const std::string& model, bool train) {
  if (skipped()) return;
  MESSAGE(ops::bf16_kernel_summary());
  const fs::path dir = parity_dir();
  const StateDict fp32 = read_checkpoint(dir / (model + "_expected.pt"));
  const StateDict bf16 = read_checkpoint(dir / (model + "_bf16.pt"));
  auto net = std::make_unique<Net>(12345);
  load_state_dict(*net, read_checkpoint(dir / (model + ".ckpt")), true, (dir / (model + ".ckpt")).string());
  NamedState state;
  net->visit_state(state);
  typename Net::Input x;
  const std::vector<int> labels = parity_batch(fp32, kBatch, x);

  if (train && bf16.at("autocast_conv_sums_fp32").int64s().front() == 0) {
    std::cout << "CTNN_PARITY_SKIPPED: PyTorch's autocast sums its convolutions in bf16 on this CPU (no AVX512_BF16 or "
                 "AMX), so its training step is no reference for ctnn's fp32 sums" << std::endl;
    return;
  }
  if (!train) {
    net->eval();
    const std::vector<float> ctnn_fp32 = net->forward(x).to_nchw();
    Autocast autocast(Precision::bf16);
    const std::vector<float> ctnn_eval = net->forward(x).to_nchw();
    const double d_eval = scaled_error(bf16.at("logits_eval").floats(), fp32.at("logits_eval").floats());
    const double e_eval = scaled_error(ctnn_eval, bf16.at("logits_eval").floats());
    MESSAGE(model << " bf16 logits_eval: " << e_eval << " from PyTorch's autocast, which is " << d_eval << " from fp32");
    CHECK(e_eval <= 3 * d_eval);
    CHECK(scaled_error(ctnn_eval, ctnn_fp32) > 1e-4);
    return;
  }

  Autocast autocast(Precision::bf16);
  net->train();
  disable_dropout(*net);
  net->zero_grad();
  CrossEntropyLoss<10> criterion;
  const auto& logits = net->forward(x);
  const double d_train = scaled_error(bf16.at("logits_train").floats(), fp32.at("logits_train").floats());
  const double e_train = scaled_error(logits.to_nchw(), bf16.at("logits_train").floats());
  MESSAGE(model << " bf16 logits_train: " << e_train << " (PyTorch autocast vs fp32: " << d_train << ")");
  CHECK(e_train <= 3 * d_train);
  const float loss = criterion.forward(logits, labels);
  const double torch_loss = bf16.at("loss").floats()[0], d_loss = std::abs(torch_loss - fp32.at("loss").floats()[0]);
  CHECK_MESSAGE(std::abs(loss - torch_loss) <= 3 * d_loss + 1e-6,
                "loss " << loss << ", PyTorch autocast " << torch_loss << ", fp32 " << fp32.at("loss").floats()[0]);
  net->backward(x, criterion.grad());
  const auto cancelled = biases_cancelled_by_batchnorm(*net);
  Worst distance, error;
  std::vector<float> all_ctnn, all_bf16, all_fp32;  // every gradient, one vector each
  for (const auto& key : state.parameter_keys)
    if (!cancelled.count(key)) {
      const std::span<const float> mine = state.gradients.at(key);
      const std::vector<float> theirs = bf16.at("grad." + key).floats(), exact = fp32.at("grad." + key).floats();
      distance.add(l2_error(theirs, exact), key);
      error.add(l2_error(mine, theirs), key);
      all_ctnn.insert(all_ctnn.end(), mine.begin(), mine.end());
      all_bf16.insert(all_bf16.end(), theirs.begin(), theirs.end());
      all_fp32.insert(all_fp32.end(), exact.begin(), exact.end());
    }
  MESSAGE(model << " bf16 gradients: worst L2 error " << error.value << " (" << error.key
                << "); PyTorch autocast vs fp32: " << distance.value << " (" << distance.key << ")");
  CHECK(error.value <= 3 * distance.value);
  // All gradients as one vector, against the whole's distance rather than the worst tensor's.
  const double d_all = l2_error(all_bf16, all_fp32), e_all = l2_error(all_ctnn, all_bf16);
  MESSAGE(model << " bf16 gradients together: L2 error " << e_all << "; PyTorch autocast vs fp32: " << d_all);
  CHECK(e_all <= 3 * d_all);
}

using FormatNet = Network<Shape<3, 3, 3>, Sequential<Conv2d<3, 4, 3, 1, 0>, BatchNorm2d<4>, Flatten, Linear<4, 2>>>;

// The same keys in the same order, with identical tensors.
void expect_same(const StateDict& a, const StateDict& b) {
  REQUIRE(a.keys() == b.keys());
  for (const auto& item : a) CHECK_MESSAGE(identical(item.second, b.at(item.first)), item.first);
}

// The assignment's batch of 100 (make_parity.py's <model>_batch100.pt): the evaluation logits
// under NoGrad, as ctnn-eval and evaluate() compute them, and the training forward's logits and
// loss, with the tolerances of the batch of 4 above; through the schedules a batch of 4 does not
// take (chunks of images and their weight-gradient groups, Winograd's parts by transform point,
// products cut over the threads). The step's gradients and Adam's move are compared by
// check_train_step.py only, on ctnn's activation pattern.
template <class Net>
void parity_full_batch(const std::string& model) {
  if (skipped()) return;
  const fs::path dir = parity_dir();
  const StateDict full = read_checkpoint(dir / (model + "_batch100.pt"));
  const StateDict initial = read_checkpoint(dir / (model + ".ckpt"));
  auto net = std::make_unique<Net>(12345);  // every value is then overwritten by the checkpoint
  load_state_dict(*net, initial, true, (dir / (model + ".ckpt")).string());
  typename Net::Input x;
  const std::vector<int> labels = parity_batch(full, 100, x);

  net->eval();
  double e_eval = 0.0;
  {
    const NoGrad no_grad;
    e_eval = scaled_error(net->forward(x).to_nchw(), full.at("logits_eval").floats());
  }
  CHECK_MESSAGE(e_eval <= 1e-4, "logits_eval, batch of 100: " << e_eval);

  net->train();
  disable_dropout(*net);
  CrossEntropyLoss<10> criterion;
  const auto& logits = net->forward(x);
  const double torch_error = scaled_error(full.at("logits_train").floats(), full.at("logits_train64").floats());
  const double rtol = std::max(1e-4, 3 * torch_error);
  const std::vector<float> logits_train = logits.to_nchw();
  const double e_train = scaled_error(logits_train, full.at("logits_train").floats());
  CHECK_MESSAGE(e_train <= rtol, "logits_train, batch of 100: " << e_train << " (allowed " << rtol << ")");
  const float loss = criterion.forward(logits, labels), want = full.at("loss").floats()[0];
  const double e_loss = std::abs(loss - want) / std::abs(want);
  CHECK_MESSAGE(e_loss <= rtol, "loss, batch of 100: " << loss << " vs " << want);
  MESSAGE(model << " vs PyTorch, batch of 100: logits eval " << e_eval << ", train " << e_train << ", loss " << e_loss
                << " (PyTorch float32 vs float64: " << torch_error << ")");

  // The step's gradients and Adam's move, for check_train_step.py to repeat on ctnn's activation
  // pattern: two independent float32 runs of the batch of 100 flip different units at kinks
  // (ReLU after VGG16's BatchNorm1d), which no tolerance on their gradients could tell from a bug.
  NamedState state;
  net->visit_state(state);
  net->zero_grad();
  Adam adam(*net, {.lr = kLr});
  net->backward(x, criterion.grad());
  StateDict step = step_record(*net, state, initial, logits_train, loss);
  adam.step();
  add_parameters(step, "after.", state.values, initial);
  write_checkpoint(dir / (model + "_ctnn_step100.pt"), step);
}

}  // namespace

TEST_CASE("VGG16 matches PyTorch: logits, loss, gradients and one Adam step, from PyTorch's checkpoint") {
  parity<VGG16>("vgg16");
}

TEST_CASE("ResNet50_layer4 matches PyTorch: logits, loss, gradients and one Adam step, from PyTorch's checkpoint") {
  parity<ResNet50_layer4<10>>("resnet50");
}

TEST_CASE("VGG16 and ResNet50_layer4 match PyTorch on the assignment's batch of 100: logits and loss (and write the step)") {
  parity_full_batch<VGG16>("vgg16");
  parity_full_batch<ResNet50_layer4<10>>("resnet50");
}

TEST_CASE("bf16: VGG16 matches PyTorch's autocast in evaluation") { parity_bf16<VGG16>("vgg16", false); }
TEST_CASE("bf16 train: VGG16 matches PyTorch's autocast: logits, loss and gradients") {
  parity_bf16<VGG16>("vgg16", true);
}

TEST_CASE("bf16: ResNet50_layer4 matches PyTorch's autocast in evaluation") {
  parity_bf16<ResNet50_layer4<10>>("resnet50", false);
}
TEST_CASE("bf16 train: ResNet50_layer4 matches PyTorch's autocast: logits, loss and gradients") {
  parity_bf16<ResNet50_layer4<10>>("resnet50", true);
}

TEST_CASE("Every form of file PyTorch writes is read; legacy and TorchScript files are refused by name") {
  if (skipped()) return;
  const fs::path dir = parity_dir();
  const StateDict plain = read_checkpoint(dir / "format_plain.ckpt");
  CHECK(plain.size() == 9);
  expect_same(plain, read_checkpoint(dir / "format_keep_vars.ckpt"));  // _rebuild_parameter
  expect_same(plain, read_checkpoint(dir / "format_protocol4.ckpt"));  // FRAME, MEMOIZE, STACK_GLOBAL, ...
  CHECK(plain.at("1.num_batches_tracked").int64s() == std::vector<std::int64_t>{5});
  FormatNet net;
  load_state_dict(net, dir / "format_plain.ckpt");
  expect_same(plain, state_dict(net));

  // Views of one storage: offsets, strides, 0-d, empty, int64, expanded (stride 0).
  const StateDict views = read_checkpoint(dir / "format_views.pt");
  CHECK(views.at("base").storage().numel == 24);
  CHECK(&views.at("row").storage() == &views.at("base").storage());
  CHECK(views.at("row").floats() == std::vector<float>{6, 7, 8, 9, 10, 11});
  CHECK(views.at("column").floats() == std::vector<float>{2, 8, 14, 20});
  const auto t = views.at("transposed").floats();
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 4; ++j) CHECK(t[static_cast<std::size_t>(i * 4 + j)] == static_cast<float>(j * 6 + i));
  CHECK(views.at("block").floats() == std::vector<float>{8, 9, 10, 14, 15, 16});
  CHECK(views.at("scalar").shape().empty());
  CHECK(views.at("scalar").floats() == std::vector<float>{3.5f});
  CHECK(views.at("int64").int64s() == std::vector<std::int64_t>{-2, -1, 0, 1, 2});
  CHECK(views.at("empty").shape() == TensorShape{0, 3});
  CHECK(views.at("expanded").floats() == std::vector<float>{1, 2, 1, 2, 1, 2});

  // 1,500 entries: two SETITEMS batches, memo indices past 255.
  const StateDict many = read_checkpoint(dir / "format_many.pt");
  REQUIRE(many.size() == 1500);
  std::size_t i = 0;
  for (const auto& [key, v] : many) {
    CHECK(key == "t" + std::to_string(i));
    CHECK(v.floats() == std::vector<float>(2, static_cast<float>(i)));
    ++i;
  }

  CHECK_THROWS_WITH_AS(read_checkpoint(dir / "format_legacy.ckpt"), doctest::Contains("a legacy PyTorch checkpoint"),
                       CheckpointError);
  CHECK_THROWS_WITH_AS(read_checkpoint(dir / "format_torchscript.pt"), doctest::Contains("a TorchScript archive"),
                       CheckpointError);
}
