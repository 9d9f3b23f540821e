// ctnn's packed GEMM kernel (ops/sgemm.hpp) compiled for one x86-64 level: CMake builds this file
// once per level with its -march (tests/CMakeLists.txt). Packing and tile change with the vector
// width (SSE2: packets of 4 and 6-column panels packed one float at a time; AVX2: 8 and 6, the
// panels transposed in registers; AVX-512: 16 and 12), and a build with -march=native covers only
// the machine's own level, so each level is checked here against the order the kernel states,
// bit for bit. This file has no static initialisers: its code may use instructions the CPU
// lacks, and main.cpp (built for the machine) calls it only once the CPU has said it has them.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ctnn/ops/cpu.hpp"
#include "ctnn/ops/sgemm.hpp"
#include "isa/check.hpp"

namespace ctnn_isa {

namespace sg = ctnn::ops::detail::sgemm;
using Index = Eigen::Index;

std::string describe() {
  return std::string(ctnn::ops::isa_name(ctnn::ops::compiled_isa())) + " (Eigen: " +
         Eigen::SimdInstructionSetsInUse() + "): packets of " + std::to_string(sg::kW) + " floats, a " +
         std::to_string(sg::kMr) + " x " + std::to_string(sg::kNr) + " tile";
}

namespace {
std::vector<float> values(std::size_t n, std::uint32_t seed) {
  std::vector<float> v(n);
  for (auto& x : v) {
    seed = seed * 1664525u + 1013904223u;
    x = static_cast<float>(seed >> 8) / 8388608.0f - 1.0f;  // [-1, 1)
  }
  return v;
}

// Elements of C = A * B (+ C) that differ from the stated order: restarted at zero for every kKc
// terms, one multiply-add a term (fused where the target has FMA), each block added to C.
long check(Index m, Index n, Index k, bool ta, bool tb, bool accumulate) {
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
}  // namespace

long mismatches() {
  // Ragged panels and two blocks of k; whole panels and tiles (the packing's vector paths);
  // single elements; no k at all.
  const Index sizes[][3] = {{2 * sg::kMr + 3, 3 * sg::kNr + 1, 2 * sg::kKc + 7},
                            {3 * sg::kMr, 4 * sg::kNr, sg::kKc + 3 * sg::kW},
                            {1, 1, 1},
                            {5, 7, 0}};
  long bad = 0;
  for (const auto& s : sizes)
    for (int t = 0; t < 8; ++t) bad += check(s[0], s[1], s[2], t & 1, t & 2, t & 4);
  return bad;
}

}  // namespace ctnn_isa
