// The order of sums ctnn's GEMM kernel states (ops/sgemm.hpp), checked bit for bit: every
// element of C = A * B (+ C) is restarted at zero for every kKc terms, one multiply-add a term
// (fused where the target has FMA), each block's sum added to C. Header-only, so that each test
// compiles it for its own instruction set: test_ops for the machine's (-march=native), and
// sgemm_isa.cpp once per x86-64 level and for aarch64.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ctnn/core/random.hpp"
#include "ctnn/ops/sgemm.hpp"

namespace ctnn_isa {

namespace kernel_check {
namespace sg = ctnn::ops::detail::sgemm;
using Index = Eigen::Index;

inline std::vector<float> values(std::size_t n, std::uint64_t seed) {
  ctnn::Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(r.uniform(-1, 1));
  return v;
}

// Elements of one product that differ from the stated order.
inline long check(Index m, Index n, Index k, bool ta, bool tb, bool accumulate) {
  const auto av = values(static_cast<std::size_t>(m * k), 11), bv = values(static_cast<std::size_t>(k * n), 12);
  const ctnn::ops::MatRef a = ta ? ctnn::ops::MatRef{av.data(), k, m, k, true} : ctnn::ops::MatRef{av.data(), m, k, m, false};
  const ctnn::ops::MatRef b = tb ? ctnn::ops::MatRef{bv.data(), n, k, n, true} : ctnn::ops::MatRef{bv.data(), k, n, k, false};
  std::vector<float> c(static_cast<std::size_t>(m * n), 0.5f), expected(c);
  sg::product(a, b, c.data(), m, accumulate);
  for (Index j = 0; j < n; ++j)
    for (Index i = 0; i < m; ++i) {
      float& e = expected[static_cast<std::size_t>(i + j * m)];
      if (k == 0 && !accumulate) e = 0.0f;
      for (Index p0 = 0; p0 < k; p0 += sg::kKc) {
        float sum = 0.0f;
        for (Index p = p0; p < std::min(k, p0 + sg::kKc); ++p)
#ifdef EIGEN_VECTORIZE_FMA
          sum = std::fma(a.at(i, p), b.at(p, j), sum);
#else
          sum += a.at(i, p) * b.at(p, j);
#endif
        e = p0 == 0 && !accumulate ? sum : e + sum;
      }
    }
  long bad = 0;
  for (std::size_t i = 0; i < c.size(); ++i) bad += std::memcmp(&c[i], &expected[i], sizeof(float)) != 0;
  return bad;
}
}  // namespace kernel_check

// Elements that differ over ragged panels with two blocks of k, whole panels and tiles (the
// packing's vector paths), the narrower tiles (one packet high; a third and two thirds of kNr
// wide) whole and ragged, single elements and no k at all; A and B transposed or not, C
// overwritten or accumulated.
inline long kernel_mismatches() {
  namespace sg = ctnn::ops::detail::sgemm;
  const Eigen::Index sizes[][3] = {{2 * sg::kMr + 3, 3 * sg::kNr + 1, 2 * sg::kKc + 7},
                                   {3 * sg::kMr, 4 * sg::kNr, sg::kKc + 3 * sg::kW},
                                   {2 * sg::kMr + sg::kW, 3 * sg::kNr + 2 * sg::kNr / 3, sg::kKc + 1},
                                   {sg::kMr + sg::kW + 5, sg::kNr + sg::kNr / 3, 2 * sg::kW + 3},
                                   {1, 1, 1},
                                   {5, 7, 0}};
  long bad = 0;
  for (const auto& s : sizes)
    for (int t = 0; t < 8; ++t) bad += kernel_check::check(s[0], s[1], s[2], t & 1, t & 2, t & 4);
  return bad;
}

}  // namespace ctnn_isa
