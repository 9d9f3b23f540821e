// bf16 mixed precision (ops/bf16.hpp, ops/precision.hpp): the rounding, the kernel against
// double sums of the rounded operands, each layer against PyTorch's autocast (within bf16's
// rounding) and against double sums of its rounded operands (within fp32's), and the fp32 path
// unchanged bit for bit. ctest runs this file once per kernel (tests/CMakeLists.txt): as
// test_bf16 on the AVX512_BF16 kernel (CTNN_BF16_KERNEL=avx512_bf16), as bf16_amx on the AMX
// kernel (CTNN_BF16_KERNEL=amx) and as bf16_portable on the portable one (runs everywhere). On a
// CPU without the kernel's instructions the cases print CTNN_TEST_SKIPPED with the reason, and
// ctest reports the test as skipped.
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string_view>

#include "support/check.hpp"

using namespace ctnn;
using namespace ctnn::test;

namespace {

// The kernel CTNN_BF16_KERNEL asks for ("amx", "avx512_bf16" or "portable"), if any.
std::string_view requested_kernel() {
  const char* k = std::getenv("CTNN_BF16_KERNEL");
  return k ? k : "";
}

// Whether the kernel this run is for can run here; if not, the reason, for ctest.
bool bf16_runs_here() {
  std::string why;
  if (requested_kernel() == "amx") why = ops::bf16_kernel_unavailable(ops::Bf16Kernel::amx);
  if (requested_kernel() == "avx512_bf16") why = ops::bf16_kernel_unavailable(ops::Bf16Kernel::avx512_bf16);
  if (!why.empty()) MESSAGE("CTNN_TEST_SKIPPED: " << why);
  return why.empty();
}

float from_bits(std::uint32_t u) { return std::bit_cast<float>(u); }

// bf16 keeps 8 significant bits: one rounding is within 2^-9 of the value. PyTorch's autocast
// rounds its convolution and linear outputs (and so their gradients) and the bias to bf16,
// ctnn keeps the fp32 sums; both round the same operands before multiplying. So each element
// must lie within 2^-8 of its own size (two roundings) plus 2^-8 of the tensor's largest
// magnitude (a rounded bias or a rounded addend of a sum that cancels).
void expect_bf16(std::span<const float> actual, const std::vector<double>& expected, const std::string& what) {
  double scale = 0.0;
  for (double v : expected) scale = std::max(scale, std::abs(v));
  expect_close(actual, expected, 0x1p-8, 0x1p-8 * scale, what);
}
void expect_bf16(const std::vector<float>& actual, const std::vector<double>& expected, const std::string& what) {
  expect_bf16(std::span<const float>(actual), expected, what);
}

// The largest difference relative to the tensor's scale: bf16 must differ from fp32 by more
// than fp32's rounding, or the test would pass with the policy ignored.
double relative_gap(std::span<const float> a, std::span<const float> b) {
  double gap = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    gap = std::max(gap, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return gap / scale;
}

// Sums of products of the bf16-rounded operands, in double, each with the sum of its terms'
// magnitudes: what a layer under bf16 must compute, up to one fp32 rounding per term added
// ((terms + 2) * 2^-24 of the magnitudes). An operand left in fp32 moves a sum by up to 2^-9 of
// its magnitudes, far outside that: these checks fail where a product skips the policy, which
// expect_bf16's bound against PyTorch (two bf16 roundings) cannot see.
struct Sums {
  std::vector<double> value, magnitude;
  explicit Sums(std::size_t n) : value(n), magnitude(n) {}
  void add(std::size_t i, double a, double b) {
    value[i] += a * b;
    magnitude[i] += std::abs(a * b);
  }
};
double bf(double v) { return ops::round_to_bf16(static_cast<float>(v)); }

void expect_sums(std::span<const float> actual, const Sums& s, long terms, const std::string& what) {
  REQUIRE_MESSAGE(actual.size() == s.value.size(), what << ": size " << actual.size() << " vs " << s.value.size());
  std::size_t worst = 0;
  double worst_ratio = 0.0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double allowed = static_cast<double>(terms + 2) * 0x1p-24 * s.magnitude[i] + 1e-30;
    const double ratio = std::abs(static_cast<double>(actual[i]) - s.value[i]) / allowed;
    if (!(ratio <= worst_ratio)) worst_ratio = ratio, worst = i;
  }
  CHECK_MESSAGE(worst_ratio <= 1.0, what << ": element " << worst << " is " << actual[worst]
                                         << ", the sum of the rounded operands' products " << s.value[worst] << " (error "
                                         << worst_ratio << " times the bound of " << terms << " fp32 additions)");
}

// A convolution's forward and gradients from the rounded operands (x, weight and dy rounded,
// as the policy has them; the bias and the bias gradient's dy in fp32), PyTorch's layouts.
struct ConvSums {
  Sums y, dx, dw, db;
  long y_terms, dx_terms, dw_terms;
};
ConvSums conv_sums(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b,
                   const std::vector<double>& dy, int n, int cin, int cout, int k, int stride, int pad, int h) {
  const int oh = (h + 2 * pad - k) / stride + 1;
  ConvSums r{Sums(dy.size()), Sums(x.size()), Sums(w.size()), Sums(b.size()), long{cin} * k * k + 1,
             long{cout} * k * k, long{n} * oh * oh};
  for (int i = 0; i < n; ++i)
    for (int o = 0; o < cout; ++o)
      for (int oy = 0; oy < oh; ++oy)
        for (int ox = 0; ox < oh; ++ox) {
          const std::size_t yi = ((static_cast<std::size_t>(i) * cout + o) * oh + oy) * oh + ox;
          r.y.add(yi, b[o], 1.0);
          r.db.add(o, dy[yi], 1.0);
          for (int c = 0; c < cin; ++c)
            for (int ky = 0; ky < k; ++ky)
              for (int kx = 0; kx < k; ++kx) {
                const int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                if (iy < 0 || iy >= h || ix < 0 || ix >= h) continue;
                const std::size_t xi = ((static_cast<std::size_t>(i) * cin + c) * h + iy) * h + ix;
                const std::size_t wi = ((static_cast<std::size_t>(o) * cin + c) * k + ky) * k + kx;
                r.y.add(yi, bf(x[xi]), bf(w[wi]));
                r.dx.add(xi, bf(dy[yi]), bf(w[wi]));
                r.dw.add(wi, bf(dy[yi]), bf(x[xi]));
              }
        }
  return r;
}

// `bf16_products`: whether the layer multiplies in bf16 under the policy (false for the Winograd
// layers that stay fp32 off AMX, whose output and gradients must then be fp32's bit for bit).
template <int Cin, int Cout, int K, int S, int P, int H>
void conv_bf16(const char* name, bool bf16_products = true) {
  using In = Shape<Cin, H, H>;
  using Net = Network<In, Sequential<Conv2d<Cin, Cout, K, S, P>>>;
  using Out = typename Net::out_shape;
  Golden g(name);
  Net net;
  auto& conv = net.root().template get<0>();
  set_affine(conv, g);
  const auto x = batch_from<In>(g, "x");
  const auto dy = batch_from<Out>(g, "dy");
  const std::vector<float> y32 = net.forward(x).to_nchw();
  Batch<In> dx;
  net.zero_grad();
  net.backward(x, dy, dx);
  const auto dx32 = bit_patterns(dx.to_nchw()), dw32 = bit_patterns(conv.weight.gradient()),
             db32 = bit_patterns(conv.bias.gradient());
  std::vector<float> y16;
  {
    Autocast bf16(Precision::bf16);
    const std::vector<float>& y = y16 = net.forward(x).to_nchw();
    expect_bf16(y, g["y"].values, std::string(name) + " y");
    if (bf16_products)
      CHECK_MESSAGE(relative_gap(y, y32) > 1e-4, name << ": bf16 output equals fp32's: the policy was not applied");
    else
      CHECK_MESSAGE(bit_patterns(y) == bit_patterns(y32), name << ": a Winograd layer must stay fp32 off AMX");
    net.zero_grad();
    net.backward(x, dy, dx);
  }
  expect_bf16(dx.to_nchw(), g["dx"].values, std::string(name) + " dx");
  expect_bf16(conv.weight.gradient(), g["dweight"].values, std::string(name) + " dweight");
  expect_bf16(conv.bias.gradient(), g["dbias"].values, std::string(name) + " dbias");
  if (!bf16_products) {
    CHECK_MESSAGE(bit_patterns(dx.to_nchw()) == dx32, name << ": dx of a layer that stays fp32 must be fp32's");
    CHECK_MESSAGE(bit_patterns(conv.weight.gradient()) == dw32, name << ": dweight of a layer that stays fp32 must be fp32's");
    CHECK_MESSAGE(bit_patterns(conv.bias.gradient()) == db32, name << ": dbias of a layer that stays fp32 must be fp32's");
  } else {
    const ConvSums r = conv_sums(g["x"].values, g["weight"].values, g["bias"].values, g["dy"].values,
                                 static_cast<int>(g["x"].shape[0]), Cin, Cout, K, S, P, H);
    expect_sums(y16, r.y, r.y_terms, std::string(name) + " y");
    expect_sums(dx.to_nchw(), r.dx, r.dx_terms, std::string(name) + " dx");
    expect_sums(conv.weight.gradient(), r.dw, r.dw_terms, std::string(name) + " dweight");
    expect_sums(conv.bias.gradient(), r.db, r.dw_terms, std::string(name) + " dbias");
  }
  // The scope restored fp32: the same forward again, bit for bit.
  CHECK(bit_patterns(net.forward(x).to_nchw()) == bit_patterns(y32));
}

}  // namespace

TEST_CASE("to_bf16_bits rounds to nearest even, as torch's .to(torch.bfloat16)") {
  CHECK(ops::to_bf16_bits(1.0f) == 0x3f80);
  CHECK(ops::to_bf16_bits(from_bits(0x3f808000u)) == 0x3f80);  // a tie: down to the even neighbour
  CHECK(ops::to_bf16_bits(from_bits(0x3f818000u)) == 0x3f82);  // a tie: up to the even neighbour
  CHECK(ops::to_bf16_bits(from_bits(0x3f808001u)) == 0x3f81);  // above the tie
  CHECK(ops::to_bf16_bits(-2.5f) == 0xc020);
  CHECK(ops::to_bf16_bits(from_bits(0x7f7fffffu)) == 0x7f80);  // FLT_MAX rounds to infinity
  CHECK(ops::to_bf16_bits(from_bits(0x7f800000u)) == 0x7f80);
  CHECK(ops::to_bf16_bits(from_bits(0x7f800001u)) == 0x7fc0);  // a NaN stays a NaN
  CHECK(ops::to_bf16_bits(from_bits(0x00000001u)) == 0x0000);  // the smallest subnormal
  CHECK(ops::round_to_bf16(3.14159265f) == 3.140625f);
}

TEST_CASE("Autocast and the precision names") {
  CHECK(parse_precision("bf16") == Precision::bf16);
  CHECK(parse_precision("fp32") == Precision::fp32);
  CHECK_FALSE(parse_precision("fp16").has_value());
  CHECK(matmul_precision() == Precision::fp32);
  {
    Autocast fp32(Precision::fp32);
    CHECK(matmul_precision() == Precision::fp32);
  }
  {
    Autocast outer(Precision::bf16);
    CHECK(matmul_precision() == Precision::bf16);
    {
      Autocast inner(Precision::fp32);
      CHECK(matmul_precision() == Precision::fp32);
    }
    CHECK(matmul_precision() == Precision::bf16);
  }
  CHECK(matmul_precision() == Precision::fp32);
}

TEST_CASE("The bf16 kernel: AMX, else AVX512_BF16, else portable, unless CTNN_BF16_KERNEL says otherwise") {
  if (!bf16_runs_here()) return;
  const ops::Bf16Support s = ops::bf16_support();
  MESSAGE(ops::bf16_kernel_summary());
  // (AMX implies AVX512_BF16: bf16_support reports AMX only with it.)
  const ops::Bf16Kernel expected = requested_kernel() == "portable" || !s.avx512_bf16      ? ops::Bf16Kernel::portable
                                   : requested_kernel() == "avx512_bf16" || !s.amx_bf16 ? ops::Bf16Kernel::avx512_bf16
                                                                                         : ops::Bf16Kernel::amx;
  CHECK(ops::bf16_kernel() == expected);
  CHECK(std::string(ops::bf16_kernel_summary()).find(ops::bf16_kernel_name(expected)) != std::string::npos);
  // A kernel the CPU lacks is refused with the reason, never run; the portable one runs anywhere.
  if (!s.amx_bf16) CHECK_THROWS_WITH_AS(ops::set_bf16_kernel(ops::Bf16Kernel::amx), doctest::Contains("AMX"), std::runtime_error);
  if (!s.avx512_bf16)
    CHECK_THROWS_WITH_AS(ops::set_bf16_kernel(ops::Bf16Kernel::avx512_bf16), doctest::Contains("AVX512_BF16"), std::runtime_error);
  CHECK(ops::bf16_kernel_unavailable(ops::Bf16Kernel::portable).empty());
  CHECK(ops::bf16_kernel() == expected);
}

TEST_CASE("choose_bf16_kernel: the best kernel the CPU runs, CTNN_BF16_KERNEL followed where it can be, else ignored aloud") {
  // Runs on every CPU: the choice is a function of the support it is given.
  using K = ops::Bf16Kernel;
  const ops::Bf16Support none{}, avx{true, false, ""}, amx{true, true, ""}, amx_denied{true, false, "the kernel refused"};
  struct Case {
    ops::Bf16Support s;
    std::string_view forced;
    K kernel;
    std::string_view note;  // a part of the note; empty: no note
  };
  for (const Case& c : {Case{none, "", K::portable, ""}, Case{avx, "", K::avx512_bf16, ""}, Case{amx, "", K::amx, ""},
                        Case{amx_denied, "", K::avx512_bf16, ""}, Case{amx, "portable", K::portable, ""},
                        Case{amx, "avx512_bf16", K::avx512_bf16, ""}, Case{amx, "amx", K::amx, ""},
                        Case{none, "portable", K::portable, ""},
                        Case{none, "avx512_bf16", K::portable, "'avx512_bf16' ignored: the AVX512_BF16 kernel cannot run"},
                        Case{avx, "amx", K::avx512_bf16, "'amx' ignored: the AMX bf16 kernel cannot run here: the CPU has no"},
                        Case{amx_denied, "amx", K::avx512_bf16, "cannot run here: the kernel refused"},
                        Case{amx, "AMX", K::amx, "CTNN_BF16_KERNEL='AMX' ignored (amx, avx512_bf16 or portable)"},
                        Case{none, "fast", K::portable, "'fast' ignored (amx"}}) {
    const std::string forced(c.forced);
    CAPTURE(forced);
    const ops::Bf16Choice got = ops::choose_bf16_kernel(c.s, c.forced);
    CHECK(got.kernel == c.kernel);
    if (c.note.empty()) CHECK(got.note.empty());
    else CHECK(got.note.find(c.note) != std::string::npos);
  }
  // What this process chose is in the line programs print.
  const std::string note = ops::choose_bf16_kernel(ops::bf16_support(), requested_kernel()).note;
  CHECK(ops::bf16_kernel_summary().find(note) != std::string::npos);
}

TEST_CASE("bf16 products: every transposition, k-blocks and panel edges, against double sums of the rounded operands") {
  if (!bf16_runs_here()) return;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  struct Size {
    Eigen::Index m, k, n;
  };
  // Full and partial blocks of both kernels: AVX512_BF16's 32-row and 12-column panels, 384-deep
  // k-blocks and 192-row A blocks; AMX's 32 x 32 tiles, 32-value chunks and 256-deep k-blocks,
  // 256-row and 512-column blocks.
  for (const Size s : {Size{1, 1, 1}, Size{37, 7, 13}, Size{70, 385, 25}, Size{225, 800, 12}, Size{32, 2, 24},
                       Size{5, 1000, 3}, Size{64, 64, 32}, Size{300, 290, 530}}) {
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (int acc = 0; acc < 2; ++acc) {
          // Leading dimensions longer than the columns, as views into larger buffers have.
          const Eigen::Index lda = (ta ? s.k : s.m) + 3, ldb = (tb ? s.n : s.k) + 5, ldc = s.m + 2;
          std::vector<float> av(lda * (ta ? s.m : s.k)), bv(ldb * (tb ? s.k : s.n)), c(ldc * s.n);
          for (auto& v : av) v = u(rng);
          for (auto& v : bv) v = u(rng);
          for (auto& v : c) v = u(rng);
          const std::vector<float> c0 = c;
          const ops::MatRef a = ta ? ops::MatRef{av.data(), s.k, s.m, lda, true} : ops::MatRef{av.data(), s.m, s.k, lda};
          const ops::MatRef b = tb ? ops::MatRef{bv.data(), s.n, s.k, ldb, true} : ops::MatRef{bv.data(), s.k, s.n, ldb};
          std::vector<float> packed = c;
          ops::gemm_bf16_serial(a, b, c.data(), ldc, acc == 1);
          // B packed once up front (a layer's weights for every chunk): the same bits.
          ops::gemm_bf16_serial(a, ops::pack_bf16_b(b), packed.data(), ldc, acc == 1);
          CHECK_MESSAGE(packed == c, "B packed up front: m " << s.m << " k " << s.k << " n " << s.n);
          int bad = 0;
          for (Eigen::Index i = 0; i < s.m; ++i)
            for (Eigen::Index j = 0; j < s.n; ++j) {
              double sum = acc ? c0[i + j * ldc] : 0.0, mag = std::abs(sum);
              for (Eigen::Index k = 0; k < s.k; ++k) {
                const double p = double(ops::round_to_bf16(a.at(i, k))) * double(ops::round_to_bf16(b.at(k, j)));
                sum += p;
                mag += std::abs(p);
              }
              // The products of bf16 values are exact in fp32; each of the at most k + 1
              // fp32 additions rounds by 2^-24 of a partial sum no larger than `mag`.
              if (!(std::abs(c[i + j * ldc] - sum) <= double(s.k + 2) * 0x1p-24 * mag)) ++bad;
            }
          for (Eigen::Index j = 0; j < s.n; ++j)  // the padding between columns is not written
            for (Eigen::Index i = s.m; i < ldc; ++i) bad += c[i + j * ldc] != c0[i + j * ldc];
          CHECK_MESSAGE(bad == 0, bad << " elements off for m " << s.m << " k " << s.k << " n " << s.n << " ta " << ta
                                      << " tb " << tb << " accumulate " << acc);
        }
  }
}

TEST_CASE("Under Autocast, ops::gemm runs the bf16 kernel, with the same bits at any thread count") {
  if (!bf16_runs_here()) return;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  // Large enough for ops::gemm to cut them into blocks (how, it decides from the shape and the
  // thread count), and cut by rows (the whole B packed once) and by columns (the whole A packed
  // once) into 3 and 8 blocks whatever it decides; plain and transposed operands.
  struct Case {
    Eigen::Index m, k, n;
    bool ta, tb;
  };
  for (const Case cs : {Case{3000, 300, 700, false, false}, Case{300, 500, 3001, true, true}}) {
    const Eigen::Index m = cs.m, k = cs.k, n = cs.n;
    std::vector<float> av(m * k), bv(k * n), serial(m * n), fp32(m * n), one(m * n), two(m * n);
    for (auto& v : av) v = u(rng);
    for (auto& v : bv) v = u(rng);
    const ops::MatRef a = cs.ta ? ops::MatRef{av.data(), k, m, k, true} : ops::MatRef{av.data(), m, k, m};
    const ops::MatRef b = cs.tb ? ops::MatRef{bv.data(), n, k, n, true} : ops::MatRef{bv.data(), k, n, k};
    ops::gemm(a, b, {fp32.data(), m, n, m});
    ops::gemm_bf16_serial(a, b, serial.data(), m, false);
    Autocast bf16(Precision::bf16);
    const int threads = num_threads();
    set_num_threads(1);
    ops::gemm(a, b, {one.data(), m, n, m});
    set_num_threads(2);
    ops::gemm(a, b, {two.data(), m, n, m});
    set_num_threads(threads);
    CHECK(one == serial);
    CHECK(two == serial);
    CHECK(relative_gap(one, fp32) > 1e-4);
    set_num_threads(2);
    for (bool rows : {true, false})
      for (Eigen::Index count : {3, 8}) {
        std::vector<float> cut(m * n);
        ops::gemm_bf16_blocks(a, b, cut.data(), m, false, rows, count);
        CHECK_MESSAGE(cut == serial, (rows ? "rows" : "columns") << " in " << count << " blocks");
      }
    set_num_threads(threads);
    // B packed once (a convolution's weights, shared by its chunks' products), cut into blocks
    // by rows, or by columns on the portable kernel when C is wider: the same bits again.
    const ops::Bf16PackedB packed = ops::pack_bf16_b(b);
    for (int t : {1, 2}) {
      set_num_threads(t);
      std::vector<float> blocks(m * n);
      ops::gemm_bf16_blocks(a, packed, blocks.data(), m, false);
      CHECK_MESSAGE(blocks == serial, t << " threads, packed B");
    }
    set_num_threads(threads);
  }
}

TEST_CASE("On AMX, a convolution's patches are packed from its input with im2col's bits, as rows and as columns") {
  if (!bf16_runs_here()) return;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  // ConvGeometry (in_channels, height, width, kernel, stride, padding, out_height, out_width,
  // batch), then the rows [row0, row0 + rows) of the batch's patch matrix and the output
  // channels. Planes 32 to 2 wide, and 7 and 20 (output rows across a panel's halves); a patch
  // of 27 (an odd k), 360 and 576 (two and three k-blocks); 2048 rows (eight row blocks), 48 and
  // 28 (panels cut short), rows starting inside an image and inside an output row; 530 outputs
  // (two line blocks); 5x5, unpadded and 1x1 kernels. Patches of 27 with 64 and 70 outputs: the
  // weight gradient's P^T is one panel, its columns shared out (the last block 6 wide).
  struct Case {
    ops::ConvGeometry g;
    Eigen::Index row0, rows;
    int out;
  };
  const Case cases[] = {
      {{3, 32, 32, 3, 1, 1, 32, 32, 3}, 1024, 2048, 64}, {{40, 16, 16, 3, 1, 1, 16, 16, 2}, 0, 512, 530},
      {{30, 8, 8, 3, 1, 1, 8, 8, 5}, 48, 192, 33},       {{64, 4, 4, 3, 1, 1, 4, 4, 3}, 0, 48, 70},
      {{100, 2, 2, 3, 1, 1, 2, 2, 7}, 0, 28, 20},        {{7, 16, 16, 5, 1, 2, 16, 16, 2}, 272, 100, 16},
      {{9, 18, 18, 3, 1, 0, 16, 16, 2}, 16, 400, 40},    {{5, 4, 4, 1, 1, 0, 4, 4, 4}, 21, 36, 9},
      {{64, 7, 7, 3, 1, 1, 7, 7, 3}, 5, 120, 24},        {{8, 20, 20, 3, 1, 1, 20, 20, 2}, 13, 700, 8},
      {{3, 8, 8, 3, 1, 1, 8, 8, 2}, 5, 100, 70},
  };
  for (const Case& cs : cases) {
    const ops::ConvGeometry& g = cs.g;
    CAPTURE(g.in_channels);
    CAPTURE(g.out_width);
    CAPTURE(cs.row0);
    const bool amx = ops::bf16_kernel() == ops::Bf16Kernel::amx;
    REQUIRE(ops::bf16_fuses_im2col(g) == amx);
    if (!amx) continue;
    std::vector<float> x(static_cast<std::size_t>(g.in_channels) * g.in_channel_stride()), w(g.patch() * cs.out);
    for (auto& v : x) v = u(rng);
    for (auto& v : w) v = u(rng);
    const Eigen::Index all = static_cast<Eigen::Index>(g.batch) * g.out_plane(), ldc = cs.rows + 3;
    std::vector<float> col(all * g.patch()), want(ldc * cs.out, 7.0f), got(ldc * cs.out, 7.0f);
    const ops::Bf16PackedB packed = ops::pack_bf16_b({w.data(), g.patch(), cs.out, g.patch()});
    ops::im2col(x.data(), g, 0, g.batch, col.data());
    ops::gemm_bf16_serial({col.data() + cs.row0, cs.rows, g.patch(), all}, packed, want.data(), ldc, false);
    ops::gemm_bf16_patches(x.data(), g, cs.row0, cs.rows, packed, got.data(), ldc, false);
    CHECK(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) == 0);
    // The patch matrix's columns (a weight gradient: P^T * B), added to what C holds.
    std::vector<float> b(cs.rows * cs.out);
    for (auto& v : b) v = u(rng);
    const Eigen::Index ldw = g.patch() + 5;
    std::vector<float> want_t(ldw * cs.out), got_t;
    for (auto& v : want_t) v = u(rng);
    got_t = want_t;
    ops::gemm_bf16_serial(ops::MatRef{col.data() + cs.row0, cs.rows, g.patch(), all}.t(),
                          ops::MatRef{b.data(), cs.rows, cs.out, cs.rows}, want_t.data(), ldw, true);
    ops::gemm_bf16_patches_t(x.data(), g, cs.row0, {b.data(), cs.rows, cs.out, cs.rows}, got_t.data(), ldw, true);
    CHECK(std::memcmp(want_t.data(), got_t.data(), want_t.size() * sizeof(float)) == 0);
  }
  // Strided convolutions are not fused.
  CHECK_FALSE(ops::bf16_fuses_im2col({3, 32, 32, 7, 2, 3, 16, 16, 1}));
}

TEST_CASE("On AMX and AVX512_BF16, a matrix read from a table (a whole-plane convolution's weight) packs with the stored matrix's bits") {
  if (!bf16_runs_here()) return;
  if (ops::bf16_kernel() == ops::Bf16Kernel::portable) {
    CHECK_THROWS_AS(ops::gemm_bf16_gathered({}, {}, nullptr, 0, false), std::logic_error);
    return;
  }
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  // Element (i, k) = src[(i / rg) * row_step + (k / kg) * k_step + taps[(i % rg) * tap_row + (k % kg) * tap_k]].
  // Groups of 4 by 4 (2x2 planes, packed without gathers) with a k-block edge inside (k 600) and
  // rows past a panel (136, 4 past 132) and within one (20); 4 by 4 taps reaching past 16 floats;
  // groups of 2 by 2 (1x2 planes), 1 by 1 (1x1 planes; k 301 too, an odd k) and 3 by 5 (k 295).
  struct Case {
    int rg, kg;
    long row_step, k_step;
    int tap_row, tap_k, tap_limit;
    Eigen::Index rows, cols, n;
  };
  const Case cases[] = {{4, 4, 9 * 150, 9, 4, 1, 9, 136, 600, 70},  {4, 4, 9, 9 * 40, 1, 4, 9, 160, 20 * 4, 33},
                        {4, 4, 9, 9 * 5, 1, 4, 9, 20, 4 * 30, 5},     {4, 4, 25, 25 * 7, 4, 1, 25, 28, 4 * 70, 9},
                        {2, 2, 9, 9 * 40, 1, 2, 9, 2 * 33, 2 * 40, 7}, {1, 1, 9 * 300, 9, 0, 0, 9, 70, 300, 12},
                        {3, 5, 7 * 90, 7, 5, 1, 7, 3 * 11, 5 * 59, 4},  {1, 1, 9 * 301, 9, 0, 0, 9, 70, 301, 12}};
  for (const Case& cs : cases) {
    CAPTURE(cs.rg);
    CAPTURE(cs.kg);
    CAPTURE(cs.rows);
    std::vector<int> taps(static_cast<std::size_t>(cs.rg) * cs.kg);
    for (int& t : taps) t = static_cast<int>(rng() % cs.tap_limit);
    const std::size_t reach = static_cast<std::size_t>((cs.rows - 1) / cs.rg * cs.row_step + (cs.cols - 1) / cs.kg * cs.k_step + cs.tap_limit);
    std::vector<float> src(reach), b(cs.cols * cs.n);
    for (auto& v : src) v = u(rng);
    for (auto& v : b) v = u(rng);
    const ops::GatheredMatrix a{src.data(), cs.rg, cs.kg, cs.row_step, cs.k_step, taps.data(), cs.tap_row, cs.tap_k, cs.rows, cs.cols};
    std::vector<float> dense(cs.rows * cs.cols);
    for (Eigen::Index i = 0; i < cs.rows; ++i)
      for (Eigen::Index k = 0; k < cs.cols; ++k)
        dense[i + k * cs.rows] = src[(i / cs.rg) * cs.row_step + (k / cs.kg) * cs.k_step +
                                     taps[(i % cs.rg) * cs.tap_row + (k % cs.kg) * cs.tap_k]];
    const Eigen::Index ldc = cs.rows + 3;
    std::vector<float> want(ldc * cs.n), got;
    for (auto& v : want) v = u(rng);
    got = want;
    const ops::MatRef bm{b.data(), cs.cols, cs.n, cs.cols};
    ops::gemm_bf16_serial({dense.data(), cs.rows, cs.cols, cs.rows}, bm, want.data(), ldc, true);
    ops::gemm_bf16_gathered(a, bm, got.data(), ldc, true);
    CHECK(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("On AMX, a product made and handed over a block of columns at a time has gemm_bf16_serial's bits") {
  if (!bf16_runs_here()) return;
  if (ops::bf16_kernel() != ops::Bf16Kernel::amx) {
    CHECK_THROWS_AS(ops::gemm_bf16_column_blocks({}, {}, 1, [](auto...) {}), std::logic_error);
    return;
  }
  std::mt19937 rng(19);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  // m x k times k x n (B transposed, as dWd = X dY^T), blocks of `cols`: a last block cut short,
  // a k past one k-block, k = 0 (zeros).
  struct Case {
    Eigen::Index m, k, n, cols;
  };
  for (const Case cs : {Case{300, 100, 260, 128}, Case{70, 290, 64, 32}, Case{40, 0, 20, 8}}) {
    CAPTURE(cs.k);
    std::vector<float> a(cs.m * cs.k), b(cs.n * cs.k), want(cs.m * cs.n), got(cs.m * cs.n, 7.0f);
    for (auto& v : a) v = u(rng);
    for (auto& v : b) v = u(rng);
    const ops::MatRef am{a.data(), cs.m, cs.k, cs.m}, bm = ops::MatRef{b.data(), cs.n, cs.k, cs.n}.t();
    ops::gemm_bf16_serial(am, bm, want.data(), cs.m, false);
    int calls = 0;
    ops::gemm_bf16_column_blocks(am, bm, cs.cols, [&](Eigen::Index j0, Eigen::Index count, const float* c, Eigen::Index ld) {
#pragma omp critical
      {
        ++calls;
        CHECK(count == std::min(cs.cols, cs.n - j0));
        for (Eigen::Index j = 0; j < count; ++j) std::copy_n(c + j * ld, cs.m, got.data() + (j0 + j) * cs.m);
      }
    });
    CHECK(calls == (cs.n + cs.cols - 1) / cs.cols);
    CHECK(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("On AMX, a stride-1 convolution's backward without patch matrices (dx a transposed convolution) against double sums") {
  if (!bf16_runs_here()) return;
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  // ConvShape (in_channels, height, width, out_channels, kernel, stride, padding) and the batch:
  // VGG16's and ResNet's 3x3 planes (32 wide to 2, 7), 5x5 and unpadded kernels (dy's
  // convolution padded by 2 and 4), an odd inner size (3 x 9), planes 9 x 11. dx's convolution is
  // the direct one (ops/amx_conv.hpp) from 32 output channels on, packed patches of dy below; dw
  // is summed on tiles from x and dy from 32 input channels on, for output planes of 4x4 and up
  // with these few channels (in two chunks of positions for the batch of 8 32x32 planes), packed
  // patches otherwise; 2x2, 1x2 and 1x1 planes are whole-plane products.
  struct Case {
    ops::ConvShape s;
    int n;
  };
  const Case cases[] = {{{16, 32, 32, 8, 3, 1, 1}, 2},  {{24, 8, 8, 40, 3, 1, 1}, 5},  {{36, 7, 7, 64, 3, 1, 1}, 3},
                        {{70, 2, 2, 33, 3, 1, 1}, 7},   {{34, 12, 12, 10, 5, 1, 2}, 2}, {{32, 9, 9, 3, 3, 1, 0}, 4},
                        {{32, 20, 20, 12, 5, 1, 0}, 2}, {{40, 32, 32, 20, 3, 1, 1}, 8}, {{33, 9, 11, 17, 3, 1, 1}, 3},
                        {{36, 1, 2, 20, 3, 1, 1}, 3},   {{40, 1, 1, 24, 3, 1, 1}, 3}};
  const Autocast bf16(Precision::bf16);
  for (const Case& cs : cases) {
    const ops::ConvShape& s = cs.s;
    CAPTURE(s.in_channels);
    CAPTURE(s.width);
    CAPTURE(s.kernel);
    CAPTURE(s.padding);
    const bool amx = ops::bf16_kernel() == ops::Bf16Kernel::amx;
    REQUIRE(ops::detail::bf16_backward_fused(s, cs.n) == amx);
    if (!amx) continue;
    CHECK(ops::bf16_direct_weight_grad(s.geometry(cs.n), s.out_channels) ==
          (s.in_channels >= 32 && s.out_height() >= 4 && s.out_width() >= 4));
    const int k = s.kernel, ho = s.out_height(), wo = s.out_width(), n = cs.n;
    const std::size_t in_plane = static_cast<std::size_t>(s.height) * s.width, out_plane = ho * wo;
    std::vector<float> x(s.in_channels * n * in_plane), dy(s.out_channels * n * out_plane),
        w(static_cast<std::size_t>(s.out_channels) * s.patch()), dw(w.size(), 0.0f), db(s.out_channels, 0.0f),
        dx(x.size(), 7.0f);
    for (auto* v : {&x, &dy, &w})
      for (auto& e : *v) e = u(rng);
    ops::conv2d_backward(s, n, x.data(), dy.data(), w.data(), dw.data(), db.data(), dx.data());
    // dx[c][i][y][x] = sum over o, ky, kx of dy[o][i][y+p-ky][x+p-kx] * w[o][c][ky][kx], the
    // operands rounded to bf16, summed in double. fp32 sums of m terms are within m * 2^-24 of
    // the sum of the terms' magnitudes (a bound that cannot fail by chance; a misplaced term
    // misses by a whole term).
    std::vector<double> want(dx.size()), bound(dx.size());
    for (int c = 0; c < s.in_channels; ++c)
      for (int i = 0; i < n; ++i)
        for (int y = 0; y < s.height; ++y)
          for (int xx = 0; xx < s.width; ++xx) {
            double sum = 0.0, mag = 0.0;
            for (int o = 0; o < s.out_channels; ++o)
              for (int ky = 0; ky < k; ++ky)
                for (int kx = 0; kx < k; ++kx) {
                  const int oy = y + s.padding - ky, ox = xx + s.padding - kx;
                  if (oy < 0 || oy >= ho || ox < 0 || ox >= wo) continue;
                  const double t = double(ops::round_to_bf16(dy[(o * n + i) * out_plane + oy * wo + ox])) *
                                   double(ops::round_to_bf16(w[((o * s.in_channels + c) * k + ky) * k + kx]));
                  sum += t;
                  mag += std::abs(t);
                }
            const std::size_t at = (c * n + i) * in_plane + y * s.width + xx;
            want[at] = sum;
            bound[at] = mag * s.out_channels * k * k * 0x1p-24;
          }
    std::size_t outside = 0;  // counts NaNs too
    for (std::size_t e = 0; e < dx.size(); ++e) outside += !(std::abs(double(dx[e]) - want[e]) <= bound[e]);
    CHECK(outside == 0);
    // dw[o][c][ky][kx] = sum over i, oy, ox of dy[o][i][oy][ox] * x[c][i][oy-p+ky][ox-p+kx], the
    // same way (its patch matrix's columns packed from x).
    outside = 0;
    for (int o = 0; o < s.out_channels; ++o)
      for (int c = 0; c < s.in_channels; ++c)
        for (int ky = 0; ky < k; ++ky)
          for (int kx = 0; kx < k; ++kx) {
            double sum = 0.0, mag = 0.0;
            for (int i = 0; i < n; ++i)
              for (int oy = 0; oy < ho; ++oy)
                for (int ox = 0; ox < wo; ++ox) {
                  const int iy = oy - s.padding + ky, ix = ox - s.padding + kx;
                  if (iy < 0 || iy >= s.height || ix < 0 || ix >= s.width) continue;
                  const double t = double(ops::round_to_bf16(dy[(o * n + i) * out_plane + oy * wo + ox])) *
                                   double(ops::round_to_bf16(x[(c * n + i) * in_plane + iy * s.width + ix]));
                  sum += t;
                  mag += std::abs(t);
                }
            const double got = dw[((o * s.in_channels + c) * k + ky) * k + kx];
            outside += !(std::abs(got - sum) <= mag * n * out_plane * 0x1p-24);
          }
    CHECK(outside == 0);
  }
  // 512 channels on 4x4 planes: their 9 MiB of sums would stream from L3 for every chunk.
  if (ops::bf16_kernel() == ops::Bf16Kernel::amx) CHECK_FALSE(ops::bf16_direct_weight_grad({512, 4, 4, 3, 1, 1, 4, 4, 100}, 512));
}

TEST_CASE("On AMX, the direct convolution (tiles loaded from padded channel pairs) against double sums") {
  if (!bf16_runs_here()) return;
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  // ConvGeometry (in_channels, height, width, kernel, stride, padding, out_height, out_width,
  // batch), output channels, whether the weight is a transposed convolution's: input channels
  // that fill no pair block (33, 48: zero rows), output groups cut short (40, 20), planes 32 to 2
  // wide (blocks across images; on 2x2 the padded batch ends within a block), 5x5 and unpadded
  // kernels.
  struct Case {
    ops::ConvGeometry g;
    int cout;
    bool flipped;
  };
  const Case cases[] = {{{64, 32, 32, 3, 1, 1, 32, 32, 2}, 40, false}, {{32, 16, 16, 3, 1, 1, 16, 16, 3}, 32, true},
                        {{48, 8, 8, 3, 1, 1, 8, 8, 3}, 20, false},    {{33, 7, 7, 3, 1, 1, 7, 7, 2}, 64, true},
                        {{64, 2, 2, 3, 1, 1, 2, 2, 5}, 16, false},    {{32, 12, 12, 5, 1, 2, 12, 12, 2}, 8, true},
                        {{40, 10, 10, 3, 1, 0, 8, 8, 2}, 33, false}};
  for (const Case& cs : cases) {
    const ops::ConvGeometry& g = cs.g;
    CAPTURE(g.in_channels);
    CAPTURE(g.width);
    CAPTURE(cs.cout);
    CAPTURE(cs.flipped);
    const bool amx = ops::bf16_kernel() == ops::Bf16Kernel::amx;
    REQUIRE(ops::bf16_direct_conv(g) == amx);
    if (!amx) continue;
    const int k = g.kernel, kk = k * k, n = g.batch, cin = g.in_channels;
    const std::size_t in_plane = static_cast<std::size_t>(g.height) * g.width, out_plane = g.out_plane();
    std::vector<float> x(cin * n * in_plane), w(static_cast<std::size_t>(cs.cout) * cin * kk), bias(cs.cout),
        y(cs.cout * n * out_plane + 1, 7.0f);
    for (auto* v : {&x, &w, &bias})
      for (auto& e : *v) e = u(rng);
    ops::conv_bf16_direct(x.data(), g, w.data(), cs.flipped, cs.cout, cs.flipped ? nullptr : bias.data(), y.data());
    // The weight multiplied: [cout][cin][k][k], or the flipped [cin][cout][k][k] one.
    auto weight = [&](int o, int c, int t) {
      return cs.flipped ? w[(static_cast<std::size_t>(c) * cs.cout + o) * kk + kk - 1 - t]
                        : w[(static_cast<std::size_t>(o) * cin + c) * kk + t];
    };
    std::size_t outside = 0;  // counts NaNs too
    for (int o = 0; o < cs.cout; ++o)
      for (int i = 0; i < n; ++i)
        for (int oy = 0; oy < g.out_height; ++oy)
          for (int ox = 0; ox < g.out_width; ++ox) {
            double sum = cs.flipped ? 0.0 : bias[o], mag = std::abs(sum);
            for (int c = 0; c < cin; ++c)
              for (int t = 0; t < kk; ++t) {
                const int iy = oy - g.padding + t / k, ix = ox - g.padding + t % k;
                if (iy < 0 || iy >= g.height || ix < 0 || ix >= g.width) continue;
                const double p = double(ops::round_to_bf16(x[(c * n + i) * in_plane + iy * g.width + ix])) *
                                 double(ops::round_to_bf16(weight(o, c, t)));
                sum += p;
                mag += std::abs(p);
              }
            const double got = y[(o * n + i) * out_plane + oy * g.out_width + ox];
            outside += !(std::abs(got - sum) <= mag * (cin * kk + 1) * 0x1p-24);
          }
    CHECK(outside == 0);
    CHECK(y.back() == 7.0f);  // nothing written past the output
  }
  CHECK_FALSE(ops::bf16_direct_conv({16, 32, 32, 3, 1, 1, 32, 32, 1}));  // too few input channels
  CHECK_FALSE(ops::bf16_direct_conv({64, 32, 32, 3, 2, 1, 16, 16, 1}));  // strided
}

TEST_CASE("Conv2d under bf16 matches PyTorch's autocast: forward, input, weight and bias gradients") {
  if (!bf16_runs_here()) return;
  static_assert(Conv2d<48, 13, 3, 1, 1>::bind<Shape<48, 5, 5>>::winograd_plan().tile == 2,
                "an F(2x2) Winograd layer in fp32");
  static_assert(Conv2d<16, 4, 3, 1, 1>::bind<Shape<16, 8, 8>>::winograd_plan().tile == 4,
                "an F(4x4) Winograd layer in fp32");
  // Winograd layers stay fp32 Winograd on the AVX512_BF16 and portable kernels; on AMX they are
  // bf16 products too.
  const bool amx = ops::bf16_kernel() == ops::Bf16Kernel::amx;
  conv_bf16<48, 13, 3, 1, 1, 5>("conv2d_bf16_k3s1p1", /*bf16_products=*/amx);
  conv_bf16<16, 4, 3, 1, 1, 8>("conv2d_bf16_k3s1p1_chunked", /*bf16_products=*/amx);
  conv_bf16<40, 20, 1, 1, 0, 4>("conv2d_bf16_k1s1p0");
  conv_bf16<24, 16, 1, 2, 0, 5>("conv2d_bf16_k1s2p0");
  conv_bf16<3, 8, 7, 2, 3, 16>("conv2d_bf16_k7s2p3");
  static_assert(ops::ConvShape{40, 2, 2, 24, 3, 1, 1}.whole_plane(), "the dense whole-plane product");
  conv_bf16<40, 24, 3, 1, 1, 2>("conv2d_bf16_k3s1p1_plane2");
}

TEST_CASE("Conv2d under bf16 cut into chunks (its weights rounded once for all) against double sums of its rounded operands") {
  if (!bf16_runs_here()) return;
  // 64 -> 64 3x3 with stride 2, 13x13 planes to 7x7 (not a Winograd layer, and not one whose
  // patches AMX packs from the input, which it does at stride 1): im2col products under bf16 on
  // every kernel, in chunks of whole images (small planes: each chunk's product cut over the
  // threads), every chunk multiplying the weights packed once per pass.
  constexpr int kN = 40, kC = 64, kH = 13, kOut = 7;
  using In = Shape<kC, kH, kH>;
  using Out = Shape<kC, kOut, kOut>;
  constexpr ops::ConvShape shape{kC, kH, kH, kC, 3, 2, 1};
  static_assert(!shape.image_parallel() && shape.out_height() == kOut);
  static_assert(Conv2d<kC, kC, 3, 2, 1>::bind<In>::winograd_plan().tile == 0);
  REQUIRE(ops::detail::conv_chunk(shape, kN) < kN);
  {
    const Autocast bf16(Precision::bf16);
    REQUIRE_FALSE(ops::bf16_fuses_im2col(shape.geometry(kN)));
  }
  Network<In, Sequential<Conv2d<kC, kC, 3, 2, 1>>> net;
  auto& conv = net.root().get<0>();
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&](std::span<float> v, float scale) {
    std::vector<double> copy;
    for (float& e : v) copy.push_back(e = scale * normal(rng));
    return copy;
  };
  const std::vector<double> w = fill(conv.weight.data(), 1.0f / 24), b = fill(conv.bias.data(), 0.5f);
  std::vector<float> xv(static_cast<std::size_t>(kN) * kC * kH * kH), dyv(static_cast<std::size_t>(kN) * kC * kOut * kOut);
  const std::vector<double> xd = fill(xv, 1.0f), dyd = fill(dyv, 1.0f);
  Batch<In> x, dx;
  Batch<Out> dy;
  x.from_nchw(xv.data(), kN);
  dy.from_nchw(dyv.data(), kN);
  const ConvSums r = conv_sums(xd, w, b, dyd, kN, kC, kC, 3, 2, 1, kH);
  for (int threads : {1, 2}) {
    const int before = num_threads();
    set_num_threads(threads);
    Autocast bf16(Precision::bf16);
    const std::vector<float> y = net.forward(x).to_nchw();
    net.zero_grad();
    net.backward(x, dy, dx);
    set_num_threads(before);
    const std::string at = std::to_string(threads) + " thread(s): ";
    expect_sums(y, r.y, r.y_terms, at + "y");
    expect_sums(dx.to_nchw(), r.dx, r.dx_terms, at + "dx");
    expect_sums(conv.weight.gradient(), r.dw, r.dw_terms, at + "dweight");
    expect_sums(conv.bias.gradient(), r.db, r.dw_terms, at + "dbias");
  }
}

TEST_CASE("Linear under bf16 matches PyTorch's autocast") {
  if (!bf16_runs_here()) return;
  using In = Features<200>;
  Golden g("linear_bf16");
  Network<In, Sequential<Linear<200, 10>>> net;
  auto& fc = net.root().get<0>();
  set_affine(fc, g);
  const auto x = batch_from<In>(g, "x");
  Autocast bf16(Precision::bf16);
  const std::vector<float> y = net.forward(x).to_nchw();
  expect_bf16(y, g["y"].values, "y");
  Batch<In> dx;
  net.zero_grad();
  net.backward(x, batch_from<Features<10>>(g, "dy"), dx);
  expect_bf16(dx.to_nchw(), g["dx"].values, "dx");
  expect_bf16(fc.weight.gradient(), g["dweight"].values, "dweight");
  expect_bf16(fc.bias.gradient(), g["dbias"].values, "dbias");
  // The same from the rounded operands, tightly (see Sums): a Linear is a 1x1 convolution on a
  // 1x1 plane, in the same layouts.
  const ConvSums r = conv_sums(g["x"].values, g["weight"].values, g["bias"].values, g["dy"].values,
                               static_cast<int>(g["x"].shape[0]), 200, 10, 1, 1, 0, 1);
  expect_sums(y, r.y, r.y_terms, "y");
  expect_sums(dx.to_nchw(), r.dx, r.dx_terms, "dx");
  expect_sums(fc.weight.gradient(), r.dw, r.dw_terms, "dweight");
  expect_sums(fc.bias.gradient(), r.db, r.dw_terms, "dbias");
}
