// bf16 products with fp32 accumulation, for the bf16 precision policy (ops/precision.hpp).
//
// C (fp32) = A * B or C += A * B where every element of A and B is first rounded to bfloat16
// (round to nearest even, as PyTorch's float -> bfloat16 conversion) and the products are
// summed in fp32: the arithmetic of PyTorch's autocast convolutions and linear layers on a CPU.
//
// The kernel is ctnn's own, for CPUs with AVX512_BF16 (AMD Zen 4 and later, Intel Cooper Lake
// and Sapphire Rapids and later): VDPBF16PS multiplies pairs of bf16 values and adds both
// products to one fp32 lane, twice the multiply-adds of an fp32 FMA per instruction, and the
// packed operands take half the memory traffic. It is compiled for that instruction set with a
// function attribute and chosen at run time from cpuid, so a program built for any x86-64 CPU
// runs it where the CPU has it and never executes it (SIGILL) where it has not.
//
// Layout (the classic packed GEMM): the operands are copied, rounded, into panels whose inner
// pairs are consecutive k: A in panels of kMr = 32 rows ([k/2][32 rows] of bf16 pairs, two
// 512-bit registers per pair of k), B in panels of kNr = 12 columns ([k/2][12 columns] of pairs,
// each broadcast to a register). A 32 x 12 block of C lives in 24 registers for a whole k-block.
// Cache blocks: kKc values of k (the B micro-panel, 12 x 384 bf16 = 9 KiB, stays in L1), kMc
// rows of A (192 x 384 bf16 = 144 KiB in L2), kNc columns of B. Packing converts while it
// copies, so rounding to bf16 costs no pass of its own.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "ctnn/ops/cpu.hpp"
#include "ctnn/ops/matrix.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define CTNN_HAVE_BF16_KERNEL 1
#include <cpuid.h>
#include <immintrin.h>
// Functions compiled for AVX512_BF16 whatever the translation unit's -march: they run only
// after bf16_support() found the instructions.
#define CTNN_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define CTNN_HAVE_BF16_KERNEL 0
#endif

namespace ctnn::ops {

// The bfloat16 bits of a float, rounded to nearest even, NaN kept a (quiet) NaN: PyTorch's
// round_to_nearest_even, so values match torch's .to(torch.bfloat16) bit for bit.
inline std::uint16_t to_bf16_bits(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float from_bf16_bits(std::uint16_t h) { return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16); }
// f rounded to the nearest bfloat16, as a float.
inline float round_to_bf16(float f) { return from_bf16_bits(to_bf16_bits(f)); }

// What the CPU offers for bf16 products.
struct Bf16Support {
  bool avx512_bf16 = false;  // VDPBF16PS, with AVX-512F/BW/VL and the OS saving zmm registers
  bool amx_bf16 = false;     // AMX tiles with bf16 (Sapphire Rapids and later)
};

inline Bf16Support bf16_support() {
  Bf16Support s;
#if CTNN_HAVE_BF16_KERNEL
  __builtin_cpu_init();
  // __builtin_cpu_supports checks that the OS saves the AVX-512 state too (XCR0).
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl");
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) s.avx512_bf16 = avx512 && ((a >> 5) & 1u);
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) s.amx_bf16 = ((d >> 22) & 1u) && ((d >> 24) & 1u);
#endif
  return s;
}

// Empty when bf16 products can run here, else the one line that says why not.
inline std::string bf16_unavailable_reason() {
  if (!CTNN_HAVE_BF16_KERNEL) return "bf16 precision needs an x86-64 CPU with AVX512_BF16 and GCC or clang";
  if (bf16_support().avx512_bf16) return {};
  const std::string model = cpu_model_name();
  return "bf16 precision needs a CPU with AVX512_BF16 (AMD Zen 4 or later, Intel Cooper Lake, Sapphire Rapids "
         "or later); this one" + (model.empty() ? std::string() : " (" + model + ")") +
         " has not: use fp32 precision";
}

// One line for programs to print beside their figures.
inline std::string bf16_kernel_summary() {
  const Bf16Support s = bf16_support();
  if (!s.avx512_bf16) return bf16_unavailable_reason();
  return std::string("bf16: ctnn's AVX512_BF16 kernels (fp32 accumulation)") +
         (s.amx_bf16 ? "; this CPU has AMX-BF16 tiles, which ctnn does not use yet" : "");
}

#if CTNN_HAVE_BF16_KERNEL
namespace detail::bf16 {

inline constexpr Eigen::Index kMr = 32, kNr = 12, kKc = 384, kMc = 192, kNc = 1536;

// Shifts of all 16 lanes. The maskz forms: GCC 12's plain _mm512_srli_epi32 merges into an
// "undefined" vector that -Wmaybe-uninitialized reports when compiled for a lower -march.
CTNN_BF16_TARGET inline __m512i shift_right16(__m512i v) { return _mm512_maskz_srli_epi32(0xffff, v, 16); }
CTNN_BF16_TARGET inline __m512i shift_left16(__m512i v) { return _mm512_maskz_slli_epi32(0xffff, v, 16); }

// to_bf16_bits on 16 lanes, in the low half of each 32-bit lane.
CTNN_BF16_TARGET inline __m512i round16(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i bias = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(shift_right16(u), _mm512_set1_epi32(1)));
  const __m512i r = shift_right16(_mm512_add_epi32(u, bias));
  return _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
}

// An operand as panels see it: `lines` (A's rows or B's columns) by k. Element (line l, k) is
// at data[k + l * ld] when k_contiguous (A transposed, B as is), else at data[l + k * ld].
struct PanelSource {
  const float* data;
  Eigen::Index ld;
  bool k_contiguous;
};
inline PanelSource source_of_a(const MatRef& a) { return {a.data, a.ld, a.transposed}; }
inline PanelSource source_of_b(const MatRef& b) { return {b.data, b.ld, !b.transposed}; }

inline __mmask16 first_lanes(Eigen::Index n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// Lines [l0, l0+count) and k [k0, k0+kc) into micro-panels of W lines: [k/2][W] bf16 pairs, the
// lower k in the low half. Missing lines and the odd k's partner are zeros.
template <int W>
CTNN_BF16_TARGET inline void pack_panels(const PanelSource& src, Eigen::Index l0, Eigen::Index count, Eigen::Index k0,
                                         Eigen::Index kc, std::uint32_t* out) {
  static_assert(W % 4 == 0 && W <= 32, "a panel is at most two vectors wide");
  const Eigen::Index pairs = (kc + 1) / 2;
  for (Eigen::Index lr = 0; lr < count; lr += W) {
    const Eigen::Index n = std::min<Eigen::Index>(W, count - lr);
    if (!src.k_contiguous) {
      // A pair of k is two rows of the panel's lines: one masked load, rounding and store per
      // 16 lines.
      for (Eigen::Index p = 0; p < pairs; ++p, out += W) {
        const float* row = src.data + (l0 + lr) + (k0 + 2 * p) * src.ld;
        const bool two = 2 * p + 1 < kc;
        for (int h = 0; h * 16 < W; ++h) {
          const __mmask16 valid = first_lanes(n - 16 * h);
          const __m512i lo = round16(_mm512_maskz_loadu_ps(valid, row + 16 * h));
          const __m512i hi = two ? round16(_mm512_maskz_loadu_ps(valid, row + src.ld + 16 * h)) : _mm512_setzero_si512();
          _mm512_mask_storeu_epi32(out + 16 * h, first_lanes(W - 16 * h), _mm512_or_si512(lo, shift_left16(hi)));
        }
      }
      continue;
    }
    // Each line's k are contiguous, so its bf16 values in order are already its pairs: round 32
    // values at a time into 16 pairs, then write them across the panel (a transposition through
    // a small block on the stack).
    alignas(64) std::uint32_t block[W][16];
    for (Eigen::Index p0 = 0; p0 < pairs; p0 += 16) {
      const Eigen::Index left = kc - 2 * p0;  // values of k still to pack in each line
      for (Eigen::Index l = 0; l < W; ++l) {
        if (l >= n) {
          _mm512_store_si512(block[l], _mm512_setzero_si512());
          continue;
        }
        const float* line = src.data + (k0 + 2 * p0) + (l0 + lr + l) * src.ld;
        const __m256i lo = _mm512_cvtepi32_epi16(round16(_mm512_maskz_loadu_ps(first_lanes(left), line)));
        const __m256i hi = _mm512_cvtepi32_epi16(round16(_mm512_maskz_loadu_ps(first_lanes(left - 16), line + 16)));
        _mm512_store_si512(block[l], _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
      }
      const Eigen::Index np = std::min<Eigen::Index>(16, pairs - p0);
      for (Eigen::Index p = 0; p < np; ++p, out += W)
        for (int l = 0; l < W; ++l) out[l] = block[l][p];
    }
  }
}

// C[0:mr, 0:nr] (leading dimension ldc) = (add ? C : 0) + the product of one A micro-panel and
// one B micro-panel over `pairs` pairs of k.
CTNN_BF16_TARGET inline void micro_kernel(Eigen::Index pairs, const std::uint32_t* ap, const std::uint32_t* bp,
                                          float* c, Eigen::Index ldc, int mr, int nr, bool add) {
  __m512 c0[kNr], c1[kNr];
  for (int j = 0; j < kNr; ++j) c0[j] = c1[j] = _mm512_setzero_ps();
  for (Eigen::Index p = 0; p < pairs; ++p, ap += kMr, bp += kNr) {
    const __m512bh a0 = (__m512bh)_mm512_loadu_si512(ap);
    const __m512bh a1 = (__m512bh)_mm512_loadu_si512(ap + 16);
    for (int j = 0; j < kNr; ++j) {
      const __m512bh bj = (__m512bh)_mm512_set1_epi32(static_cast<int>(bp[j]));
      c0[j] = _mm512_dpbf16_ps(c0[j], a0, bj);
      c1[j] = _mm512_dpbf16_ps(c1[j], a1, bj);
    }
  }
  const __mmask16 m0 = mr >= 16 ? __mmask16(0xffff) : __mmask16((1u << mr) - 1);
  const __mmask16 m1 = mr >= 32 ? __mmask16(0xffff) : mr > 16 ? __mmask16((1u << (mr - 16)) - 1) : __mmask16(0);
  for (int j = 0; j < nr; ++j) {
    float* cj = c + j * ldc;
    __m512 x0 = c0[j], x1 = c1[j];
    if (add) {
      x0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cj), x0);
      x1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cj + 16), x1);
    }
    _mm512_mask_storeu_ps(cj, m0, x0);
    _mm512_mask_storeu_ps(cj + 16, m1, x1);
  }
}

inline std::uint32_t* panel_buffer(int slot, std::size_t words) {
  thread_local std::vector<std::uint32_t, Eigen::aligned_allocator<std::uint32_t>> buffers[3];
  auto& b = buffers[slot];
  if (b.size() < words) {
    b = {};
    b.resize(words);
  }
  return b.data();
}

// A whole operand packed once, for a product cut into blocks that all read it (ops::gemm):
// for each k-block in turn, all its panels of W lines. Within a k-block the layout is
// pack_panels's, so a block of the product finds its panels at an offset.
struct Packed {
  const std::uint32_t* data = nullptr;
  Eigen::Index panels = 0;  // of the whole operand
};

template <int W>
inline std::size_t packed_words(Eigen::Index lines, Eigen::Index k) {
  return static_cast<std::size_t>((lines + W - 1) / W) * W * static_cast<std::size_t>((k + 1) / 2);
}

// The panels of k-block [k0, k0+kc) from line `line0` on (a multiple of W).
template <int W>
inline const std::uint32_t* packed_at(const Packed& p, Eigen::Index line0, Eigen::Index k0, Eigen::Index kc) {
  return p.data + (k0 / 2) * p.panels * W + (line0 / W) * W * ((kc + 1) / 2);
}

// Packs all `lines` x k of `src` into `out` (packed_words<W>(lines, k) words), with the
// calling team of threads when there is one.
template <int W>
CTNN_BF16_TARGET inline Packed pack_whole(const PanelSource& src, Eigen::Index lines, Eigen::Index k,
                                          std::uint32_t* out) {
  const Packed p{out, (lines + W - 1) / W};
  const Eigen::Index kblocks = (k + kKc - 1) / kKc, groups = (p.panels + 7) / 8;  // 8 panels a task
#pragma omp parallel for schedule(dynamic, 1) if (kblocks * groups > 1)
  for (Eigen::Index t = 0; t < kblocks * groups; ++t) {
    const Eigen::Index k0 = (t / groups) * kKc, kc = std::min(kKc, k - k0), l0 = (t % groups) * 8 * W;
    pack_panels<W>(src, l0, std::min<Eigen::Index>(8 * W, lines - l0), k0, kc,
                   const_cast<std::uint32_t*>(packed_at<W>(p, l0, k0, kc)));
  }
  return p;
}

// C = A * B (+ C). `whole_a` / `whole_b`, when given, are the packings of the whole operand
// of which `a` is rows [a_line0, ...) / `b` is columns [b_line0, ...); the other operand is
// packed here, block by block.
CTNN_BF16_TARGET inline void product(const MatRef& a, const MatRef& b, float* c, Eigen::Index ldc, bool accumulate,
                                     const Packed& whole_a = {}, Eigen::Index a_line0 = 0, const Packed& whole_b = {},
                                     Eigen::Index b_line0 = 0) {
  const Eigen::Index m = a.out_rows(), k = a.out_cols(), n = b.out_cols();
  std::uint32_t* ap = whole_a.data ? nullptr : panel_buffer(0, static_cast<std::size_t>(kMc + kMr) * (kKc / 2));
  std::uint32_t* bp = whole_b.data ? nullptr : panel_buffer(1, static_cast<std::size_t>(kNc + kNr) * (kKc / 2));
  for (Eigen::Index j0 = 0; j0 < n; j0 += kNc) {
    const Eigen::Index nc = std::min(kNc, n - j0);
    for (Eigen::Index k0 = 0; k0 < k; k0 += kKc) {
      const Eigen::Index kc = std::min(kKc, k - k0), pairs = (kc + 1) / 2;
      const std::uint32_t* bpan = whole_b.data ? packed_at<kNr>(whole_b, b_line0 + j0, k0, kc) : bp;
      if (!whole_b.data) pack_panels<kNr>(source_of_b(b), j0, nc, k0, kc, bp);
      for (Eigen::Index i0 = 0; i0 < m; i0 += kMc) {
        const Eigen::Index mc = std::min(kMc, m - i0);
        const std::uint32_t* apan = whole_a.data ? packed_at<kMr>(whole_a, a_line0 + i0, k0, kc) : ap;
        if (!whole_a.data) pack_panels<kMr>(source_of_a(a), i0, mc, k0, kc, ap);
        for (Eigen::Index jr = 0; jr < nc; jr += kNr)
          for (Eigen::Index ir = 0; ir < mc; ir += kMr)
            micro_kernel(pairs, apan + ir * pairs, bpan + jr * pairs, c + (i0 + ir) + (j0 + jr) * ldc, ldc,
                         static_cast<int>(std::min(kMr, mc - ir)), static_cast<int>(std::min(kNr, nc - jr)),
                         accumulate || k0 > 0);
      }
    }
  }
}

}  // namespace detail::bf16
#endif

namespace detail::bf16 {
// Throws where the kernel cannot run, before any instruction the CPU lacks. Autocast refuses
// bf16 there already; this guards direct calls.
inline void require_kernel() {
  static const bool available = bf16_unavailable_reason().empty();
  if (!available) throw std::runtime_error(bf16_unavailable_reason());
}
}  // namespace detail::bf16

// C (m x n, leading dimension ldc) = A * B, or += when `accumulate`, with A and B rounded to
// bf16 and fp32 sums, on the calling thread. Throws std::runtime_error on a CPU without
// AVX512_BF16 (ops/precision.hpp's Autocast refuses bf16 there up front).
inline void gemm_bf16_serial(const MatRef& a, const MatRef& b, float* c, Eigen::Index ldc, bool accumulate) {
  detail::bf16::require_kernel();
  if (a.out_rows() == 0 || b.out_cols() == 0) return;
#if CTNN_HAVE_BF16_KERNEL
  if (a.out_cols() == 0) {
    if (!accumulate)
      for (Eigen::Index j = 0; j < b.out_cols(); ++j) std::fill_n(c + j * ldc, a.out_rows(), 0.0f);
    return;
  }
  detail::bf16::product(a, b, c, ldc, accumulate);
#else
  (void)c, (void)ldc, (void)accumulate;
#endif
}

// C = A * B (or +=) in bf16 cut into `blocks` blocks of rows (split_rows) or columns,
// shared out over ctnn's threads. The operand every block reads whole is packed once, by all
// threads, instead of once per block. Results are gemm_bf16_serial's, bit for bit, at any
// thread count: packing only rounds and moves values.
inline void gemm_bf16_blocks(const MatRef& a, const MatRef& b, float* c, Eigen::Index ldc, bool accumulate,
                             bool split_rows, Eigen::Index blocks) {
  detail::bf16::require_kernel();
#if CTNN_HAVE_BF16_KERNEL
  using namespace detail::bf16;
  const Eigen::Index m = a.out_rows(), k = a.out_cols(), n = b.out_cols(), extent = split_rows ? m : n;
  if (blocks <= 1 || k == 0) return gemm_bf16_serial(a, b, c, ldc, accumulate);
  // The shared operand is used whole by every block, so block edges need not meet panel edges.
  std::uint32_t* whole = panel_buffer(2, split_rows ? packed_words<kNr>(n, k) : packed_words<kMr>(m, k));
  const Packed shared = split_rows ? pack_whole<kNr>(source_of_b(b), n, k, whole) : pack_whole<kMr>(source_of_a(a), m, k, whole);
#pragma omp parallel for schedule(dynamic, 1)
  for (Eigen::Index i = 0; i < blocks; ++i) {
    const Eigen::Index s = detail::block_start(i, blocks, extent);
    const Eigen::Index l = detail::block_start(i + 1, blocks, extent) - s;
    if (split_rows) {
      const MatRef rows = a.transposed ? MatRef{a.data + s * a.ld, a.rows, l, a.ld, true} : MatRef{a.data + s, l, a.cols, a.ld};
      product(rows, b, c + s, ldc, accumulate, {}, 0, shared, 0);
    } else {
      const MatRef cols = b.transposed ? MatRef{b.data + s, l, b.cols, b.ld, true} : MatRef{b.data + s * b.ld, b.rows, l, b.ld};
      product(a, cols, c + s * ldc, ldc, accumulate, shared, 0, {}, s);
    }
  }
#else
  (void)a, (void)b, (void)c, (void)ldc, (void)accumulate, (void)split_rows, (void)blocks;
#endif
}

}  // namespace ctnn::ops
