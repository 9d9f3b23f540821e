// MaxPool2d and AvgPool2d: PyTorch parity (floor output sizes, padding) and gradients.
#include <cstring>
#include <iterator>
#include <limits>
#include <utility>
#include <vector>

#include "support/check.hpp"

using namespace ctnn;
using namespace ctnn::test;

namespace {
template <class In, class Spec>
void pool_parity(const char* name) {
  Golden g(name);
  Network<In, Sequential<Spec>> net;
  using Out = typename Network<In, Sequential<Spec>>::out_shape;
  const auto x = batch_from<In>(g, "x");
  REQUIRE(g["y"].shape[2] == Out::height);
  // Bit for bit: a window's maximum, or its sum over the window's size, as PyTorch's CPU kernels.
  const auto y = net.forward(x).to_nchw();
  const std::string y_bits = std::string(name) + " y bits", dx_bits = std::string(name) + " dx bits";
  CHECK_MESSAGE(bit_patterns(y) == bit_patterns(g.floats("y")), y_bits);
  Batch<In> dx;
  net.backward(x, batch_from<Out>(g, "dy"), dx);
  const auto dxv = dx.to_nchw();
  CHECK_MESSAGE(bit_patterns(dxv) == bit_patterns(g.floats("dx")), dx_bits);
}
}  // namespace

TEST_CASE("MaxPool2d matches PyTorch") {
  pool_parity<Shape<3, 8, 8>, MaxPool2d<2, 2, 0>>("maxpool2d_k2s2p0");
  pool_parity<Shape<2, 16, 16>, MaxPool2d<3, 2, 0>>("maxpool2d_k3s2p0");  // 16 -> 7, as ResNet's stem
  pool_parity<Shape<2, 7, 7>, MaxPool2d<3, 2, 1>>("maxpool2d_k3s2p1");
}

namespace {
// `fast` (a max-pool plane kernel taking input, output, indices) and max_pool_plane on 50 planes
// of g drawn from a small set of values, so that windows hold ties, NaNs, infinities and signed
// zeros in every position: the same values bit for bit and the same indices.
template <class Fast>
void same_as_general(const ops::PoolGeometry& g, Rng& rng, Fast&& fast) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const float values[] = {0.0f, -0.0f, 1.0f, -1.0f, 2.5f, nan, inf, -inf};
  const std::size_t outputs = static_cast<std::size_t>(g.out_height * g.out_width);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> x(static_cast<std::size_t>(g.height * g.width));
    for (auto& v : x) v = values[rng.below(std::size(values))];
    std::vector<float> general(outputs), got(outputs);
    std::vector<std::int32_t> general_arg(outputs), got_arg(outputs);
    ops::max_pool_plane(x.data(), g, general.data(), general_arg.data());
    fast(x.data(), got.data(), got_arg.data());
    CAPTURE(g.height);
    CAPTURE(g.width);
    CAPTURE(g.kernel);
    CHECK(got_arg == general_arg);
    CHECK(std::memcmp(got.data(), general.data(), outputs * sizeof(float)) == 0);
  }
}
}  // namespace

TEST_CASE("The unpadded max-pool kernels give the general kernel's values and indices, NaNs and ties included") {
  Rng rng(5);
  // 2x2 stride 2 (VGG16's pools); odd sizes leave a last row and column that no window covers.
  for (const auto& size : {std::pair{8, 8}, std::pair{7, 9}, std::pair{2, 34}, std::pair{32, 32}}) {
    const ops::PoolGeometry g{size.first, size.second, 2, 2, 0, size.first / 2, size.second / 2};
    same_as_general(g, rng, [&](const float* x, float* y, std::int32_t* arg) { ops::max_pool_plane_2x2(x, g, y, arg); });
  }
  // Row maxima first, then over rows: 3x3 stride 2 (ResNet's stem, 16 -> 7) and 2x2 stride 2,
  // on planes whose width the stride divides, heights odd and even (rows no window reaches).
  for (const auto& size : {std::pair{16, 16}, std::pair{9, 12}, std::pair{3, 4}, std::pair{32, 32}}) {
    const int h = size.first, w = size.second;
    std::vector<float> row_max(static_cast<std::size_t>(h * w / 2));
    std::vector<std::int32_t> row_arg(row_max.size());
    const ops::PoolGeometry g2{h, w, 2, 2, 0, (h - 2) / 2 + 1, (w - 2) / 2 + 1};
    same_as_general(g2, rng, [&](const float* x, float* y, std::int32_t* arg) {
      ops::max_pool_plane_by_rows<2, 2>(x, g2, y, arg, row_max.data(), row_arg.data());
    });
    const ops::PoolGeometry g3{h, w, 3, 2, 0, (h - 3) / 2 + 1, (w - 3) / 2 + 1};
    same_as_general(g3, rng, [&](const float* x, float* y, std::int32_t* arg) {
      ops::max_pool_plane_by_rows<3, 2>(x, g3, y, arg, row_max.data(), row_arg.data());
    });
  }
}

TEST_CASE("AvgPool2d matches PyTorch") {
  pool_parity<Shape<3, 2, 2>, AvgPool2d<2, 1>>("avgpool2d_k2s1");
  pool_parity<Shape<2, 6, 6>, AvgPool2d<2, 2>>("avgpool2d_k2s2");
}

TEST_CASE("MaxPool2d takes the first maximum of a tie, as PyTorch does") {
  Network<Shape<1, 2, 2>, Sequential<MaxPool2d<2>>> net;
  Batch<Shape<1, 2, 2>> x(1);
  x.fill(1.0f);
  net.forward(x);
  Batch<Shape<1, 1, 1>> dy(1);
  dy.fill(1.0f);
  Batch<Shape<1, 2, 2>> dx;
  net.backward(x, dy, dx);
  CHECK(dx(0, 0, 0, 0) == 1.0f);
  CHECK(dx(0, 0, 0, 1) == 0.0f);
  CHECK(dx(0, 0, 1, 0) == 0.0f);
  CHECK(dx(0, 0, 1, 1) == 0.0f);
}

TEST_CASE("MaxPool2d takes the last NaN of a window, as PyTorch does (its values, indices and gradient)") {
  // torch.nn.functional.max_pool2d(..., return_indices=True) in PyTorch 1.13: a value replaces
  // the window's maximum if it is larger or a NaN, so the last NaN wins. The 2x2 kernel here:
  const float nan = std::numeric_limits<float>::quiet_NaN();
  {
    Network<Shape<1, 2, 2>, Sequential<MaxPool2d<2>>> net;
    Batch<Shape<1, 2, 2>> x(1), dx;
    x(0, 0, 0, 0) = nan, x(0, 0, 0, 1) = 1.0f, x(0, 0, 1, 0) = nan, x(0, 0, 1, 1) = 2.0f;
    CHECK(std::isnan(net.forward(x)(0, 0, 0, 0)));
    Batch<Shape<1, 1, 1>> dy(1);
    dy.fill(1.0f);
    net.backward(x, dy, dx);  // torch: [[0, 0], [1, 0]]
    CHECK(dx(0, 0, 0, 0) == 0.0f);
    CHECK(dx(0, 0, 1, 0) == 1.0f);
  }
  // The general kernel, padded windows: torch's indices [[3, 5], [3, 5]].
  const float x[] = {1.0f, nan, 3.0f, nan, 5.0f, nan, 7.0f, 8.0f, 9.0f};
  const ops::PoolGeometry g{3, 3, 3, 2, 1, 2, 2};
  float y[4];
  std::int32_t arg[4];
  ops::max_pool_plane(x, g, y, arg);
  CHECK(arg[0] == 3);
  CHECK(arg[1] == 5);
  CHECK(arg[2] == 3);
  CHECK(arg[3] == 5);
}

TEST_CASE("Pooling gradients agree with finite differences") {
  SUBCASE("max, overlapping windows with padding") {
    // Distinct values at least 0.1 apart, so a perturbation of h never changes a window's argmax.
    using In = Shape<2, 5, 5>;
    Batch<In> x(2);
    Rng rng(3);
    std::vector<int> order(x.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    for (std::size_t i = 0; i < x.size(); ++i) x.data()[i] = 0.1f * static_cast<float>(order[i]) - 5.0f;
    Network<In, Sequential<MaxPool2d<3, 2, 1>>> net;
    require_gradients_ok(gradient_check(net, x));
  }
  SUBCASE("average") {
    Network<Shape<2, 4, 4>, Sequential<AvgPool2d<2, 1>>> net;
    require_gradients_ok(gradient_check(net, random_batch<Shape<2, 4, 4>>(2, 4)));
  }
}
