// BatchNorm2d / BatchNorm1d: PyTorch parity in training and evaluation (running statistics,
// num_batches_tracked), and finite-difference gradients in both modes.
#include "support/check.hpp"

using namespace ctnn;
using namespace ctnn::test;

namespace {

// PyTorch computes a BatchNorm's y = x * alpha + beta as one fused multiply-add (its kernels run
// on AVX2 and up, where the fixtures were made); ctnn fuses it where the build's target has FMA
// (Eigen's pmadd, ops/batchnorm.hpp). Built for a target without FMA (CTNN_NATIVE=OFF on
// x86-64), ctnn rounds twice, as PyTorch does on such a CPU: y is then compared within
// expect_parity's tolerance, not bit for bit.
#ifdef EIGEN_VECTORIZE_FMA
constexpr bool kTargetFuses = true;
#else
constexpr bool kTargetFuses = false;
#endif

// `exact`: the training forward's output and running statistics bit for bit as PyTorch's too
// (BatchNorm2d, whose CPU arithmetic ops/batchnorm.hpp follows operation for operation; PyTorch
// sums a BatchNorm1d's (N, C) batch in another order, per thread).
template <class In, class Spec>
void bn_parity(const char* name, bool exact = false) {
  Golden g(name);
  Network<In, Sequential<Spec>> net;
  auto& bn = net.root().template get<0>();
  set_values(bn.weight.data(), g.floats("weight"));
  set_values(bn.bias.data(), g.floats("bias"));
  set_values(bn.running_mean, g.floats("running_mean_before"));
  set_values(bn.running_var, g.floats("running_var_before"));

  net.train();
  const auto x = batch_from<In>(g, "x");
  const auto y = net.forward(x).to_nchw();
  expect_parity(y, g["y"].values, std::string(name) + " y");
  Batch<In> dx;
  net.zero_grad();
  net.backward(x, batch_from<In>(g, "dy"), dx);
  expect_parity(dx.to_nchw(), g["dx"].values, std::string(name) + " dx");
  expect_parity(bn.weight.gradient(), g["dweight"].values, std::string(name) + " dweight");
  expect_parity(bn.bias.gradient(), g["dbias"].values, std::string(name) + " dbias");
  // running_var is updated with the unbiased variance: the biased one would miss by n/(n-1).
  expect_parity(bn.running_mean, g["running_mean_after"].values, std::string(name) + " running_mean");
  expect_parity(bn.running_var, g["running_var_after"].values, std::string(name) + " running_var");
  CHECK(bn.num_batches_tracked == static_cast<std::int64_t>(g["num_batches_tracked_after"].values[0]));
  if (exact) {  // the fixtures' %.9g text gives every float back exactly
    const auto floats = [&](const char* key) {
      std::vector<float> v;
      for (double d : g[key].values) v.push_back(static_cast<float>(d));
      return bit_patterns(v);
    };
    const auto stats = [](const auto& buffer) { return bit_patterns(std::span<const float>(buffer.data(), buffer.size())); };
    if (kTargetFuses) CHECK(bit_patterns(y) == floats("y"));
    CHECK(stats(bn.running_mean) == floats("running_mean_after"));
    CHECK(stats(bn.running_var) == floats("running_var_after"));
  }

  // Evaluation from PyTorch's running statistics (BatchNorm1d's training left ours an ulp off in
  // places): its output bit for bit, for both kinds (ops::batchnorm.hpp, running_affine).
  net.eval();
  set_values(bn.running_mean, g.floats("running_mean_after"));
  set_values(bn.running_var, g.floats("running_var_after"));
  const auto y_eval = net.forward(batch_from<In>(g, "x_eval")).to_nchw();
  expect_parity(y_eval, g["y_eval"].values, std::string(name) + " y_eval");
  if (kTargetFuses) CHECK_MESSAGE(bit_patterns(y_eval) == bit_patterns(g.floats("y_eval")), std::string(name));
  else MESSAGE("this build's target has no FMA: y compared within tolerance, not bit for bit (PyTorch's fixtures fuse)");
  CHECK(bn.num_batches_tracked == 1);  // evaluation does not count
}

}  // namespace

TEST_CASE("BatchNorm2d matches PyTorch in training and evaluation") {
  bn_parity<Shape<3, 3, 3>, BatchNorm2d<3>>("batchnorm2d", /*exact=*/true);
  bn_parity<Shape<4, 6, 6>, BatchNorm2d<4>>("batchnorm2d_wide", /*exact=*/true);
}

TEST_CASE("BatchNorm1d matches PyTorch in training and evaluation") {
  bn_parity<Features<5>, BatchNorm1d<5>>("batchnorm1d");
}

TEST_CASE("BatchNorm's backward follows the statistics its forward used, whatever the mode since") {
  // As PyTorch's autograd: y = bn(x) in training, then bn.eval(), then y.backward(dy) still
  // differentiates through the batch statistics (and the other way round).
  using Net = Network<Shape<2, 3, 3>, Sequential<BatchNorm2d<2>>>;
  const auto x = random_batch<Shape<2, 3, 3>>(4, 11), dy = random_batch<Shape<2, 3, 3>>(4, 12);
  for (const bool train_forward : {true, false}) {
    Net same(0), switched(0);
    for (Net* net : {&same, &switched}) {
      auto& bn = net->root().get<0>();
      bn.running_mean = {0.3f, -0.2f};
      bn.running_var = {0.7f, 1.6f};
      if (train_forward) net->train();
      else net->eval();
      net->zero_grad();
      net->forward(x);
    }
    if (train_forward) switched.eval();
    else switched.train();
    Batch<Shape<2, 3, 3>> dx_same, dx_switched;
    same.backward(x, dy, dx_same);
    switched.backward(x, dy, dx_switched);
    CHECK(bit_patterns(dx_switched.to_nchw()) == bit_patterns(dx_same.to_nchw()));
    CHECK(bit_patterns(switched.gradients()) == bit_patterns(same.gradients()));
  }
}

TEST_CASE("BatchNorm gradients agree with finite differences") {
  SUBCASE("2d, training (batch statistics)") {
    Network<Shape<3, 4, 4>, Sequential<BatchNorm2d<3>>> net;
    auto& bn = net.root().get<0>();
    Rng rng(4);
    for (auto& w : bn.weight.data()) w = static_cast<float>(rng.uniform(0.5, 1.5));
    for (auto& b : bn.bias.data()) b = static_cast<float>(rng.uniform(-0.5, 0.5));
    require_gradients_ok(gradient_check(net, random_batch<Shape<3, 4, 4>>(3, 6)));
  }
  SUBCASE("1d, evaluation (running statistics)") {
    Network<Features<4>, Sequential<BatchNorm1d<4>>> net;
    auto& bn = net.root().get<0>();
    bn.running_mean = {0.1f, -0.2f, 0.3f, 0.0f};
    bn.running_var = {0.5f, 1.5f, 2.0f, 0.8f};
    net.eval();
    require_gradients_ok(gradient_check(net, random_batch<Features<4>>(5, 7)));
  }
}

TEST_CASE("BatchNorm refuses to train on a single value per channel") {
  Network<Features<4>, Sequential<BatchNorm1d<4>>> net;
  CHECK_THROWS_WITH_AS(net.forward(random_batch<Features<4>>(1, 1)),
                       doctest::Contains("more than one value per channel"), std::invalid_argument);
  net.eval();
  CHECK_NOTHROW(net.forward(random_batch<Features<4>>(1, 1)));
}

TEST_CASE("BatchNorm on a share of the batch with its sums exchanged normalises as on the whole batch") {
  // The whole batch is two copies of the same 4 samples, so the other share's sums equal this
  // share's: the stand-in for the all-reduce doubles them.
  using In = Shape<3, 2, 2>;
  const auto half = random_batch<In>(4, 7);
  std::vector<float> twice = half.to_nchw();
  twice.insert(twice.end(), twice.begin(), twice.end());
  Batch<In> whole(8);
  whole.from_nchw(twice.data(), 8);
  const auto dy_half = random_batch<In>(4, 8);
  std::vector<float> dy_twice = dy_half.to_nchw();
  dy_twice.insert(dy_twice.end(), dy_twice.begin(), dy_twice.end());
  Batch<In> dy_whole(8);
  dy_whole.from_nchw(dy_twice.data(), 8);

  Network<In, Sequential<BatchNorm2d<3>>> alone(1), shared(1);
  Batch<In> dx_whole, dx_half;
  const auto y_whole = alone.forward(whole).to_nchw();
  alone.backward(whole, dy_whole, dx_whole);
  std::vector<float> y_half;
  {
    BatchShard s;
    s.global = 8;
    s.allreduce = [](double* v, std::size_t n, void*) {
      for (std::size_t i = 0; i < n; ++i) v[i] *= 2;
    };
    ShardScope scope(s);
    y_half = shared.forward(half).to_nchw();
    shared.backward(half, dy_half, dx_half);
  }
  const auto dx_w = dx_whole.to_nchw(), dx_h = dx_half.to_nchw();
  for (std::size_t i = 0; i < y_half.size(); ++i) {
    CHECK(y_half[i] == doctest::Approx(y_whole[i]).epsilon(1e-6));
    CHECK(dx_h[i] == doctest::Approx(dx_w[i]).epsilon(1e-5));
  }
  auto& a = alone.root().get<0>();
  auto& b = shared.root().get<0>();
  for (int c = 0; c < 3; ++c) {
    // running_var's unbiased estimate uses the global count (8 - 1), not the share's (4 - 1).
    CHECK(b.running_mean[c] == doctest::Approx(a.running_mean[c]).epsilon(1e-6));
    CHECK(b.running_var[c] == doctest::Approx(a.running_var[c]).epsilon(1e-6));
    // Parameter gradients are this share's part: the gradient all-reduce adds the shares.
    CHECK(2 * b.weight.gradient()[c] == doctest::Approx(a.weight.gradient()[c]).epsilon(1e-5));
    CHECK(2 * b.bias.gradient()[c] == doctest::Approx(a.bias.gradient()[c]).epsilon(1e-5));
  }
}
