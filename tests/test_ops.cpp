// Kernels: the blocked GEMM against a naive product, im2col/col2im as adjoint linear maps,
// pooling planes.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <tuple>
#include <utility>

#include "isa/kernel_check.hpp"
#include "support/check.hpp"

using namespace ctnn;
using namespace ctnn::test;

namespace {

std::vector<float> random_vector(std::size_t n, std::uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(r.uniform(-1, 1));
  return v;
}

// C = op(A) op(B) computed naively in double, column-major.
std::vector<double> naive(const ops::MatRef& a, const ops::MatRef& b) {
  const auto m = a.out_rows(), k = a.out_cols(), n = b.out_cols();
  auto at = [](const ops::MatRef& x, Eigen::Index i, Eigen::Index j) {
    return x.transposed ? x.data[i * x.ld + j] : x.data[j * x.ld + i];
  };
  std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
  for (Eigen::Index j = 0; j < n; ++j)
    for (Eigen::Index i = 0; i < m; ++i)
      for (Eigen::Index p = 0; p < k; ++p) c[j * m + i] += static_cast<double>(at(a, i, p)) * at(b, p, j);
  return c;
}

}  // namespace

// The backends this build has: Eigen always, OpenBLAS with CTNN_USE_OPENBLAS.
std::vector<ops::GemmBackend> backends() {
#ifdef CTNN_USE_OPENBLAS
  return {ops::GemmBackend::eigen, ops::GemmBackend::openblas};
#else
  return {ops::GemmBackend::eigen};
#endif
}

TEST_CASE("gemm equals the naive product for every transpose combination, split or not, on every backend") {
  // Sizes chosen so that both the row split (m >= n) and the column split are exercised and
  // blocks have unequal lengths (a product is split only above 2^25 multiply-adds).
  static_assert((1010L * 150 * 300) >> 24 == 2 && (130L * 1500 * 260) >> 24 == 3);
  const auto automatic = ops::gemm_backend();
  for (auto backend : backends())
  for (auto [m, n, k] : {std::tuple{1010, 150, 300}, std::tuple{130, 1500, 260}, std::tuple{5, 3, 2}}) {
    CAPTURE(ops::backend_name(backend));
    ops::set_gemm_backend(backend);
    // The line programs print names the backend's kernels and their instruction set.
    const std::string summary = ops::gemm_backend_summary();
    CAPTURE(summary);
    CHECK(summary.find(backend == ops::GemmBackend::eigen ? "ctnn's kernel (Eigen packets, " : "OpenBLAS ('") !=
          std::string::npos);
    CHECK(summary.find(std::string(ops::isa_name(backend == ops::GemmBackend::eigen
                                                      ? ops::compiled_isa()
                                                      : ops::openblas_core_isa(ops::detail::openblas_core()))) +
                       ")") != std::string::npos);
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        const auto av = random_vector(static_cast<std::size_t>(m * k), 1);
        const auto bv = random_vector(static_cast<std::size_t>(k * n), 2);
        const ops::MatRef a = ta ? ops::MatRef{av.data(), k, m, k, true} : ops::MatRef{av.data(), m, k, m, false};
        const ops::MatRef b = tb ? ops::MatRef{bv.data(), n, k, n, true} : ops::MatRef{bv.data(), k, n, k, false};
        std::vector<float> c(static_cast<std::size_t>(m * n), 1.0f);
        ops::gemm(a, b, {c.data(), m, n, m});
        const auto expected = naive(a, b);
        expect_close(c, expected, 1e-5, 1e-5 * k, "gemm");
        ops::gemm(a, b, {c.data(), m, n, m}, /*accumulate=*/true);
        std::vector<double> twice(expected);
        for (auto& v : twice) v *= 2;
        expect_close(c, twice, 1e-5, 2e-5 * k, "gemm accumulate");
      }
  }
  ops::set_gemm_backend(automatic);
}

TEST_CASE("ctnn's packed kernel sums each element in k order, one multiply-add a term, block by block") {
  // tests/isa/kernel_check.hpp, compiled for this build's -march (tests/isa runs the same check
  // built for each x86-64 level and for aarch64).
  CHECK(ctnn_isa::kernel_mismatches() == 0);
}

TEST_CASE("ops::gemm cut into blocks gives the single-threaded kernel's bits, at any thread count") {
  // Products of tens of millions of multiply-adds, with ragged panels and k blocks, rows split
  // and columns split: where the blocks start never changes a sum. On ctnn's kernel ops::gemm
  // cuts one block per thread, so 1, 2 and 3 threads cut each product differently (3: blocks
  // of unequal length).
  namespace sg = ops::detail::sgemm;
  const auto automatic = ops::gemm_backend();
  const int threads = num_threads();
  ops::set_gemm_backend(ops::GemmBackend::eigen);
  const Eigen::Index k = sg::kKc * 4 + 5;
  // (403 x 199: rows cut at 2 and 3 threads; 611 x 401: columns, each thread's share 128 or
  // more, ops::detail::splits_rows; 197 x 611: columns, the wider extent.)
  for (const auto& mn : {std::pair<Eigen::Index, Eigen::Index>{403, 3 * sg::kNr * 11 + 1}, {611, 401}, {197, 611}})
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        const Eigen::Index m = mn.first, n = mn.second;  // not a structured binding: CAPTURE's lambda takes m
        CAPTURE(m);
        CAPTURE(ta);
        CAPTURE(tb);
        const auto av = random_vector(static_cast<std::size_t>(m * k), 7);
        const auto bv = random_vector(static_cast<std::size_t>(k * n), 8);
        const ops::MatRef a = ta ? ops::MatRef{av.data(), k, m, k, true} : ops::MatRef{av.data(), m, k, m, false};
        const ops::MatRef b = tb ? ops::MatRef{bv.data(), n, k, n, true} : ops::MatRef{bv.data(), k, n, k, false};
        std::vector<float> expected(static_cast<std::size_t>(m * n), 0.25f);
        sg::product(a, b, expected.data(), m, /*accumulate=*/true);
        for (int t = 1; t <= 3; ++t) {
          CAPTURE(t);
          REQUIRE(ops::detail::thread_block_count(std::max(m, n), static_cast<long>(m * n * k), t) == t);
          set_num_threads(t);
          std::vector<float> c(static_cast<std::size_t>(m * n), 0.25f);
          ops::gemm(a, b, {c.data(), m, n, m}, /*accumulate=*/true);
          CHECK(bit_patterns(c) == bit_patterns(expected));
        }
      }
  set_num_threads(threads);
  ops::set_gemm_backend(automatic);
}

TEST_CASE("gemm_mapped: a column's bias, folded BatchNorm and ReLU applied in the kernel's registers give the bits of the product and then the map's pass, at any thread count, on every backend") {
  // The map must be applied once, to the final sums (k in several blocks), to the right column
  // (rows split, and columns split: each block's map starts at its first column), and on ragged
  // tiles as on whole ones, of every height and width (304 rows on AVX-512: blocks of kMc = 128
  // rows, the last of 48 ending in a one-packet panel; 68 columns: the last panel 8 wide).
  namespace sg = ops::detail::sgemm;
  const auto automatic = ops::gemm_backend();
  const int threads = num_threads();
  const Eigen::Index k = sg::kKc * 2 + 5;
  const auto bias = random_vector(700, 21), scale = random_vector(700, 22), shift = random_vector(700, 23);
  const ops::ChannelMap maps[] = {{bias.data(), scale.data(), shift.data(), true},
                                  {bias.data(), nullptr, nullptr, false},
                                  {nullptr, scale.data(), shift.data(), false},
                                  {nullptr, nullptr, nullptr, true}};
  for (const auto backend : backends()) {
    ops::set_gemm_backend(backend);
    for (const auto& mn : {std::pair<Eigen::Index, Eigen::Index>{403, 3 * sg::kNr * 11 + 1},
                           {197, 611},
                           {2 * sg::kMc + sg::kMr + sg::kW, 5 * sg::kNr + 2 * sg::kNr / 3}})
      for (std::size_t mi = 0; mi < std::size(maps); ++mi) {
        const Eigen::Index m = mn.first, n = mn.second;
        CAPTURE(m);
        CAPTURE(mi);
        const auto av = random_vector(static_cast<std::size_t>(m * k), 7);
        const auto bv = random_vector(static_cast<std::size_t>(k * n), 8);
        const ops::MatRef a{av.data(), m, k, m, false}, b{bv.data(), n, k, n, true};
        std::vector<float> expected(static_cast<std::size_t>(m * n));
        ops::gemm(a, b, {expected.data(), m, n, m});
        ops::map_channels(expected.data(), maps[mi], static_cast<int>(n), static_cast<std::size_t>(m),
                          static_cast<std::size_t>(m));
        std::size_t zeros = 0;
        for (float v : expected) zeros += v == 0.0f;
        CHECK((zeros > expected.size() / 4) == maps[mi].relu);  // the ReLU has work to do
        for (int t = 1; t <= 3; ++t) {
          CAPTURE(t);
          set_num_threads(t);
          std::vector<float> c(static_cast<std::size_t>(m * n), 0.25f);
          ops::gemm_mapped(a, b, {c.data(), m, n, m}, maps[mi]);
          CHECK(bit_patterns(c) == bit_patterns(expected));
        }
      }
  }
  set_num_threads(threads);
  ops::set_gemm_backend(automatic);
}

TEST_CASE("gemm_gathered: A packed from its table gives the bits of ops::gemm on A written out, at any thread count") {
  // Whole-plane convolutions' Wd and Wd^T (groups of 4 rows by 4 k within 9 floats: packed by
  // permutes where the target has AVX2), the same tables cut short (ragged groups: value by value)
  // and a table of other group sizes; A's rows split over the threads (n small) and B's columns
  // (n large); k longer than a block (kKc) where it can be.
  namespace sg = ops::detail::sgemm;
  const auto automatic = ops::gemm_backend();
  const int threads = num_threads();
  ops::set_gemm_backend(ops::GemmBackend::eigen);
  REQUIRE(ops::gathers_fp32());
  const ops::detail::WholePlane d(ops::ConvShape{37, 2, 2, 70, 3, 1, 1});  // Wd: 148 x 280
  const auto w = random_vector(70 * 37 * 9, 31);
  const int odd_taps[15] = {0, 5, 2, 7, 1, 3, 8, 4, 6, 2, 0, 1, 5, 3, 7};
  const ops::GatheredMatrix other{w.data(), 3, 5, 40, 9, odd_taps, 5, 1, 301, 2 * sg::kKc + 7};
  auto cut = [](ops::GatheredMatrix g, Eigen::Index rows, Eigen::Index cols) {
    g.rows = rows, g.cols = cols;
    return g;
  };
  const ops::GatheredMatrix tables[] = {d.dense(w.data()), d.transposed(w.data()), cut(d.dense(w.data()), 146, 278),
                                        cut(d.transposed(w.data()), 277, 145), other};
  int lanes[16];
  CHECK(sg::groups_of_4(tables[0], lanes));
  CHECK(sg::groups_of_4(tables[1], lanes));
  CHECK_FALSE(sg::groups_of_4(other, lanes));
  for (std::size_t ti = 0; ti < std::size(tables); ++ti)
    for (const Eigen::Index n : {Eigen::Index{23}, Eigen::Index{3 * sg::kNr * 11 + 1}}) {
      const ops::GatheredMatrix& g = tables[ti];
      const Eigen::Index m = g.rows, k = g.cols;
      CAPTURE(ti);
      CAPTURE(n);
      std::vector<float> written(static_cast<std::size_t>(m * k));
      for (Eigen::Index kk = 0; kk < k; ++kk)
        for (Eigen::Index i = 0; i < m; ++i) written[static_cast<std::size_t>(i + kk * m)] = g.at(i, kk);
      const auto bv = random_vector(static_cast<std::size_t>(k * n), 32);
      const ops::MatRef b{bv.data(), k, n, k};
      std::vector<float> expected(static_cast<std::size_t>(m * n));
      ops::gemm({written.data(), m, k, m}, b, {expected.data(), m, n, m});
      for (int t = 1; t <= 3; ++t) {
        CAPTURE(t);
        set_num_threads(t);
        std::vector<float> c(static_cast<std::size_t>(m * n), 0.25f);
        ops::gemm_gathered(g, b, {c.data(), m, n, m});
        CHECK(bit_patterns(c) == bit_patterns(expected));
      }
    }
  set_num_threads(threads);
  ops::set_gemm_backend(automatic);
}

TEST_CASE("the CPU's model name is read from cpuinfo's first 'model name' line; none is an empty name, not an exception") {
  std::istringstream amd("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B45\nmodel name\t: other\n");
  CHECK(ops::cpu_model_name(amd) == "AMD EPYC 9B45");
  std::istringstream empty("model name\t: \n");  // review finding: substr(npos) threw std::out_of_range
  CHECK(ops::cpu_model_name(empty).empty());
  std::istringstream bare("model name\n"), none("processor\t: 0\n");
  CHECK(ops::cpu_model_name(bare).empty());
  CHECK(ops::cpu_model_name(none).empty());
}

TEST_CASE("the GEMM backend follows the instruction set the CPU reports, not OpenBLAS's table of models") {
  using ops::GemmBackend;
  using ops::Isa;
  auto pick = [](Isa cpu, Isa eigen, const char* core, const char* forced = "") {
    return ops::choose_gemm_backend(cpu, eigen, core, forced);
  };
  // An Emerald Rapids Xeon that Debian's OpenBLAS 0.3.21 does not know: its Prescott (SSE3)
  // kernels are not used, and the line says how to force them.
  const auto xeon = pick(Isa::avx512, Isa::avx512, "Prescott");
  CHECK(xeon.backend == GemmBackend::eigen);
  CHECK(xeon.why.find("'Prescott' kernels, SSE3") != std::string::npos);
  CHECK(xeon.why.find("CTNN_GEMM=openblas") != std::string::npos);
  // ctnn's kernel compiled for the CPU's best is taken even where OpenBLAS's kernels match it
  // (measured faster at the networks' shapes), with the way to OpenBLAS named.
  CHECK(pick(Isa::avx512, Isa::avx512, "SkylakeX").backend == GemmBackend::eigen);
  CHECK(pick(Isa::avx2, Isa::avx2, "Zen").backend == GemmBackend::eigen);
  CHECK(pick(Isa::avx2, Isa::avx2, "Haswell").why.find("CTNN_GEMM=openblas for OpenBLAS ('Haswell'") != std::string::npos);
  CHECK(pick(Isa::neon, Isa::neon, "ARMV8").backend == GemmBackend::eigen);
  // Compiled for less than the CPU (no -march=native): OpenBLAS where its kernels are better
  // than that and within the CPU, and the line says how to get ctnn's kernel there.
  const auto generic = pick(Isa::avx2, Isa::sse2, "Haswell");
  CHECK(generic.backend == GemmBackend::openblas);
  CHECK(generic.why.find("-march=native") != std::string::npos);
  CHECK(pick(Isa::avx512, Isa::avx2, "SkylakeX").backend == GemmBackend::openblas);
  // ... but not OpenBLAS's kernels at no better a level, nor a core name ctnn does not know.
  CHECK(pick(Isa::avx512, Isa::avx2, "Haswell").backend == GemmBackend::eigen);
  CHECK(pick(Isa::avx512, Isa::avx2, "Prescott").backend == GemmBackend::eigen);
  CHECK(pick(Isa::avx2, Isa::sse2, "Zen5").backend == GemmBackend::eigen);
  // CTNN_GEMM overrides the choice; any other value is ignored and said to be.
  CHECK(pick(Isa::avx512, Isa::avx512, "Prescott", "openblas").backend == GemmBackend::openblas);
  CHECK(pick(Isa::avx2, Isa::sse2, "Zen", "eigen").backend == GemmBackend::eigen);
  const auto typo = pick(Isa::avx2, Isa::sse2, "Zen", "mkl");
  CHECK(typo.backend == GemmBackend::openblas);
  CHECK(typo.why.find("CTNN_GEMM='mkl' ignored") != std::string::npos);
  // Without OpenBLAS there is one backend, and a build without -march=native is told so.
  CHECK(pick(Isa::avx512, Isa::avx2, "").backend == GemmBackend::eigen);
  CHECK(pick(Isa::avx512, Isa::avx2, "").why.find("-march=native") != std::string::npos);
}

// CTest runs this case once more with OPENBLAS_CORETYPE=Prescott (test gemm_backend_prescott),
// which makes OpenBLAS run its SSE3 kernels whatever the CPU: ctnn must not follow it there.
TEST_CASE("the live GEMM backend is the one the rules choose, also when OpenBLAS is forced to Prescott") {
  const auto expected = ops::choose_gemm_backend(ops::cpu_isa(), ops::compiled_isa(), ops::detail::openblas_core(), "");
  INFO(ops::gemm_backend_summary());
  if (std::getenv("CTNN_GEMM") == nullptr) CHECK(ops::gemm_backend() == expected.backend);
  const char* forced_core = std::getenv("OPENBLAS_CORETYPE");
  if (forced_core && std::string(forced_core) == "Prescott") {
#ifdef CTNN_USE_OPENBLAS
    if (ops::cpu_isa() < ops::Isa::avx2 || ops::cpu_isa() == ops::Isa::neon) {
      MESSAGE("CTNN_TEST_SKIPPED: this CPU has no AVX2, so OpenBLAS's Prescott kernels may be its best");
      return;
    }
    if (ops::compiled_isa() < ops::Isa::avx2) {  // CTNN_NATIVE=OFF: the choice's message says so
      MESSAGE("CTNN_TEST_SKIPPED: ctnn's own kernel is compiled for SSE2 only here, no faster than "
              "OpenBLAS's Prescott kernels; build with -march=native (CTNN_NATIVE) to test the rule");
      return;
    }
    REQUIRE(std::string(openblas_get_corename()) == "Prescott");  // the variable took effect
    CHECK(ops::gemm_backend() == ops::GemmBackend::eigen);
    // Named in the line: "OpenBLAS ('Prescott' kernels, SSE3)" after ctnn's kernel compiled for
    // the CPU's best, "OpenBLAS would run its 'Prescott' kernels (SSE3)" after one compiled for less.
    CHECK(ops::gemm_backend_summary().find("'Prescott' kernels") != std::string::npos);
#else
    MESSAGE("CTNN_TEST_SKIPPED: ctnn is built without OpenBLAS (CTNN_USE_OPENBLAS is OFF)");
#endif
  }
}

TEST_CASE("gemm's blocks: block_count's fixed by the problem, near-equal and even, thread_block_count's one per thread; 1 and 2 threads agree bit for bit") {
  using ops::detail::block_count, ops::detail::block_start;
  CHECK(block_count(400, 10'000'000) == 1);              // under 2^24 multiply-adds: whole
  CHECK(block_count(400, 400L * 256 * 1024) == 6);       // 6 from the work (ResNet's 1024->256 1x1, 2x2 planes)
  CHECK(block_count(400, 5L << 24) == 6);                // 5 rounded up to even
  CHECK(block_count(40, 8L << 24) == 2);                 // none shorter than 16
  CHECK(block_count(10, 8L << 24) == 1);
  // ctnn's own kernel: one block per thread, whatever block_count would say.
  using ops::detail::thread_block_count;
  CHECK(thread_block_count(400, (1L << 18) - 1, 2) == 1);         // under 2^18 multiply-adds: whole
  CHECK(thread_block_count(400, 1L << 18, 2) == 2);               // where block_count leaves it whole
  CHECK(thread_block_count(400, 400L * 1024 * 1024, 2) == 2);     // where block_count cuts 8
  CHECK(thread_block_count(400, 400L * 1024 * 1024, 64) == 25);   // none shorter than 16
  CHECK(thread_block_count(20, 1L << 24, 2) == 1);
  CHECK(thread_block_count(400, 1L << 24, 0) == 1);
  // Columns are cut where each thread gets 128 or more of them, else the longer extent.
  using ops::detail::splits_rows;
  CHECK(!splits_rows(400, 256, 2));   // ResNet's 1024->256 1x1 on 2x2 planes
  CHECK(!splits_rows(1600, 512, 2));
  CHECK(splits_rows(1600, 128, 2));   // 64 columns a thread: rows
  CHECK(splits_rows(4900, 64, 2));
  CHECK(splits_rows(400, 256, 3));    // 85 columns a thread
  CHECK(!splits_rows(256, 401, 2));   // more columns than rows
  CHECK(!splits_rows(1600, 256, 2));
  for (Eigen::Index extent : {16, 40, 100, 400, 401, 1010, 4900})
    for (long work : {1L << 24, 3L << 24, 5L << 24, 7L << 24, 100L << 24}) {
      const Eigen::Index blocks = block_count(extent, work);
      CAPTURE(extent);
      CAPTURE(blocks);
      CHECK((blocks == 1 || blocks % 2 == 0 || blocks == extent / 16));
      CHECK(block_start(0, blocks, extent) == 0);
      CHECK(block_start(blocks, blocks, extent) == extent);
      for (Eigen::Index i = 0; i < blocks; ++i) {
        const Eigen::Index len = block_start(i + 1, blocks, extent) - block_start(i, blocks, extent);
        CHECK(len >= std::min<Eigen::Index>(extent, 16));
        CHECK(std::abs(len * blocks - extent) < 16 * blocks);  // within 16 of an equal share
        if (i > 0) CHECK(block_start(i, blocks, extent) % 16 == 0);
      }
    }
  // Split both ways at 1 and 2 threads, on the automatic backend: the same bits (OpenBLAS's
  // blocks never depend on the threads; ctnn's kernel's do, and no sum depends on them).
  const int threads = num_threads();
  for (auto [m, n, k] : {std::tuple{400, 256, 1024}, std::tuple{256, 401, 1024}}) {
    const auto av = random_vector(static_cast<std::size_t>(m * k), 3);
    const auto bv = random_vector(static_cast<std::size_t>(k * n), 4);
    const ops::MatRef a{av.data(), m, k, m}, b{bv.data(), k, n, k};
    std::vector<float> one(static_cast<std::size_t>(m * n)), two(one.size());
    set_num_threads(1);
    ops::gemm(a, b, {one.data(), m, n, m});
    set_num_threads(2);
    ops::gemm(a, b, {two.data(), m, n, m});
    CHECK(one == two);
    expect_close(two, naive(a, b), 1e-5, 1e-5 * k, "split gemm");
  }
  set_num_threads(threads);
}

TEST_CASE("gemm writes only inside its leading-dimension window") {
  const auto av = random_vector(6 * 4, 3), bv = random_vector(4 * 5, 4);
  std::vector<float> c(10 * 5, -7.0f);  // ld 10, only the first 6 rows of each column are C
  ops::gemm({av.data(), 6, 4, 6}, {bv.data(), 4, 5, 4}, {c.data(), 6, 5, 10});
  for (int j = 0; j < 5; ++j)
    for (int i = 6; i < 10; ++i) CHECK(c[j * 10 + i] == -7.0f);
}

TEST_CASE("col2im is the adjoint of im2col: <im2col(x), c> == <x, col2im(c)>") {
  for (auto [k, s, p] : {std::tuple{3, 1, 1}, std::tuple{3, 2, 1}, std::tuple{1, 2, 0}, std::tuple{7, 2, 3}}) {
    const int cin = 2, h = 9, w = 8, n = 3;
    const int oh = window_out(h, k, s, p), ow = window_out(w, k, s, p);
    const ops::ConvGeometry g{cin, h, w, k, s, p, oh, ow, n};
    const auto x = random_vector(static_cast<std::size_t>(cin) * n * h * w, 5);
    // Samples 1..2 of the batch, to exercise the chunk offset.
    const int n0 = 1, nb = 2;
    const std::size_t col_size = static_cast<std::size_t>(nb) * oh * ow * cin * k * k;
    std::vector<float> col(col_size);
    ops::im2col(x.data(), g, n0, nb, col.data());
    const auto c = random_vector(col_size, 6);
    std::vector<float> back(x.size(), 0.0f);
    ops::col2im_add(c.data(), g, n0, nb, back.data());
    double lhs = 0, rhs = 0;
    for (std::size_t i = 0; i < col_size; ++i) lhs += static_cast<double>(col[i]) * c[i];
    for (std::size_t i = 0; i < x.size(); ++i) rhs += static_cast<double>(x[i]) * back[i];
    CHECK(lhs == doctest::Approx(rhs).epsilon(1e-5));
    // Sample 0 is outside the chunk: untouched.
    for (int ci = 0; ci < cin; ++ci)
      for (int q = 0; q < h * w; ++q) CHECK(back[ci * g.in_channel_stride() + q] == 0.0f);
  }
}

TEST_CASE("im2col puts zeros in the padding and the shifted plane elsewhere") {
  // One channel, 3x3 input 1..9, kernel 3, padding 1: column (ky=0, kx=0) is the input
  // shifted down-right with zeros entering from the top and left.
  const std::vector<float> x{1, 2, 3, 4, 5, 6, 7, 8, 9};
  const ops::ConvGeometry g{1, 3, 3, 3, 1, 1, 3, 3, 1};
  std::vector<float> col(9 * 9);
  ops::im2col(x.data(), g, 0, 1, col.data());
  const std::vector<float> first(col.begin(), col.begin() + 9);
  CHECK(first == std::vector<float>{0, 0, 0, 0, 1, 2, 0, 4, 5});
  const std::vector<float> centre(col.begin() + 4 * 9, col.begin() + 5 * 9);
  CHECK(centre == x);
}

TEST_CASE("im2col and col2im match a direct definition on large and small planes") {
  // Planes of at most 64 outputs with kernels up to 3x3 take the table-driven path; the rest
  // the run-copy loops. Both must equal the definition, and col2im's sums must be bit-exact.
  for (const auto& cs : {std::array{3, 1, 1, 9}, std::array{3, 1, 1, 7}, std::array{3, 1, 1, 2},
                         std::array{1, 2, 0, 7}, std::array{3, 2, 1, 8}, std::array{7, 2, 3, 9},
                         std::array{3, 2, 1, 20}, std::array{1, 2, 0, 19}, std::array{7, 2, 3, 32}}) {
    const int k = cs[0], s = cs[1], p = cs[2], h = cs[3];  // not a structured binding: INFO's lambda captures them
    INFO("kernel ", k, " stride ", s, " padding ", p, " input ", h);
    const int cin = 3, w = h, n = 4, n0 = 1, nb = 3;
    const int oh = window_out(h, k, s, p), ow = window_out(w, k, s, p);
    const ops::ConvGeometry g{cin, h, w, k, s, p, oh, ow, n};
    const auto x = random_vector(static_cast<std::size_t>(cin) * n * h * w, 7);
    const std::size_t ld = static_cast<std::size_t>(nb) * oh * ow;
    std::vector<float> col(ld * cin * k * k), want(col.size());
    const auto c = random_vector(col.size(), 8);
    std::vector<float> back(x.size(), 0.0f), want_back(x.size(), 0.0f);
    for (int ci = 0; ci < cin; ++ci)
      for (int ky = 0; ky < k; ++ky)
        for (int kx = 0; kx < k; ++kx)
          for (int b = 0; b < nb; ++b)
            for (int oy = 0; oy < oh; ++oy)
              for (int ox = 0; ox < ow; ++ox) {
                const std::size_t row = (static_cast<std::size_t>(b) * oh + oy) * ow + ox;
                const std::size_t at = ((static_cast<std::size_t>(ci) * k + ky) * k + kx) * ld + row;
                const int iy = oy * s - p + ky, ix = ox * s - p + kx;
                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                const std::size_t src = ci * g.in_channel_stride() + static_cast<std::size_t>(n0 + b) * h * w + iy * w + ix;
                want[at] = x[src];
                want_back[src] += c[at];
              }
    ops::im2col(x.data(), g, n0, nb, col.data());
    CHECK(col == want);
    ops::col2im_add(c.data(), g, n0, nb, back.data());
    CHECK(back == want_back);
  }
}
