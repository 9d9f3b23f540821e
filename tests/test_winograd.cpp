// Winograd 3x3 convolutions (ops/winograd.hpp) against a direct convolution in double: forward,
// input gradient and weight gradient, both tile sizes, both schedules, ragged planes; and
// bit-identical results at 1 and 2 threads.
//
// Error measure: max |winograd - exact| / max |exact| over the whole result (inputs, kernels and
// output gradients uniform in [-1, 1]). Measured on this machine (AMD EPYC, GCC 12, -O3
// -march=native, OpenBLAS), over the shapes below (up to 64 channels), all three schedules:
//   F(2x2, 3x3): forward 4.2e-8 .. 3.5e-7, input gradient 7.0e-8 .. 3.2e-7, weight gradient 2.4e-8 .. 6.1e-7
//   F(4x4, 3x3): forward 6.7e-8 .. 4.5e-6, input gradient 1.5e-7 .. 4.2e-6, weight gradient 2.4e-8 .. 3.1e-6
// (the smallest figures are the 1x1 plane, where only the centre tap is used). F(4x4)'s larger
// error comes from its transform coefficients (up to 8 in A^T, 1/24 in G, 5 in B^T). The bounds
// checked below are about 2.5x (F(2x2)) and 1.8x (F(4x4)) the worst figures; the run prints
// every figure with `-s`.
#include <doctest/doctest.h>

#include <ctnn/ctnn.hpp>
#include <ctnn/ops/winograd.hpp>

#include "support/direct_conv.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

using ctnn::ops::Winograd3x3;

namespace {

struct Problem {
  Winograd3x3 s;
  std::vector<float> x, w, b, dy;
};

Problem make(int cin, int cout, int h, int wd, int n, unsigned seed) {
  Problem p;
  p.s = {cin, cout, h, wd, n};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto fill = [&](std::vector<float>& v, std::size_t size) {
    v.resize(size);
    for (auto& e : v) e = u(rng);
  };
  fill(p.x, std::size_t(cin) * n * h * wd);
  fill(p.w, std::size_t(cout) * cin * 9);
  fill(p.b, cout);
  fill(p.dy, std::size_t(cout) * n * h * wd);
  return p;
}

// The exact values, from tests/support/direct_conv.hpp.
ctnn::test::DirectConv direct(const Problem& p) {
  const auto& s = p.s;
  return ctnn::test::direct_conv({s.in_channels, s.height, s.width, s.out_channels, 3, 1, 1}, s.batch, p.x, p.w, p.b, p.dy);
}

double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  double err = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    REQUIRE(std::isfinite(got[i]));
    err = std::max(err, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return err / scale;
}

struct Result {
  std::vector<float> y, dx, dw;
};

// by_point with a tiny point_budget: the batch is transformed in parts of one or two images.
Result run(const Problem& p, int tile, bool by_point, bool small_parts = false) {
  Winograd3x3 s = p.s;
  s.tile = tile;
  s.by_point = by_point;
  if (small_parts) s.point_budget = std::size_t(2) * (tile + 2) * (tile + 2) * (s.in_channels + s.out_channels) * ((s.height + tile - 1) / tile) * ((s.width + tile - 1) / tile) - 1;
  Result r;
  r.y.assign(std::size_t(s.out_channels) * s.batch * s.height * s.width, -7.0f);
  r.dx.assign(p.x.size(), -7.0f);
  r.dw.assign(p.w.size(), 0.0f);
  ctnn::ops::winograd_forward(s, p.x.data(), p.w.data(), p.b.data(), r.y.data());
  ctnn::ops::winograd_backward_data(s, p.dy.data(), p.w.data(), r.dx.data());
  ctnn::ops::winograd_backward_weights(s, p.x.data(), p.dy.data(), r.dw.data());
  return r;
}

// The error bound of a tile size (the file's header: about 2.5x and 1.8x the worst measured).
double bound_for_tile(int tile) { return tile == 2 ? 1.5e-6 : 8e-6; }

}  // namespace

TEST_CASE("Winograd F(2x2,3x3) and F(4x4,3x3) match a direct convolution in double") {
  struct Case {
    int cin, cout, h, w, n;
  };
  const Case cases[] = {
      {3, 4, 5, 5, 3},     {2, 3, 7, 7, 4},   {5, 4, 2, 2, 6},   {6, 7, 4, 4, 5},   {4, 3, 5, 9, 2},
      {3, 2, 1, 1, 3},     {8, 8, 8, 8, 11},  {16, 8, 13, 6, 3}, {64, 32, 16, 16, 2}, {32, 64, 7, 7, 3},
      {2, 2, 3, 150, 2},  // wider than one block of tiles
  };
  for (const auto& c : cases) {
    const Problem p = make(c.cin, c.cout, c.h, c.w, c.n, unsigned(c.cin * 131 + c.h * 7 + c.w));
    const auto ref = direct(p);
    for (int tile : {2, 4})
      for (int mode = 0; mode < 3; ++mode) {
        const bool by_point = mode > 0, small_parts = mode == 2;
        CAPTURE(c.cin);
        CAPTURE(c.cout);
        CAPTURE(c.h);
        CAPTURE(c.w);
        CAPTURE(tile);
        CAPTURE(by_point);
        CAPTURE(small_parts);
        const Result r = run(p, tile, by_point, small_parts);
        const double ey = rel_error(r.y, ref.y), ex = rel_error(r.dx, ref.dx), ew = rel_error(r.dw, ref.dw);
        const double bound = bound_for_tile(tile);
        CHECK(ey < bound);
        CHECK(ex < bound);
        CHECK(ew < bound);
        MESSAGE("F(" << tile << ") " << c.cin << "->" << c.cout << " " << c.h << "x" << c.w << " n" << c.n
                     << std::string(small_parts ? " by-point in parts" : by_point ? " by-point" : " chunked") << ": y " << ey << " dx " << ex << " dw " << ew);
      }
  }
}

TEST_CASE("Winograd results are bit-identical at 1 and 2 threads") {
  // Batch 37: chunks of 5 images (8 chunks, the last of 2) and 8 weight-gradient groups.
  const Problem p = make(12, 10, 9, 9, 37, 5);
  for (int tile : {2, 4})
    for (int mode = 0; mode < 3; ++mode) {
      const bool by_point = mode > 0, small_parts = mode == 2;
      ctnn::set_num_threads(1);
      const Result one = run(p, tile, by_point, small_parts);
      ctnn::set_num_threads(2);
      const Result two = run(p, tile, by_point, small_parts);
      CAPTURE(tile);
      CAPTURE(mode);
      CHECK(one.y == two.y);
      CHECK(one.dx == two.dx);
      CHECK(one.dw == two.dw);
    }
}

template <class Net>
void check_layer(const char* what) {
  using namespace ctnn;
  using In = typename Net::in_shape;
  using Out = typename Net::out_shape;
  auto net = std::make_unique<Net>(1);
  auto& conv = net->root().template get<0>();
  const int n = 5;
  const Problem p = make(In::channels, Out::channels, In::height, In::width, n, 11);
  std::copy(p.w.begin(), p.w.end(), conv.weight.value);
  std::copy(p.b.begin(), p.b.end(), conv.bias.value);
  const auto ref = direct(p);
  Batch<In> x(n);
  std::copy(p.x.begin(), p.x.end(), x.data());  // the test's layout is the batch layout
  Batch<Out> dy(n);
  std::copy(p.dy.begin(), p.dy.end(), dy.data());
  const auto& y = net->forward(x);
  const std::vector<float> yv(y.data(), y.data() + y.size());
  Batch<In> dx;
  net->zero_grad();
  net->backward(x, dy, dx);
  CAPTURE(what);
  // The kernels' bounds, by the layer's tile size.
  const double bound = bound_for_tile(std::decay_t<decltype(conv)>::winograd_plan().tile);
  CHECK(rel_error(yv, ref.y) < bound);
  CHECK(rel_error({dx.data(), dx.data() + dx.size()}, ref.dx) < bound);
  CHECK(rel_error({conv.weight.grad, conv.weight.grad + p.w.size()}, ref.dw) < bound);
  CHECK(rel_error({conv.bias.grad, conv.bias.grad + Out::channels}, ref.db) < 1e-6);
}

TEST_CASE("Conv2d layers take the Winograd path where planned, and match the direct convolution") {
  using namespace ctnn;
  // Which layers go through Winograd (see Conv2dLayer::winograd_plan).
  static_assert(!Conv2d<3, 64, 3, 1, 1>::bind<Shape<3, 32, 32>>::winograd);      // Cin < 16
  static_assert(Conv2d<64, 64, 3, 1, 1>::bind<Shape<64, 32, 32>>::winograd_plan().tile == 4);
  static_assert(Conv2d<64, 64, 3, 1, 1>::bind<Shape<64, 7, 7>>::winograd_plan().tile == 2);
  static_assert(Conv2d<512, 512, 3, 1, 1>::bind<Shape<512, 4, 4>>::winograd_plan().tile == 2);
  static_assert(!Conv2d<512, 512, 3, 1, 1>::bind<Shape<512, 2, 2>>::winograd);   // 2x2 plane
  static_assert(!Conv2d<64, 64, 3, 2, 1>::bind<Shape<64, 8, 8>>::winograd);      // stride 2
  static_assert(Conv2d<16, 8, 3, 1, 1>::bind<Shape<16, 9, 9>>::winograd_plan().tile == 4);
  check_layer<Network<Shape<16, 9, 9>, Sequential<Conv2d<16, 8, 3, 1, 1>>>>("F(4x4) by point, 9x9");
  static_assert(Conv2d<16, 8, 3, 1, 1>::bind<Shape<16, 5, 5>>::winograd_plan().tile == 2);
  check_layer<Network<Shape<16, 5, 5>, Sequential<Conv2d<16, 8, 3, 1, 1>>>>("F(2x2) chunked, 5x5");
  // F(2x2)'s schedule: chunked on ResNet's 7x7 64-channel planes, by point from 256 channels and
  // on planes of 4x4 and less, where a chunk's products would be thin.
  static_assert(!Conv2d<64, 64, 3, 1, 1>::bind<Shape<64, 7, 7>>::winograd_plan().by_point);
  static_assert(Conv2d<256, 256, 3, 1, 1>::bind<Shape<256, 7, 7>>::winograd_plan().by_point);
  static_assert(Conv2d<128, 128, 3, 1, 1>::bind<Shape<128, 4, 4>>::winograd_plan().by_point);
  static_assert(Conv2d<16, 8, 3, 1, 1>::bind<Shape<16, 3, 4>>::winograd_plan().tile == 2 &&
                Conv2d<16, 8, 3, 1, 1>::bind<Shape<16, 3, 4>>::winograd_plan().by_point);
  check_layer<Network<Shape<16, 3, 4>, Sequential<Conv2d<16, 8, 3, 1, 1>>>>("F(2x2) by point, 3x4");
}

namespace {
// U = G g G^T of one kernel, in double, the plain way (one kernel at a time).
template <int M>
void reference_kernel_transform(const float* g, bool flip, double (&u)[M + 2][M + 2]) {
  using X = ctnn::ops::winograd_detail::Xf<M>;
  constexpr int A = M + 2;
  double gg[3][3], t[A][3];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) gg[i][j] = flip ? g[(2 - i) * 3 + (2 - j)] : g[i * 3 + j];
  for (int j = 0; j < 3; ++j) {
    const double in[3] = {gg[0][j], gg[1][j], gg[2][j]};
    double r[A];
    X::kernel(in, r);
    for (int i = 0; i < A; ++i) t[i][j] = r[i];
  }
  for (int i = 0; i < A; ++i) X::kernel(t[i], u[i]);
}

template <int M>
void check_kernel_transforms(int cin, int cout, bool flip) {
  constexpr int A = M + 2;
  std::mt19937 rng(static_cast<unsigned>(cin * 100 + cout + flip));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> w(static_cast<std::size_t>(cout) * cin * 9), u(static_cast<std::size_t>(A) * A * cin * cout);
  for (float& v : w) v = dist(rng);
  ctnn::ops::winograd_detail::transform_kernels<M>(w.data(), cin, cout, flip, u.data());
  const std::size_t ps = static_cast<std::size_t>(cin) * cout;
  std::size_t differ = 0;
  for (int k = 0; k < cout; ++k)
    for (int c = 0; c < cin; ++c) {
      double ref[A][A];
      reference_kernel_transform<M>(w.data() + (static_cast<std::size_t>(k) * cin + c) * 9, flip, ref);
      const std::size_t at = flip ? static_cast<std::size_t>(c) * cout + k : static_cast<std::size_t>(k) * cin + c;
      for (int i = 0; i < A; ++i)
        for (int j = 0; j < A; ++j) differ += u[(i * A + j) * ps + at] != static_cast<float>(ref[i][j]);
    }
  CHECK(differ == 0);
}
}  // namespace

TEST_CASE("Kernel transforms, eight kernels a vector, equal the one-kernel transform bit for bit") {
  for (const bool flip : {false, true}) {
    CAPTURE(flip);
    check_kernel_transforms<4>(16, 24, flip);
    check_kernel_transforms<4>(5, 11, flip);  // rows of 5 and 11: lanes past the end
    check_kernel_transforms<2>(20, 9, flip);
    check_kernel_transforms<2>(64, 32, flip);
  }
}
