// Conv2d: PyTorch parity for every stride/padding/kernel variant the networks use, and
// finite-difference gradients.
#include "support/check.hpp"
#include "support/direct_conv.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

using namespace ctnn;
using namespace ctnn::test;

namespace {
// A convolution's shape and the forward path ops::conv2d_forward takes for it (in fp32).
struct PathCase {
  ops::ConvShape s;
  const char* path;
};

template <int Cin, int Cout, int K, int S, int P, int H>
void conv_parity(const char* name) {
  using In = Shape<Cin, H, H>;
  using Net = Network<In, Sequential<Conv2d<Cin, Cout, K, S, P>>>;
  using Out = typename Net::out_shape;
  Golden g(name);
  Net net;
  auto& conv = net.root().template get<0>();
  set_affine(conv, g);
  const auto x = batch_from<In>(g, "x");
  expect_parity(net.forward(x).to_nchw(), g["y"].values, std::string(name) + " y");

  const auto dy = batch_from<Out>(g, "dy");
  Batch<In> dx;
  net.zero_grad();
  net.backward(x, dy, dx);
  expect_parity(dx.to_nchw(), g["dx"].values, std::string(name) + " dx");
  expect_parity(conv.weight.gradient(), g["dweight"].values, std::string(name) + " dweight");
  expect_parity(conv.bias.gradient(), g["dbias"].values, std::string(name) + " dbias");
}

}  // namespace

TEST_CASE("Conv2d matches PyTorch: forward, input, weight and bias gradients") {
  conv_parity<3, 4, 3, 1, 1, 5>("conv2d_k3s1p1");
  conv_parity<2, 3, 3, 2, 1, 7>("conv2d_k3s2p1");
  conv_parity<4, 5, 1, 1, 0, 4>("conv2d_k1s1p0");   // the copy-free 1x1 path
  conv_parity<3, 2, 1, 2, 0, 5>("conv2d_k1s2p0");   // ResNet's strided projection
  conv_parity<3, 2, 7, 2, 3, 9>("conv2d_k7s2p3");   // ResNet's stem
  conv_parity<2, 3, 3, 1, 0, 6>("conv2d_k3s1p0");
}

TEST_CASE("Conv2d on planes every output pixel sees whole (one dense product) matches PyTorch") {
  static_assert(ops::ConvShape{5, 2, 2, 6, 3, 1, 1}.whole_plane() && ops::ConvShape{4, 1, 1, 3, 3, 1, 1}.whole_plane());
  static_assert(!ops::ConvShape{5, 4, 4, 6, 3, 1, 1}.whole_plane(), "4x4: more multiply-adds than im2col");
  static_assert(!ops::ConvShape{5, 2, 2, 6, 3, 2, 1}.whole_plane() && !ops::ConvShape{5, 2, 2, 6, 3, 1, 2}.whole_plane());
  conv_parity<5, 6, 3, 1, 1, 2>("conv2d_k3s1p1_plane2");
  conv_parity<4, 3, 3, 1, 1, 1>("conv2d_k3s1p1_plane1");
}

TEST_CASE("Conv2d's image-parallel schedule matches PyTorch over several chunks and groups") {
  static_assert(Conv2d<3, 4, 3, 1, 1>::bind<Shape<3, 8, 8>>::image_parallel &&
                Conv2d<2, 3, 7, 2, 3>::bind<Shape<2, 16, 16>>::image_parallel,
                "these cases must take the image-parallel schedule");
  conv_parity<3, 4, 3, 1, 1, 8>("conv2d_k3s1p1_chunked");   // batch 10: 5 chunks of 2
  conv_parity<2, 3, 7, 2, 3, 16>("conv2d_k7s2p3_chunked");  // batch 9: 5 chunks, last of 1
}

TEST_CASE("Conv2d output shapes follow PyTorch's floor arithmetic") {
  using A = Conv2d<3, 64, 7, 2, 3>::bind<Shape<3, 32, 32>>;
  static_assert(A::out_shape::height == 16 && A::out_shape::width == 16 && A::out_shape::channels == 64);
  using B = Conv2d<8, 8, 1, 2, 0>::bind<Shape<8, 7, 7>>;
  static_assert(B::out_shape::height == 4);
  using C = Conv2d<8, 8, 3, 1, 1>::bind<Shape<8, 2, 2>>;
  static_assert(C::out_shape::height == 2);
  CHECK(A::type_name() == "Conv2d(3, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3))");
}

TEST_CASE("Conv2d gradients agree with finite differences") {
  SUBCASE("3x3, padding 1") {
    Network<Shape<3, 6, 6>, Sequential<Conv2d<3, 4, 3, 1, 1>>> net(7);
    require_gradients_ok(gradient_check(net, random_batch<Shape<3, 6, 6>>(2, 11)));
  }
  SUBCASE("3x3, stride 2") {
    Network<Shape<2, 7, 7>, Sequential<Conv2d<2, 3, 3, 2, 1>>> net(8);
    require_gradients_ok(gradient_check(net, random_batch<Shape<2, 7, 7>>(3, 12)));
  }
  SUBCASE("1x1, stride 1 (no im2col)") {
    Network<Shape<5, 3, 3>, Sequential<Conv2d<5, 4, 1>>> net(9);
    require_gradients_ok(gradient_check(net, random_batch<Shape<5, 3, 3>>(2, 13)));
  }
  SUBCASE("7x7, stride 2, padding 3") {
    Network<Shape<2, 8, 8>, Sequential<Conv2d<2, 2, 7, 2, 3>>> net(10);
    require_gradients_ok(gradient_check(net, random_batch<Shape<2, 8, 8>>(2, 14)));
  }
}

namespace {
// max |got - exact| over the largest sum of |products| behind any one value. Unlike a measure
// against the largest exact value, this one is not inflated by cancellation (a single weight
// gradient summed from thousands of products of both signs can be far smaller than its terms);
// its bounds below are empirical. A value left unwritten (NaN) fails.
double error_in_terms(const float* got, const std::vector<double>& exact, const std::vector<double>& terms) {
  double err = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < exact.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    err = std::max(err, std::abs(got[i] - exact[i]));
    scale = std::max(scale, terms[i]);
  }
  return err / scale;
}
}  // namespace

TEST_CASE("ops::conv2d on random shapes matches a direct convolution in double, on every schedule") {
  // Kernels 1-7, strides 1-3, padding up to 3 and the kernel's size, planes 1-20 a side (square
  // or not), 1-64 input channels, batches of 1-40; half the draws (before shapes that do not fit
  // are drawn again) the 3x3 stride-1 padding-1 shapes of Winograd and of the whole-plane
  // product. Worst errors measured over 6,000 draws (GCC 12 -O2, AMD Zen 4, AVX-512 and the
  // portable SSE2 build alike): 2.8e-7 of the products' magnitude on im2col, whole-plane and
  // F(2x2) Winograd, 3.7e-6 on F(4x4) Winograd (its weight gradient; forward and input gradient
  // less); the bounds below are about twice those. A wrong tap, stride or padding anywhere is
  // off by the size of a product.
  Rng rng(2026);
  const auto pick = [&](int lo, int hi) { return lo + static_cast<int>(rng.below(static_cast<std::uint64_t>(hi - lo + 1))); };
  int schedules[4] = {0, 0, 0, 0};  // whole plane, F(2x2), F(4x4), im2col or 1x1 GEMM
  for (int draw = 0; draw < 240;) {
    ops::ConvShape s{};
    constexpr int kernels[] = {1, 1, 2, 3, 3, 3, 4, 5, 7}, channels[] = {1, 2, 3, 5, 8, 16, 17, 24, 32, 64};
    s.kernel = kernels[pick(0, 8)];
    s.stride = pick(0, 2) ? 1 : pick(2, 3);
    s.padding = pick(0, std::min(3, s.kernel));
    s.in_channels = channels[pick(0, 9)];
    s.out_channels = pick(1, 40);
    s.height = pick(1, 20);
    s.width = pick(0, 3) ? pick(1, 20) : s.height;
    if (pick(0, 1)) {
      s.kernel = 3, s.stride = 1, s.padding = 1;
      s.in_channels = channels[pick(5, 9)];
      if (pick(0, 2) == 0) s.height = pick(1, 2), s.width = pick(1, 2);
    }
    s.relu = pick(0, 3) == 0;
    const int n = pick(0, 3) ? pick(1, 9) : pick(10, 40);
    if (s.height + 2 * s.padding < s.kernel || s.width + 2 * s.padding < s.kernel) continue;
    const std::int64_t products = std::int64_t{n} * s.out_channels * s.out_plane() * s.in_channels * s.kernel * s.kernel;
    if (products > 4'000'000) continue;  // keeps the reference's time down
    ++draw;
    std::vector<float> x(static_cast<std::size_t>(s.in_channels) * n * s.height * s.width),
        w(static_cast<std::size_t>(s.out_channels) * s.in_channels * s.kernel * s.kernel), b(s.out_channels),
        dy(static_cast<std::size_t>(s.out_channels) * n * s.out_plane());
    for (auto* v : {&x, &w, &b, &dy})
      for (float& e : *v) e = static_cast<float>(rng.uniform(-1, 1));
    const DirectConv ref = direct_conv(s, n, x, w, b, dy);
    // Outputs start as NaN, which error_in_terms refuses, so a value a schedule leaves unwritten
    // fails; the gradients of the parameters are added into zeros.
    const float unset = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> y(dy.size(), unset), dx(x.size(), unset), dw(w.size(), 0.0f), db(b.size(), 0.0f);
    ops::conv2d_forward(s, n, x.data(), w.data(), b.data(), y.data());
    ops::conv2d_backward(s, n, x.data(), dy.data(), w.data(), dw.data(), db.data(), dx.data());
    std::vector<double> want_y = ref.y;
    if (s.relu)
      for (double& v : want_y) v = std::max(v, 0.0);
    const int tile = ops::winograd_plan(s, n).tile;
    const int schedule = s.whole_plane() ? 0 : tile == 2 ? 1 : tile == 4 ? 2 : 3;
    ++schedules[schedule];
    const double bound = schedule == 2 ? 8e-6 : 6e-7;
    INFO("Cin " << s.in_channels << " Cout " << s.out_channels << " kernel " << s.kernel << " stride " << s.stride
                << " padding " << s.padding << " plane " << s.height << "x" << s.width << " batch " << n
                << " relu " << s.relu << " schedule " << schedule);
    CHECK(error_in_terms(y.data(), want_y, ref.y_terms) < bound);
    CHECK(error_in_terms(dx.data(), ref.dx, ref.dx_terms) < bound);
    CHECK(error_in_terms(dw.data(), ref.dw, ref.dw_terms) < bound);
    CHECK(error_in_terms(db.data(), ref.db, ref.db_terms) < 6e-7);
  }
  MESSAGE("draws by schedule: whole plane " << schedules[0] << ", F(2x2) " << schedules[1] << ", F(4x4) "
                                            << schedules[2] << ", im2col or 1x1 GEMM " << schedules[3]);
  for (const int count : schedules) CHECK(count >= 10);  // every schedule drawn (the draws are fixed: 240 of them)
}

namespace {
// Each sample of a batch of 5, alone, must give the output it has in the batch: bit for bit on
// ctnn's kernel, whose every output element is the same sum in the same order wherever its row
// lies; within 1e-5 on OpenBLAS, whose kernels sum edge rows differently.
template <int Pad>
void sample_alone_as_in_batch() {
  using In = Shape<64, 32, 32>;
  using Out = typename Conv2d<64, 8, 3, 1, Pad>::template bind<In>::out_shape;
  constexpr int plane = Out::height * Out::width;
  Network<In, Sequential<Conv2d<64, 8, 3, 1, Pad>>> net(3);
  const auto x = random_batch<In>(5, 21);
  const auto y = net.forward(x);
  const bool bits = ops::gemm_backend() == ops::GemmBackend::eigen;
  for (int i = 0; i < 5; ++i) {
    Batch<In> one(1);
    for (int c = 0; c < 64; ++c)
      std::copy(x.channel(c) + i * 1024, x.channel(c) + (i + 1) * 1024, one.channel(c));
    const auto& yi = net.forward(one);
    for (int c = 0; c < 8; ++c)
      for (int p = 0; p < plane; ++p) {
        const float got = yi.channel(c)[p], want = y.channel(c)[i * plane + p];
        if (bits) REQUIRE(std::bit_cast<std::uint32_t>(got) == std::bit_cast<std::uint32_t>(want));
        else REQUIRE(got == doctest::Approx(want).epsilon(1e-5));
      }
  }
}
}  // namespace

TEST_CASE("Conv2d splits large batches into chunks without changing the result") {
  // Unpadded 3x3 on 32x32 with 64 input channels: im2col, the patch matrix of one sample 576 x
  // 900 floats, so the batch of 5 runs in chunks (image-parallel).
  using Unpadded = Conv2d<64, 8, 3, 1, 0>::bind<Shape<64, 32, 32>>;
  static_assert(!Unpadded::winograd && Unpadded::col_budget / (900 * 576) < 5, "the test must exercise chunking");
  sample_alone_as_in_batch<0>();
  // Padded: Winograd F(4x4) by transform point, its tile products as tall as the batch's tiles.
  static_assert(Conv2d<64, 8, 3, 1, 1>::bind<Shape<64, 32, 32>>::winograd);
  sample_alone_as_in_batch<1>();
}

TEST_CASE("Conv2d default initialisation is U(-1/sqrt(fan_in), 1/sqrt(fan_in))") {
  Network<Shape<16, 4, 4>, Sequential<Conv2d<16, 32, 3>>> net(5);
  auto& conv = net.root().get<0>();
  const double bound = 1.0 / std::sqrt(16.0 * 9.0);
  double mx = 0, sum = 0;
  for (float w : conv.weight.data()) {
    mx = std::max(mx, std::abs(static_cast<double>(w)));
    sum += w;
  }
  CHECK(mx <= bound);
  CHECK(mx > 0.95 * bound);
  CHECK(std::abs(sum / conv.weight.numel) < 0.05 * bound);
  for (float b : conv.bias.data()) CHECK(std::abs(b) <= bound);
}

TEST_CASE("Epilogues on every path: a following ReLU is relu() of the plain output, a left-out bias added after gives the plain output, a folded BatchNorm (and ReLU) gives its own pass's output, bit for bit") {
  // One shape per forward path of ops::conv2d_forward (the path each takes in fp32; under bf16
  // the 3x3 stride-1 ones become AMX direct or patch-packed products, the 2x2 one a gathered one).
  const PathCase cases[] = {{{16, 8, 8, 16, 3, 1, 1}, "Winograd F(4x4, 3x3)"},
                            {{16, 4, 4, 8, 3, 1, 1}, "Winograd F(2x2, 3x3) by image chunks"},
                            {{256, 3, 3, 4, 3, 1, 1}, "Winograd F(2x2, 3x3) by transform point"},
                            {{8, 2, 2, 8, 3, 1, 1}, "whole plane"},
                            {{3, 8, 8, 4, 3, 1, 1}, "image-parallel im2col"},
                            {{3, 4, 4, 4, 3, 1, 1}, "im2col"},
                            {{5, 3, 3, 6, 1, 1, 0}, "1x1, no im2col"},
                            {{300, 5, 5, 40, 1, 1, 0}, "1x1, k in two blocks"},
                            {{320, 2, 2, 70, 1, 1, 0}, "1x1, columns cut over two threads"},
                            {{4, 7, 7, 5, 3, 2, 1}, "stride 2"},
                            {{32, 8, 8, 16, 3, 1, 1}, "32 input channels (AMX: direct)"}};
  MESSAGE(ops::bf16_kernel_summary());
  for (const Precision p : {Precision::fp32, Precision::bf16}) {
    const Autocast policy(p);
    for (const PathCase& c : cases) {
      CAPTURE(c.path);
      CAPTURE(p == Precision::bf16);
      const int n = 3;
      std::vector<float> x(static_cast<std::size_t>(c.s.in_channels) * n * c.s.height * c.s.width),
          w(static_cast<std::size_t>(c.s.out_channels) * c.s.patch()), b(c.s.out_channels),
          plain(static_cast<std::size_t>(c.s.out_channels) * n * c.s.out_plane()), fused(plain.size()),
          no_bias(plain.size()), mapped(plain.size()), folded(plain.size()), scale(c.s.out_channels),
          shift(c.s.out_channels);
      Rng rng(31);
      for (auto* v : {&x, &w, &b, &scale, &shift})
        for (float& e : *v) e = static_cast<float>(rng.uniform(-1, 1));
      ops::ConvShape with_relu = c.s;
      with_relu.relu = true;
      ops::conv2d_forward(c.s, n, x.data(), w.data(), b.data(), plain.data());
      ops::conv2d_forward(with_relu, n, x.data(), w.data(), b.data(), fused.data());
      ops::conv2d_forward(c.s, n, x.data(), w.data(), nullptr, no_bias.data());
      ops::conv2d_forward(c.s, n, x.data(), w.data(), ops::ChannelMap{b.data(), scale.data(), shift.data(), true},
                          mapped.data());
      const std::size_t channel = plain.size() / c.s.out_channels;
      for (int o = 0; o < c.s.out_channels; ++o)  // BatchNorm's own pass, then ReLU's, on the plain output
        ops::detail::scale_shift(plain.data() + o * channel, folded.data() + o * channel, channel, scale[o], shift[o], true);
      std::size_t negative = 0, differ = 0, bias_differ = 0, map_differ = 0;
      for (std::size_t i = 0; i < plain.size(); ++i) {
        negative += plain[i] < 0.0f;
        differ += std::bit_cast<std::uint32_t>(fused[i]) != std::bit_cast<std::uint32_t>(ops::relu(plain[i]));
        bias_differ += std::bit_cast<std::uint32_t>(no_bias[i] + b[i / channel]) != std::bit_cast<std::uint32_t>(plain[i]);
        map_differ += std::bit_cast<std::uint32_t>(mapped[i]) != std::bit_cast<std::uint32_t>(folded[i]);
      }
      CHECK(negative > plain.size() / 4);  // the ReLU has work to do
      CHECK(differ == 0);
      CHECK(bias_differ == 0);
      CHECK(map_differ == 0);
    }
  }
}

TEST_CASE("Transforms kept between forwards (ops::WeightCache): the bits of a fresh transform, and made again whenever the weights change") {
  // Winograd F(4x4) and F(2x2) and the whole-plane matrix: the paths whose weights are
  // transformed. Each change must be seen: a last-bit change of one weight, two weights
  // swapped (the same sum), another transform of the same weights and size (below).
  const PathCase cases[] = {{{16, 8, 8, 16, 3, 1, 1}, "Winograd F(4x4, 3x3)"},
                            {{16, 4, 4, 8, 3, 1, 1}, "Winograd F(2x2, 3x3)"},
                            {{8, 2, 2, 8, 3, 1, 1}, "whole plane"}};
  const int n = 3;
  for (const PathCase& c : cases) {
    CAPTURE(c.path);
    std::vector<float> x(static_cast<std::size_t>(c.s.in_channels) * n * c.s.height * c.s.width),
        w(static_cast<std::size_t>(c.s.out_channels) * c.s.patch()),
        fresh(static_cast<std::size_t>(c.s.out_channels) * n * c.s.out_plane()), kept(fresh.size());
    Rng rng(41);
    for (auto* v : {&x, &w})
      for (float& e : *v) e = static_cast<float>(rng.uniform(-1, 1));
    ops::WeightCache cache;
    const auto expect_fresh = [&] {
      ops::conv2d_forward(c.s, n, x.data(), w.data(), ops::ChannelMap{}, fresh.data());
      ops::conv2d_forward(c.s, n, x.data(), w.data(), ops::ChannelMap{}, kept.data(), &cache);
      return bit_patterns(kept) == bit_patterns(fresh);
    };
    CHECK(expect_fresh());  // made
    CHECK(expect_fresh());  // kept
    w[5] = std::nextafter(w[5], 2.0f);  // may round away in the output, not in the comparison
    CHECK(expect_fresh());
    const auto before = fresh;
    w[5] *= 1.5f;
    CHECK(expect_fresh());
    CHECK(bit_patterns(fresh) != bit_patterns(before));  // the change shows in the output
    std::swap(w[0], w[w.size() - 1]);
    CHECK(expect_fresh());
    const auto swapped = fresh;
    std::swap(w[0], w[w.size() - 1]);
    CHECK(expect_fresh());
    CHECK(bit_patterns(fresh) != bit_patterns(swapped));
    // Every weight negated: the change the Fletcher checksum of sessions 22-26 missed (each
    // 32-bit lane's sums moved by multiples of 2^32 for these sizes, 144, 72 and 36 per lane).
    const auto unnegated = fresh;
    for (float& e : w) e = -e;
    CHECK(expect_fresh());
    CHECK(bit_patterns(fresh) != bit_patterns(unnegated));
  }
  {
    // Every weight doubled, in a layer of 256 channels: whole chunks of 65,536 floats, whose
    // checksum lanes a power-of-two scale left unchanged.
    const ops::ConvShape s{256, 8, 8, 256, 3, 1, 1};
    std::vector<float> x(256 * 64), w(256 * 256 * 9), fresh(256 * 64), kept(fresh.size());
    Rng rng(47);
    for (auto* v : {&x, &w})
      for (float& e : *v) e = static_cast<float>(rng.uniform(-1, 1));
    ops::WeightCache cache;
    ops::conv2d_forward(s, 1, x.data(), w.data(), ops::ChannelMap{}, kept.data(), &cache);
    const auto before = kept;
    for (float& e : w) e *= 2.0f;
    ops::conv2d_forward(s, 1, x.data(), w.data(), ops::ChannelMap{}, kept.data(), &cache);
    ops::conv2d_forward(s, 1, x.data(), w.data(), ops::ChannelMap{}, fresh.data());
    CHECK(bit_patterns(kept) == bit_patterns(fresh));
    CHECK(bit_patterns(kept) != bit_patterns(before));
  }
  // One cache, one weight array, two transforms of it of the same size: the whole-plane matrix
  // on 2x2 planes ((16*4) x (16*4) floats) and F(2x2) on 4x4 ones (16 points of 16 x 16).
  const ops::ConvShape plane{16, 2, 2, 16, 3, 1, 1}, small{16, 4, 4, 16, 3, 1, 1};
  std::vector<float> w(16 * 16 * 9), xp(16 * n * 4), xs(16 * n * 16), yp(16 * n * 4), ys(16 * n * 16),
      ref(ys.size());
  Rng rng(43);
  for (auto* v : {&w, &xp, &xs})
    for (float& e : *v) e = static_cast<float>(rng.uniform(-1, 1));
  ops::WeightCache cache;
  ops::conv2d_forward(plane, n, xp.data(), w.data(), ops::ChannelMap{}, yp.data(), &cache);
  ops::conv2d_forward(small, n, xs.data(), w.data(), ops::ChannelMap{}, ys.data(), &cache);
  ops::conv2d_forward(small, n, xs.data(), w.data(), ops::ChannelMap{}, ref.data());
  CHECK(bit_patterns(ys) == bit_patterns(ref));
}

TEST_CASE("Conv2d under NoGrad keeps its transformed weights, and sees weights changed through parameters()") {
  using In = Shape<16, 8, 8>;
  using Net = Network<In, Sequential<Conv2d<16, 16, 3, 1, 1>>>;
  Net net(3), other(4);
  const auto x = random_batch<In>(2, 5);
  NoGrad no_grad;
  const auto first = net.forward(x).to_nchw();
  CHECK(bit_patterns(net.forward(x).to_nchw()) == bit_patterns(first));
  std::copy(other.parameters().begin(), other.parameters().end(), net.parameters().begin());
  CHECK(bit_patterns(net.forward(x).to_nchw()) == bit_patterns(other.forward(x).to_nchw()));
  CHECK(bit_patterns(net.forward(x).to_nchw()) != bit_patterns(first));
}
