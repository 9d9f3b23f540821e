// ctnn's own single-threaded fp32 matrix product, C = A * B (or C += A * B), written on Eigen's
// packet math, so one source runs SSE, AVX2+FMA, AVX-512 or NEON, whatever the translation unit
// is compiled for. It is what the "eigen" GEMM backend runs (ops/gemm.hpp): where OpenBLAS does
// not know the CPU, or ctnn is built without it.
//
// Why not Eigen's own product: at the networks' shapes (1x1 convolutions of 400-4,900 rows,
// Winograd's tile products) it ran at 60-75 % of OpenBLAS's speed on an AVX2 Zen 3 (e.g. the
// 256->256 1x1 convolution on 7x7 planes, 97 against 149 GFLOP/s on two threads), and the
// fallback is what a user gets on a CPU that OpenBLAS's table lacks.
//
// The layout is the usual one of packed GEMMs (Goto and van de Geijn; BLIS): B is copied in
// blocks of kKc x kNc into panels of kNr columns, A in blocks of kMc x kKc into panels of kMr
// rows, both with k running fastest inside a panel, so the micro-kernel reads both operands
// sequentially and keeps a kMr x kNr tile of C in registers (kMr = two packets). Packing takes
// care of transposed operands and of ragged edges (zero-padded panels), so there is one
// micro-kernel.
//
// Numerics: every element of C is a sum over k in order, one fused multiply-add per term
// (where the target has FMA), restarted at zero for each block of kKc terms and added to C
// block by block. The order depends only on the sizes, never on threads or alignment.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <utility>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "ctnn/core/tensor.hpp"
#include "ctnn/ops/bias.hpp"
#include "ctnn/ops/matrix.hpp"

namespace ctnn::ops::detail::sgemm {

using Index = Eigen::Index;
using Packet = Eigen::internal::packet_traits<float>::type;
inline constexpr int kW = Eigen::internal::packet_traits<float>::size;
// kW packets of kW floats, for transposing in registers. (GCC warns that a vector type's
// attributes are dropped in a template argument; Eigen's own uses of it are in system headers.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif
using Square = Eigen::internal::PacketBlock<Packet, kW>;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Eigen's ptranspose. GCC 12 reports -Wuninitialized inside its AVX-512 form (the
// _mm512_undefined_ps() operand of the unpack intrinsics, a don't-care value by design) in every
// program that packs panels with AVX-512 enabled. `flatten` inlines it here, where the pragma
// covers it; an out-of-line copy would be reported at Eigen's own lines, beyond our reach.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((flatten)) inline void transpose(Square& sq) { Eigen::internal::ptranspose(sq); }
#pragma GCC diagnostic pop
#else
inline void transpose(Square& sq) { Eigen::internal::ptranspose(sq); }
#endif

// Vector registers: 32 with AVX-512 and on aarch64, 16 otherwise. The tile takes 2 * kNr of
// them, the two packets of A two more, and the broadcast of B one.
#if defined(__AVX512F__) || defined(__aarch64__)
inline constexpr int kNr = 12;
#else
inline constexpr int kNr = 6;
#endif
inline constexpr int kMr = 2 * kW;
// Blocks: a kNr-column panel of B (kKc x kNr) stays in L1 while the kMc x kKc block of A streams
// from L2 past it; the kKc x kNc block of B is read from L3 once per block of A.
inline constexpr Index kKc = 256;
inline constexpr Index kMc = 8 * kMr > 128 ? 8 * kMr : 128;  // at least 8 panels
inline constexpr Index kNc = 170 * kNr;

// The packed blocks, per thread, apart from ops::scratch, whose slots the callers (Winograd) hold
// while they multiply. `which`: 0 for A, 1 for B.
inline float* pack_buffer(int which, std::size_t floats) {
  thread_local AlignedFloats buffers[2];
  if (buffers[which].size() < floats) buffers[which].resize(floats);
  return buffers[which].data();
}

// The height of the panel of A that holds rows [p, mc) of a block: kMr, or one packet for a
// last panel of kW rows or fewer, which the one-packet tile multiplies (a block of 400 rows, a
// 1x1 convolution's on ResNet's 2x2 planes, is 12 panels of 32 and one of 16).
inline Index panel_height(Index p, Index mc) { return mc - p <= kW ? kW : kMr; }

// Rows [i0, i0 + mc) and columns [k0, k0 + kc) of A, as panels of panel_height rows h (the last
// one padded with zeros), panel p (of rows from p * kMr on) at out + p * kMr * kc:
// out[p * kMr * kc + kk * h + r] = A(i0 + p * kMr + r, k0 + kk).
inline void pack_a(const MatRef& a, Index i0, Index mc, Index k0, Index kc, float* out) {
  for (Index p = 0; p < mc; p += kMr, out += kMr * kc) {
    const Index rows = std::min<Index>(kMr, mc - p), h = panel_height(p, mc);
    if (!a.transposed) {
      const float* src = a.data + (i0 + p) + k0 * a.ld;
      if (rows == kMr) {
        for (Index kk = 0; kk < kc; ++kk, src += a.ld) {
          Eigen::internal::pstore(out + kk * kMr, Eigen::internal::ploadu<Packet>(src));
          Eigen::internal::pstore(out + kk * kMr + kW, Eigen::internal::ploadu<Packet>(src + kW));
        }
      } else if (rows == kW) {
        for (Index kk = 0; kk < kc; ++kk, src += a.ld)
          Eigen::internal::pstore(out + kk * kW, Eigen::internal::ploadu<Packet>(src));
      } else {
        for (Index kk = 0; kk < kc; ++kk, src += a.ld)
          for (Index r = 0; r < h; ++r) out[kk * h + r] = r < rows ? src[r] : 0.0f;
      }
    } else {
      // A^T: element (i, k) is data[k + i * ld], so each row of the panel is contiguous in k:
      // kW x kW squares are loaded a row per packet and transposed in registers.
      const float* src = a.data + k0 + (i0 + p) * a.ld;
      Index kk = 0;
      if (rows == h)
        for (; kk + kW <= kc; kk += kW)
          for (Index r0 = 0; r0 < h; r0 += kW) {
            Square sq;
            for (int r = 0; r < kW; ++r) sq.packet[r] = Eigen::internal::ploadu<Packet>(src + (r0 + r) * a.ld + kk);
            transpose(sq);
            for (int t = 0; t < kW; ++t) Eigen::internal::pstore(out + (kk + t) * h + r0, sq.packet[t]);
          }
      for (; kk < kc; ++kk)
        for (Index r = 0; r < h; ++r) out[kk * h + r] = r < rows ? src[r * a.ld + kk] : 0.0f;
    }
  }
}

// Rows [row0, row0 + count) of a GatheredMatrix, as the A operand of product(): a thread's block
// of a whole-plane convolution's Wd or Wd^T, packed from the weight itself (ops::gemm_gathered).
struct GatheredBlock {
  GatheredMatrix g;
  Index row0, count;
  Index out_rows() const { return count; }
  Index out_cols() const { return g.cols; }
};

// Whether g's rows and k come in groups of 4 whose 16 values lie in the 9 floats from the
// group's start, src + (row / 4) * row_step + (k / 4) * k_step (Wd and Wd^T of a 3x3 kernel on 2x2
// planes: one output channel's kernel for one input channel); then lanes[4 * (k % 4) + row % 4]
// is the value's place among the 9. On AVX2 such a group is packed by one load and two permutes
// instead of 16 loads and stores.
inline bool groups_of_4(const GatheredMatrix& g, int* lanes) {
  if (g.row_group != 4 || g.k_group != 4) return false;
  int reach = 0;
  for (int j = 0; j < 16; ++j) reach = std::max(reach, lanes[j] = g.taps[j % 4 * g.tap_row + j / 4 * g.tap_k]);
  return reach == 8;  // so that the 9 floats from a group's start are all inside src's array
}

// Panels of rows [i0, i0 + mc) and columns [k0, k0 + kc) of the block, as pack_a lays out a
// MatRef's (the same values, so the product has the same bits).
inline void pack_a(const GatheredBlock& a, Index i0, Index mc, Index k0, Index kc, float* out) {
  const GatheredMatrix& g = a.g;
  int lanes[16];
  const bool grouped = groups_of_4(g, lanes) && (a.row0 + i0) % 4 == 0 && mc % 4 == 0 && k0 % 4 == 0 && kc % 4 == 0;
  for (Index p = 0; p < mc; p += kMr, out += kMr * kc) {
    const Index rows = std::min<Index>(kMr, mc - p), h = panel_height(p, mc), first = a.row0 + i0 + p;
#if defined(__AVX2__)
    if (grouped) {
      const __m256i lo_lanes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lanes));
      const __m256i hi_lanes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lanes + 8));
      const __m256i eight = _mm256_set1_epi32(8);  // the ninth float is broadcast and blended in
      const __m256 lo_ninth = _mm256_castsi256_ps(_mm256_cmpeq_epi32(lo_lanes, eight));
      const __m256 hi_ninth = _mm256_castsi256_ps(_mm256_cmpeq_epi32(hi_lanes, eight));
      for (Index kk = 0; kk < kc; kk += 4) {
        const float* group = g.src + (first / 4) * g.row_step + ((k0 + kk) / 4) * g.k_step;
        float* dst = out + kk * h;
        for (Index u = 0; u < rows; u += 4, group += g.row_step) {
          const __m256 v = _mm256_loadu_ps(group), ninth = _mm256_broadcast_ss(group + 8);
          const __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(v, lo_lanes), ninth, lo_ninth);
          const __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(v, hi_lanes), ninth, hi_ninth);
          _mm_storeu_ps(dst + u, _mm256_castps256_ps128(lo));
          _mm_storeu_ps(dst + h + u, _mm256_extractf128_ps(lo, 1));
          _mm_storeu_ps(dst + 2 * h + u, _mm256_castps256_ps128(hi));
          _mm_storeu_ps(dst + 3 * h + u, _mm256_extractf128_ps(hi, 1));
        }
        for (Index r = rows; r < h; ++r) dst[r] = dst[h + r] = dst[2 * h + r] = dst[3 * h + r] = 0.0f;
      }
      continue;
    }
#else
    (void)grouped;
#endif
    // Each row's offset for each k % k_group, then one load per value.
    Index at[GatheredMatrix::kMaxGroup][kMr];
    for (int t = 0; t < g.k_group; ++t)
      for (Index r = 0; r < rows; ++r)
        at[t][r] = ((first + r) / g.row_group) * g.row_step +
                   g.taps[((first + r) % g.row_group) * g.tap_row + t * g.tap_k];
    for (Index kk = 0; kk < kc; ++kk) {
      const Index k = k0 + kk;
      const float* base = g.src + (k / g.k_group) * g.k_step;
      const Index* offsets = at[k % g.k_group];
      for (Index r = 0; r < rows; ++r) out[kk * h + r] = base[offsets[r]];
      for (Index r = rows; r < h; ++r) out[kk * h + r] = 0.0f;
    }
  }
}

// Rows [k0, k0 + kc) and columns [j0, j0 + nc) of B, as panels of kNr columns (the last one
// padded with zeros): out[q * kNr * kc + kk * kNr + j] = B(k0 + kk, j0 + q * kNr + j).
inline void pack_b(const MatRef& b, Index k0, Index kc, Index j0, Index nc, float* out) {
  if (b.transposed) {
    // B^T: element (k, j) is data[j + k * ld], so each k's row of a panel is contiguous. Rows are
    // copied 8 at a time into every panel, each source row's lines read while they are in L1:
    // copying one panel's kc rows at a time (rows ld apart, often a multiple of 1 KiB, so in the
    // same few L1 sets) evicted the lines the next panel shares, and packed at half this speed
    // (1.3-2.6x slower at blocks of 256-2304 x 256-1024, the 1x1 layers' input gradient, Xeon
    // model 167). 8 rows of one L1 set fit the 8 ways of AMD's L1 as well as Intel's 12; 16
    // packed 10 % faster on the Xeon, whose ways it fits alone.
    constexpr Index rows_at_once = 8;
    for (Index k1 = 0; k1 < kc; k1 += rows_at_once) {
      const Index kn = std::min(rows_at_once, kc - k1);
      const float* src = b.data + j0 + (k0 + k1) * b.ld;
      float* panel = out + k1 * kNr;
      for (Index q = 0; q < nc; q += kNr, panel += kNr * kc) {
        const Index cols = std::min<Index>(kNr, nc - q);
        for (Index kk = 0; kk < kn; ++kk) {
          const float* row = src + q + kk * b.ld;
          float* dst = panel + kk * kNr;
          if (cols == kNr)
            std::memcpy(dst, row, sizeof(float) * kNr);  // inlined; std::copy_n became a call to memmove
          else
            for (Index j = 0; j < kNr; ++j) dst[j] = j < cols ? row[j] : 0.0f;
        }
      }
    }
    return;
  }
  for (Index q = 0; q < nc; q += kNr, out += kNr * kc) {
    const Index cols = std::min<Index>(kNr, nc - q);
    const float* col = b.data + k0 + (j0 + q) * b.ld;  // column j at col + j * ld, contiguous in k
    Index kk = 0;
    if constexpr (kNr <= kW) {
      // kW values of each of the kNr columns, transposed in registers into kW rows of the panel.
      // A row is stored as a whole packet, kW - kNr floats past its end, which the next row's
      // store overwrites (pack_buffer leaves room after the last one).
      if (cols == kNr)
        for (; kk + kW <= kc; kk += kW) {
          Square sq;
          for (int j = 0; j < kW; ++j)
            sq.packet[j] = j < kNr ? Eigen::internal::ploadu<Packet>(col + j * b.ld + kk) : Eigen::internal::pset1<Packet>(0.0f);
          transpose(sq);
          for (int t = 0; t < kW; ++t) Eigen::internal::pstoreu(out + (kk + t) * kNr, sq.packet[t]);
        }
    }
    // The rest, one float at a time (all of a ragged panel: kk is 0 there).
    for (Index j = 0; j < kNr; ++j)
      for (Index k1 = kk; k1 < kc; ++k1) out[k1 * kNr + j] = j < cols ? col[j * b.ld + k1] : 0.0f;
  }
}

// A packet of column j's values under the column's map (ChannelMap: a 1x1 convolution's bias,
// folded BatchNorm and ReLU, a channel to a column), as ChannelMap::apply does to one value.
EIGEN_ALWAYS_INLINE Packet map_packet(const ChannelMap& map, Index j, Packet v) {
  using namespace Eigen::internal;
  if (map.bias) v = padd(v, pset1<Packet>(map.bias[j]));
  if (map.scale) v = pmadd(v, pset1<Packet>(map.scale[j]), pset1<Packet>(map.shift[j]));
  if (map.relu) {  // ops::relu: below zero becomes 0; NaN and -0 compare false and pass
    const Packet zero = pzero(v);
    v = pselect(pcmp_lt(v, zero), zero, v);
  }
  return v;
}

// A tile of P packets' rows (P = 2: kMr; P = 1 for a last panel of at most kW rows) by
// sizeof...(J) columns (kNr, or fewer for a last panel of B with fewer columns: no multiply-adds
// on its zero padding): sums of kc terms from the packed panels (A's of height P * kW, B's of
// width kNr), then C = sums (`overwrite`) or C += sums, for the top-left rows x cols of the
// tile; then `map` (unless null) on the final values of column j, as map->apply(value, j), while
// they are in registers. Each sum runs over k in the same order whatever the tile's size.
template <int P, std::size_t... J>
inline void tile(Index kc, const float* ap, const float* bp, float* c, Index ldc, bool overwrite, Index rows,
                 Index cols, const ChannelMap* map, std::index_sequence<J...>) {
  using namespace Eigen::internal;
  static_assert(P == 1 || P == 2, "a tile is one or two packets high");
  constexpr Index kWidth = sizeof...(J);
  Packet lo[kWidth], hi[kWidth];  // hi: the second packet's rows, unused when P = 1
  ((lo[J] = pset1<Packet>(0.0f)), ...);
  if constexpr (P == 2) ((hi[J] = lo[J]), ...);
  for (Index kk = 0; kk < kc; ++kk, ap += P * kW, bp += kNr) {
    const Packet a0 = pload<Packet>(ap);
    if constexpr (P == 1) {
      ((lo[J] = pmadd(a0, pset1<Packet>(bp[J]), lo[J])), ...);
    } else {
      const Packet a1 = pload<Packet>(ap + kW);
      ((lo[J] = pmadd(a0, pset1<Packet>(bp[J]), lo[J]), hi[J] = pmadd(a1, pset1<Packet>(bp[J]), hi[J])), ...);
    }
  }
  if (rows == P * kW && cols == kWidth) {
    if (!overwrite) {
      ((lo[J] = padd(ploadu<Packet>(c + J * ldc), lo[J])), ...);
      if constexpr (P == 2) ((hi[J] = padd(ploadu<Packet>(c + J * ldc + kW), hi[J])), ...);
    }
    if (map) {
      ((lo[J] = map_packet(*map, static_cast<Index>(J), lo[J])), ...);
      if constexpr (P == 2) ((hi[J] = map_packet(*map, static_cast<Index>(J), hi[J])), ...);
    }
    ((pstoreu(c + J * ldc, lo[J])), ...);
    if constexpr (P == 2) ((pstoreu(c + J * ldc + kW, hi[J])), ...);
    return;
  }
  alignas(64) float t[kWidth][P * kW];
  ((pstore(t[J], lo[J])), ...);
  if constexpr (P == 2) ((pstore(t[J] + kW, hi[J])), ...);
  for (Index j = 0; j < cols; ++j)
    for (Index r = 0; r < rows; ++r) {
      const float v = overwrite ? t[j][r] : c[r + j * ldc] + t[j][r];
      c[r + j * ldc] = map ? map->apply(v, j) : v;
    }
}

// The tile for a panel of A of `rows` rows and one of B of `cols` columns: the narrowest of
// kNr / 3, 2 kNr / 3 and kNr columns that holds them (ResNet's 64-channel layers end in a panel
// of 4), one packet high where a panel of A has no more rows.
template <int P>
inline void tile_of(Index kc, const float* ap, const float* bp, float* c, Index ldc, bool overwrite, Index rows,
                    Index cols, const ChannelMap* map) {
  static_assert(kNr % 3 == 0, "tiles of a third and two thirds of kNr columns");
  if (cols <= kNr / 3)
    tile<P>(kc, ap, bp, c, ldc, overwrite, rows, cols, map, std::make_index_sequence<kNr / 3>{});
  else if (cols <= 2 * kNr / 3)
    tile<P>(kc, ap, bp, c, ldc, overwrite, rows, cols, map, std::make_index_sequence<2 * kNr / 3>{});
  else
    tile<P>(kc, ap, bp, c, ldc, overwrite, rows, cols, map, std::make_index_sequence<kNr>{});
}

// C (m x n, leading dimension ldc) = A * B, or += when `accumulate`, on the calling thread; then
// `map` (unless null) on column j's final values as map->apply(value, j), in the tiles' registers.
// A: a MatRef, or a GatheredBlock (packed from its table).
template <class A>
inline void product(const A& a, const MatRef& b, float* c, Index ldc, bool accumulate,
                    const ChannelMap* map = nullptr) {
  const Index m = a.out_rows(), n = b.out_cols(), k = a.out_cols();
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (Index j = 0; j < n; ++j)
      for (Index i = 0; i < m; ++i) {
        const float v = accumulate ? c[i + j * ldc] : 0.0f;
        c[i + j * ldc] = map ? map->apply(v, j) : v;
      }
    return;
  }
  const Index kc_max = std::min(k, kKc);
  const Index nc_max = std::min(n, kNc), mc_max = std::min(m, kMc);
  float* bpack = pack_buffer(1, static_cast<std::size_t>(((nc_max + kNr - 1) / kNr) * kNr * kc_max + kW));
  float* apack = pack_buffer(0, static_cast<std::size_t>(((mc_max + kMr - 1) / kMr) * kMr * kc_max));
  for (Index jc = 0; jc < n; jc += kNc) {
    const Index nc = std::min(kNc, n - jc);
    for (Index pc = 0; pc < k; pc += kKc) {
      const Index kc = std::min(kKc, k - pc);
      const bool overwrite = pc == 0 && !accumulate, last = pc + kc == k;
      pack_b(b, pc, kc, jc, nc, bpack);
      for (Index ic = 0; ic < m; ic += kMc) {
        const Index mc = std::min(kMc, m - ic);
        pack_a(a, ic, mc, pc, kc, apack);
        for (Index jr = 0; jr < nc; jr += kNr) {
          const ChannelMap panel_map = map && last ? map->from(jc + jr) : ChannelMap{};
          for (Index ir = 0; ir < mc; ir += kMr) {
            const Index rows = std::min<Index>(kMr, mc - ir), cols = std::min<Index>(kNr, nc - jr);
            (rows <= kW ? tile_of<1> : tile_of<2>)(kc, apack + ir * kc, bpack + jr * kc, c + (ic + ir) + (jc + jr) * ldc,
                                                   ldc, overwrite, rows, cols, map && last ? &panel_map : nullptr);
          }
        }
      }
    }
  }
}

}  // namespace ctnn::ops::detail::sgemm
