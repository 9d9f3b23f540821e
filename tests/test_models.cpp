// The assignment's networks: structure (state_dict layout as PyTorch's), parameter counts,
// initialisation, whole-network gradients and thread-count independence.
#include "support/check.hpp"

#include <fstream>
#include <sstream>

using namespace ctnn;
using namespace ctnn::test;

namespace {

struct KeyLine {
  std::string key, dtype;
  TensorShape shape;
};

std::vector<KeyLine> read_keys(const std::string& model) {
  const std::string path = std::string(CTNN_GOLDEN_DIR) + "/state_keys_" + model + ".txt";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path);
  std::vector<KeyLine> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    KeyLine k;
    ss >> k.key >> k.dtype;
    std::int64_t d;
    while (ss >> d) k.shape.push_back(d);
    out.push_back(k);
  }
  return out;
}

template <class Net>
void expect_pytorch_layout(const Net& net, const std::string& model) {
  const auto expected = read_keys(model);
  const auto& actual = net.state_entries();
  REQUIRE(actual.size() == expected.size());
  for (std::size_t i = 0; i < actual.size(); ++i) {
    INFO("entry " << i << ": " << actual[i].name << " vs " << expected[i].key);
    CHECK(actual[i].name == expected[i].key);
    CHECK(actual[i].shape == expected[i].shape);
    CHECK((actual[i].kind == StateEntry::Kind::counter) == (expected[i].dtype == "int64"));
  }
}

template <class Net>
void reset_dropout(Net& net) {
  net.for_each_layer([](auto& layer, const std::string&) {
    if constexpr (ctnn::layer_traits<std::decay_t<decltype(layer)>>::has_random_state) layer.draws = 0;
  });
}

}  // namespace

TEST_CASE("VGG16 has the assignment's layers, in PyTorch's state_dict layout") {
  VGG16 net;
  CHECK(net.num_parameters() == 12'623'690);
  expect_pytorch_layout(net, "vgg16");
  static_assert(std::is_same_v<VGG16::out_shape, Features<10>>);
  std::ostringstream table;
  net.summary(table);
  CHECK(table.str().find("features.26") != std::string::npos);
  CHECK(table.str().find("trainable parameters: 12623690") != std::string::npos);
}

TEST_CASE("ResNet50_layer4 has the assignment's layers, quirks included, in PyTorch's layout") {
  ResNet50_layer4<> net;
  CHECK(net.num_parameters() == 14'750'730);
  expect_pytorch_layout(net, "resnet50");
  // MaxPool 3/2/0 after the 7x7 stride-2 stem gives 7x7, not the report table's 8x8.
  using Layer1 = std::decay_t<decltype(net.root().get<0>())>;
  static_assert(std::is_same_v<Layer1::out_shape, Shape<64, 7, 7>>);
  using Layer2 = std::decay_t<decltype(net.root().get<1>())>;
  static_assert(std::is_same_v<Layer2::out_shape, Shape<256, 4, 4>>);
  using Layer4 = std::decay_t<decltype(net.root().get<3>())>;
  static_assert(std::is_same_v<Layer4::out_shape, Shape<1024, 2, 2>>);
  ResNet50_layer4<100> wide;
  CHECK(wide.num_parameters() == 14'750'730 + 90 * 1025);
}

namespace {
// E[w^4] / E[w^2]^2 of a tensor: 3 for a normal distribution, 1.8 for a uniform one, so that the
// shape of an initialisation is checked, not only its spread.
double kurtosis(std::span<const float> w) {
  double m2 = 0, m4 = 0;
  for (float v : w) {
    const double q = static_cast<double>(v) * v;
    m2 += q;
    m4 += q * q;
  }
  const double n = static_cast<double>(w.size());
  return (m4 / n) / ((m2 / n) * (m2 / n));
}

// The largest magnitude in a tensor: near a uniform initialisation's bound, and within it.
double largest(std::span<const float> w) {
  double mx = 0;
  for (float v : w) mx = std::max(mx, std::abs(static_cast<double>(v)));
  return mx;
}

// BatchNorm's PyTorch defaults, for every BatchNorm layer of a network.
template <class Net>
int check_batchnorm_defaults(Net& net) {
  int count = 0;
  net.for_each_layer([&](auto& layer, const std::string& name) {
    if constexpr (requires { layer.running_mean; layer.num_batches_tracked; }) {
      ++count;
      INFO(name);
      for (float w : layer.weight.data()) CHECK(w == 1.0f);
      for (float b : layer.bias.data()) CHECK(b == 0.0f);
      for (float m : layer.running_mean) CHECK(m == 0.0f);
      for (float v : layer.running_var) CHECK(v == 1.0f);
      CHECK(layer.num_batches_tracked == 0);
    }
  });
  return count;
}
}  // namespace

TEST_CASE("VGG16 initialisation: conv weights N(0, sqrt(2/(9*out))), conv biases zero") {
  VGG16 net(42);
  int convs = 0;
  net.for_each_layer([&](auto& layer, const std::string& name) {
    using L = std::decay_t<decltype(layer)>;
    if constexpr (ctnn::layer_traits<L>::init_role == ctnn::InitRole::convolution) {
      ++convs;
      double sum = 0, sq = 0;
      for (float w : layer.weight.data()) {
        sum += w;
        sq += static_cast<double>(w) * w;
      }
      const double n = static_cast<double>(layer.weight.numel);
      const double expected_std = std::sqrt(2.0 / (9.0 * L::out_channels));
      INFO(name);
      CHECK(std::sqrt(sq / n) == doctest::Approx(expected_std).epsilon(0.05));
      CHECK(std::abs(sum / n) < 0.05 * expected_std);
      CHECK(std::abs(kurtosis(layer.weight.data()) - 3.0) < 0.6);  // normal (the smallest has 1,728 values: 5 sd)
      for (float b : layer.bias.data()) CHECK(b == 0.0f);
    }
  });
  CHECK(convs == 12);
  // The classifier keeps PyTorch's defaults: Linear weight and bias U(+-1/sqrt(512)) (the
  // weight's largest value near the bound: uniform over it, not narrower), BatchNorm1d's.
  auto& fc1 = net.root().get<2>().get<1>();
  const double mx = largest(fc1.weight.data());
  CHECK(mx <= 1.0 / std::sqrt(512.0));
  CHECK(mx > 0.99 / std::sqrt(512.0));
  CHECK(std::abs(kurtosis(fc1.weight.data()) - 1.8) < 0.1);
  for (float b : fc1.bias.data()) CHECK(std::abs(b) <= 1.0 / std::sqrt(512.0));
  CHECK(check_batchnorm_defaults(net) == 1);
}

TEST_CASE("ResNet50_layer4 initialisation: xavier_uniform weights, default biases") {
  ResNet50_layer4<> net(7);
  net.for_each_layer([&](auto& layer, const std::string& name) {
    using L = std::decay_t<decltype(layer)>;
    if constexpr (ctnn::layer_traits<L>::init_role == ctnn::InitRole::convolution) {
      const int k2 = L::kernel_size * L::kernel_size;
      const double a = std::sqrt(6.0 / (L::in_channels * k2 + L::out_channels * k2));
      const double mx = largest(layer.weight.data());
      INFO(name);
      CHECK(mx <= a);
      CHECK(mx > 0.9 * a);
      CHECK(std::abs(kurtosis(layer.weight.data()) - 1.8) < 0.1);  // uniform (the smallest has 4,096 values: 5.6 sd)
      for (float b : layer.bias.data()) CHECK(std::abs(b) <= 1.0 / std::sqrt(L::in_channels * k2));
    }
  });
  // fc: xavier_uniform too (PyTorch's default bound, 1/sqrt(1024), is less than half of it), its
  // bias PyTorch's default; every BatchNorm2d PyTorch's defaults.
  auto& fc = net.root().get<6>();
  const double a = std::sqrt(6.0 / (1024 + 10));
  const double mx = largest(fc.weight.data());
  CHECK(mx <= a);
  CHECK(mx > 0.9 * a);
  for (float b : fc.bias.data()) CHECK(std::abs(b) <= 1.0 / std::sqrt(1024.0));
  CHECK(check_batchnorm_defaults(net) == 53);
}

TEST_CASE("The same seed gives the same network; another seed another") {
  ResNet50_layer4<> a(3), b(3), c(4);
  CHECK(std::equal(a.parameters().begin(), a.parameters().end(), b.parameters().begin()));
  CHECK(!std::equal(a.parameters().begin(), a.parameters().end(), c.parameters().begin()));
}

TEST_CASE("Whole-network gradients agree with finite differences") {
  // A tiny batch of two. The checker skips elements whose finite difference would cross a
  // ReLU or max-pool kink (see support/check.hpp). In evaluation mode a perturbation moves
  // only what lies downstream of it, so kinks are rare and at most 5% may be skipped.
  GradCheckOptions o;
  o.max_inputs = 30;
  o.max_params = 90;
  SUBCASE("ResNet50_layer4, evaluation mode") {
    ResNet50_layer4<> net(11);
    net.eval();
    require_gradients_ok(gradient_check(net, random_batch<Shape<3, 32, 32>>(2, 12), o));
  }
  SUBCASE("VGG16, evaluation mode") {
    VGG16 net(13);
    net.eval();
    require_gradients_ok(gradient_check(net, random_batch<Shape<3, 32, 32>>(2, 14), o));
  }
}

TEST_CASE("Training-mode gradients of the networks' building blocks agree with finite differences") {
  // In training mode every BatchNorm normalises with batch statistics, so in a whole deep
  // network any perturbation moves every activation downstream and flips some ReLU: at float
  // precision most element-wise differences would cross a kink. The blocks the networks are
  // built from are small enough for the kink-aware check; whole-network training gradients
  // are compared with PyTorch's in the parity tests.
  GradCheckOptions o;
  o.h = 1e-3;
  o.max_inputs = 100;
  o.max_params = 200;
  SUBCASE("ResNet stem: Conv2d 7x7/2, BatchNorm2d, ReLU, MaxPool2d 3/2") {
    Network<Shape<3, 32, 32>, Sequential<Conv2d<3, 16, 7, 2, 3>, BatchNorm2d<16>, ReLU, MaxPool2d<3, 2, 0>>> net(1);
    require_gradients_ok(gradient_check(net, random_batch<Shape<3, 32, 32>>(2, 3), o));
  }
  SUBCASE("ResidualBlock with make_equal_channel") {
    Network<Shape<16, 7, 7>, Sequential<resnet::ResidualBlock<16, 8, 32, false>>> net(2);
    require_gradients_ok(gradient_check(net, random_batch<Shape<16, 7, 7>>(2, 4), o));
  }
  SUBCASE("ResidualBlock with downsize, 2x2 input") {
    Network<Shape<16, 4, 4>, Sequential<resnet::ResidualBlock<16, 8, 32, true>>> net(3);
    require_gradients_ok(gradient_check(net, random_batch<Shape<16, 4, 4>>(3, 5), o));
  }
  SUBCASE("VGG classifier with dropout masks held fixed") {
    using Net = Network<Features<32>, Sequential<Dropout<>, Linear<32, 16>, BatchNorm1d<16>, ReLU, Dropout<>,
                                                 Linear<16, 10>>>;
    Net net(4);
    require_gradients_ok(gradient_check(net, random_batch<Features<32>>(8, 6), o, [&] { reset_dropout(net); }));
  }
}

namespace {
// Two Adam steps on a fixed batch: losses and final parameters, for comparing thread counts.
template <class Net>
std::vector<float> two_steps(int threads) {
  set_num_threads(threads);
  Net net(5);
  CrossEntropyLoss<10> loss;
  const auto x = random_batch<Shape<3, 32, 32>>(8, 6);
  const std::vector<int> labels{0, 1, 2, 3, 4, 5, 6, 7};
  Adam opt(net);
  std::vector<float> out;
  for (int step = 0; step < 2; ++step) {
    net.zero_grad();
    out.push_back(loss.forward(net.forward(x), labels));
    net.backward(x, loss.grad());
    opt.step();
  }
  out.insert(out.end(), net.parameters().begin(), net.parameters().end());
  set_num_threads(0);
  return out;
}
}  // namespace

TEST_CASE_TEMPLATE("Results are bit-identical at 1 and 2 threads", Net, ResNet50_layer4<>, VGG16) {
  const auto one = two_steps<Net>(1);
  const auto two = two_steps<Net>(2);
  REQUIRE(one.size() == two.size());
  CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
}

TEST_CASE("Training and evaluation modes differ where PyTorch's do") {
  VGG16 net(1);
  const auto x = random_batch<Shape<3, 32, 32>>(4, 2);
  net.eval();
  const auto e1 = net.forward(x).to_nchw();
  const auto e2 = net.forward(x).to_nchw();
  CHECK(e1 == e2);  // eval: no dropout, running statistics
  net.train();
  const auto t1 = net.forward(x).to_nchw();
  const auto t2 = net.forward(x).to_nchw();
  CHECK(t1 != t2);  // fresh dropout masks every forward
  CHECK(t1 != e1);
}

TEST_CASE("VGG16's two dropout layers, in training: p = 0.5, kept values doubled, masks of their own") {
  VGG16 net(1);
  const auto x = random_batch<Shape<3, 32, 32>>(32, 3);
  net.train();
  net.forward(x);
  auto& classifier = net.root().get<2>();
  auto& first = classifier.get<0>();   // classifier.0, after Flatten
  auto& second = classifier.get<4>();  // classifier.4, after BatchNorm1d and ReLU
  CHECK(first.seed() != second.seed());
  const float* in[2] = {net.root().get<1>().output().data(), classifier.get<3>().output().data()};
  const float* out[2] = {first.output().data(), second.output().data()};
  const std::size_t n = first.output().size();
  REQUIRE(n == second.output().size());
  // kept[l][i]: whether layer l kept value i (known where its input is not zero).
  std::vector<int> kept[2] = {std::vector<int>(n, -1), std::vector<int>(n, -1)};
  for (int l = 0; l < 2; ++l) {
    long known = 0, ones = 0, wrong = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (in[l][i] == 0.0f) continue;
      wrong += out[l][i] != 0.0f && out[l][i] != 2.0f * in[l][i];  // zeroed, or scaled by 1 / (1 - p) exactly
      kept[l][i] = out[l][i] != 0.0f;
      ++known;
      ones += kept[l][i];
    }
    CAPTURE(l);
    CHECK(wrong == 0);
    REQUIRE(known > 4000);
    CHECK(std::abs(static_cast<double>(ones) / known - 0.5) < 0.03);  // 16,384 values, ReLU's zeros aside
  }
  // Independent masks: where the first kept a value the second keeps half, and where it dropped
  // one too (one seed for both would keep exactly the same values).
  long both[2][2] = {};
  for (std::size_t i = 0; i < n; ++i)
    if (kept[0][i] >= 0 && kept[1][i] >= 0) ++both[kept[0][i]][kept[1][i]];
  for (int k = 0; k < 2; ++k) {
    const long total = both[k][0] + both[k][1];
    REQUIRE(total > 1000);
    CHECK(std::abs(static_cast<double>(both[k][1]) / total - 0.5) < 0.05);
  }
}
