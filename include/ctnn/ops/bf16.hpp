// bf16 products with fp32 accumulation, for the bf16 precision policy (ops/precision.hpp).
//
// C (fp32) = A * B or C += A * B where every element of A and B is first rounded to bfloat16
// (round to nearest even, as PyTorch's float -> bfloat16 conversion) and the products are
// summed in fp32: the arithmetic of PyTorch's autocast convolutions and linear layers on a CPU.
//
// The kernels are ctnn's own, three of them, chosen at run time from cpuid (bf16_kernel()):
// - AMX (Intel Sapphire Rapids and later): TDPBF16PS multiplies a 16 x 32 bf16 tile by a
//   32 x 16 one into a 16 x 16 fp32 tile, 8192 multiply-adds per instruction. Linux hands out the
//   tile registers only on request (arch_prctl ARCH_REQ_XCOMP_PERM), made once per process.
// - AVX512_BF16 (AMD Zen 4 and later, Intel Cooper Lake and later): VDPBF16PS multiplies pairs of
//   bf16 values and adds both products to one fp32 lane, twice the multiply-adds of an fp32 FMA
//   per instruction.
// - portable, on every other CPU: the operands are copied rounded to bf16 (as floats) and
//   multiplied by ctnn's fp32 kernel (ops/sgemm.hpp). The product of two bf16 values is exact in
//   fp32, so one FMA adds it to the sum with one rounding, as each half of VDPBF16PS does (which
//   also reads and writes subnormals as zero): the same arithmetic, slower than fp32 (the
//   copies), so that a bf16 run can be reproduced on any machine and its tests run everywhere.
// The first two sum each pair of products into the fp32 sum in k order, so all three agree
// closely (not bit for bit: their k-blocks differ). Each of the first two is compiled for its
// instruction set with a function attribute, so a program built for any x86-64 CPU runs it where
// the CPU has it and never executes it (SIGILL) where it has not. Their packed operands take half
// fp32's memory traffic.
//
// Layout (the classic packed GEMM): the operands are copied, rounded, into panels whose inner
// pairs are consecutive k: A in panels of kMr = 32 rows ([k/2][32 rows] of bf16 pairs, two
// 512-bit registers per pair of k), B in panels of kNr = 12 columns ([k/2][12 columns] of pairs,
// each broadcast to a register). A 32 x 12 block of C lives in 24 registers for a whole k-block.
// Cache blocks: kKc values of k (the B micro-panel, 12 x 384 bf16 = 9 KiB, stays in L1), kMc
// rows of A (192 x 384 bf16 = 144 KiB in L2), kNc columns of B. Packing converts while it
// copies, so rounding to bf16 costs no pass of its own. The AMX kernel's layout is described
// with it (detail::amx).
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdlib>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "ctnn/core/tensor.hpp"
#include "ctnn/core/threading.hpp"
#include "ctnn/ops/cpu.hpp"
#include "ctnn/ops/im2col.hpp"
#include "ctnn/ops/matrix.hpp"
#include "ctnn/ops/sgemm.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define CTNN_HAVE_BF16_KERNEL 1
#include <cpuid.h>
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
// Functions compiled for AVX512_BF16 whatever the translation unit's -march: they run only
// after bf16_support() found the instructions.
#define CTNN_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define CTNN_AMX_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))
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
  bool amx_bf16 = false;     // AMX tiles with bf16 (Sapphire Rapids and later), usable here
  const char* amx_missing = "";  // when the CPU has AMX-BF16 but it is not usable: why
};

namespace detail::bf16 {
// Asks Linux for the AMX tile data state (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA): a
// process that uses the tiles without it is killed with SIGILL. Once per process; the grant
// covers all its threads.
inline bool amx_permitted() {
#if CTNN_HAVE_BF16_KERNEL && defined(__linux__)
  static const bool granted = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
  return granted;
#else
  return false;
#endif
}
}  // namespace detail::bf16

inline Bf16Support bf16_support() {
  Bf16Support s;
#if CTNN_HAVE_BF16_KERNEL
  __builtin_cpu_init();
  // __builtin_cpu_supports checks that the OS saves the AVX-512 state too (XCR0).
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl");
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) s.avx512_bf16 = avx512 && ((a >> 5) & 1u);
  // AMX-BF16 and AMX-TILE (cpuid 7.0 EDX bits 22 and 24); the kernel also uses AVX512_BF16 to
  // pack, which every AMX CPU has.
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && ((d >> 22) & 1u) && ((d >> 24) & 1u) && s.avx512_bf16) {
    s.amx_bf16 = detail::bf16::amx_permitted();
    if (!s.amx_bf16) s.amx_missing = "the operating system did not grant the AMX tile state (arch_prctl)";
  }
#endif
  return s;
}

// The kernels bf16 products can run on.
enum class Bf16Kernel { avx512_bf16, amx, portable };

inline const char* bf16_kernel_name(Bf16Kernel k) {
  return k == Bf16Kernel::amx ? "AMX" : k == Bf16Kernel::avx512_bf16 ? "AVX512_BF16" : "portable";
}

// Empty when kernel `k` can run on a CPU with support `s`, else the one line that says why not.
inline std::string bf16_kernel_unavailable(Bf16Kernel k, const Bf16Support& s = bf16_support()) {
  if (k == Bf16Kernel::amx && !s.amx_bf16)
    return std::string("the AMX bf16 kernel cannot run here: ") + (*s.amx_missing ? s.amx_missing : "the CPU has no AMX-BF16");
  if (k == Bf16Kernel::avx512_bf16 && !s.avx512_bf16) {
    const std::string model = cpu_model_name();
    return "the AVX512_BF16 kernel cannot run here: this CPU" + (model.empty() ? std::string() : " (" + model + ")") +
           " has no AVX512_BF16 (AMD Zen 4 or later, Intel Cooper Lake, Sapphire Rapids or later)";
  }
  return {};
}

struct Bf16Choice {
  Bf16Kernel kernel;
  std::string note;  // empty, or why CTNN_BF16_KERNEL was not followed ("; CTNN_BF16_KERNEL=... ignored: ...")
};

// The choice as a function of the facts alone (every case in tests/test_bf16.cpp): AMX where
// usable, else AVX512_BF16, else the portable kernel. CTNN_BF16_KERNEL ("amx", "avx512_bf16" or
// "portable") chooses another one where it can run, for comparisons and tests; a kernel the CPU
// cannot run, or any other value, is ignored, and the note says so, as CTNN_GEMM's does: a
// figure measured on another kernel than the one asked for must not pass unnoticed.
inline Bf16Choice choose_bf16_kernel(const Bf16Support& s, std::string_view forced) {
  const Bf16Kernel best = s.amx_bf16 ? Bf16Kernel::amx : s.avx512_bf16 ? Bf16Kernel::avx512_bf16 : Bf16Kernel::portable;
  if (forced.empty()) return {best, {}};
  const std::string asked = "; CTNN_BF16_KERNEL='" + std::string(forced) + "' ignored";
  Bf16Kernel k{};
  if (forced == "amx") k = Bf16Kernel::amx;
  else if (forced == "avx512_bf16") k = Bf16Kernel::avx512_bf16;
  else if (forced == "portable") k = Bf16Kernel::portable;
  else return {best, asked + " (amx, avx512_bf16 or portable)"};
  if (const std::string why = bf16_kernel_unavailable(k, s); !why.empty()) return {best, asked + ": " + why};
  return {k, {}};
}

namespace detail::bf16 {
// Decided once, on first use, from cpuid and CTNN_BF16_KERNEL; set_bf16_kernel changes the kernel.
inline const Bf16Choice& env_choice() {
  static const Bf16Choice choice = [] {
    const char* forced = std::getenv("CTNN_BF16_KERNEL");
    return choose_bf16_kernel(bf16_support(), forced ? forced : "");
  }();
  return choice;
}
inline std::atomic<Bf16Kernel>& kernel_state() {
  static std::atomic<Bf16Kernel> k{env_choice().kernel};
  return k;
}
}  // namespace detail::bf16

// The kernel bf16 products run on now.
inline Bf16Kernel bf16_kernel() { return detail::bf16::kernel_state().load(std::memory_order_relaxed); }

// Chooses the kernel (tests and benchmarks compare them); throws std::runtime_error where the
// CPU cannot run it. Not while products run.
inline void set_bf16_kernel(Bf16Kernel k) {
  if (const std::string why = bf16_kernel_unavailable(k); !why.empty()) throw std::runtime_error(why);
  detail::bf16::kernel_state().store(k, std::memory_order_relaxed);
}

// One line for programs to print beside their figures: the kernel, on the portable one that it
// brings bf16's arithmetic, not its speed, and a CTNN_BF16_KERNEL that was not followed.
inline std::string bf16_kernel_summary() {
  const Bf16Support s = bf16_support();
  const Bf16Kernel k = bf16_kernel();
  const std::string line = [&]() -> std::string {
    if (k == Bf16Kernel::portable) {
      const std::string portable = "bf16: ctnn's portable kernel (operands rounded to bf16, fp32 FMAs): bf16's "
                                   "arithmetic, not its speed";
      return portable + (s.avx512_bf16 ? ", chosen by CTNN_BF16_KERNEL; this CPU has AVX512_BF16"
                                       : "; this CPU has no AVX512_BF16 or AMX");
    }
    const std::string fast = std::string("bf16: ctnn's ") + bf16_kernel_name(k) + " kernels (fp32 accumulation)";
    if (k == Bf16Kernel::amx) return fast + " (CTNN_BF16_KERNEL=avx512_bf16 for the AVX512_BF16 ones)";
    if (s.amx_bf16) return fast + ", chosen by CTNN_BF16_KERNEL; this CPU has AMX-BF16";
    return fast + (*s.amx_missing ? std::string("; AMX-BF16 unusable: ") + s.amx_missing : std::string("; no AMX on this CPU"));
  }();
  return line + detail::bf16::env_choice().note;
}

#if CTNN_HAVE_BF16_KERNEL
// GCC 12 warns "'__Y' may be used uninitialized" (at -O1 "is used uninitialized") wherever an
// AVX-512 intrinsic that takes _mm512_undefined_*() as its pass-through (unpack, permute, ...)
// is inlined into a function: the intrinsic header's deliberate self-initialisation, not a fault
// of this code. Silenced here, in the kernels only, so that a user's -Wall build stays clean
// (tests/consumer builds with -Werror).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
namespace detail::bf16 {

inline constexpr Eigen::Index kMr = 32, kNr = 12, kKc = 384, kMc = 192, kNc = 1536;

// 32 floats rounded to bf16, in order: lo's 16, then hi's. VCVTNE2PS2BF16 rounds to nearest
// even as to_bf16_bits does; it differs only in what the products read as zero anyway
// (subnormals: VDPBF16PS and TDPBF16PS treat subnormal inputs as zero) and in a NaN's payload
// (it stays a NaN). One instruction where rounding by integer arithmetic took seven per 16.
CTNN_BF16_TARGET inline __m512i round32(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }

// Two rows of 16 values rounded into 16 pairs: lane i holds lo[i] in its low half, hi[i] above.
CTNN_BF16_TARGET inline __m512i round_pairs(__m512 lo, __m512 hi) {
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                              6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, round32(lo, hi));
}

// out[c * out_stride + r] = in[r * 16 + c] for a 16 x 16 block of 32-bit words: pairs of bf16
// moved from lines to panels. Interleaves 32-bit, then 64-bit words of row pairs, so that each
// 128-bit lane of u[e] holds column 4L + e of four rows, then gathers the four lanes of a column.
CTNN_BF16_TARGET inline void transpose16(const std::uint32_t* in, std::uint32_t* out, Eigen::Index out_stride) {
  __m512i r[16], t[16], u[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_load_si512(in + 16 * i);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int g = 0; g < 16; g += 4) {
    u[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
    u[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
    u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
    u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
  }
  for (int e = 0; e < 4; ++e) {
    const __m512i x_lo = _mm512_shuffle_i32x4(u[e], u[4 + e], 0x44), x_hi = _mm512_shuffle_i32x4(u[e], u[4 + e], 0xee);
    const __m512i y_lo = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0x44),
                  y_hi = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0xee);
    _mm512_storeu_si512(out + e * out_stride, _mm512_shuffle_i32x4(x_lo, y_lo, 0x88));
    _mm512_storeu_si512(out + (4 + e) * out_stride, _mm512_shuffle_i32x4(x_lo, y_lo, 0xdd));
    _mm512_storeu_si512(out + (8 + e) * out_stride, _mm512_shuffle_i32x4(x_hi, y_hi, 0x88));
    _mm512_storeu_si512(out + (12 + e) * out_stride, _mm512_shuffle_i32x4(x_hi, y_hi, 0xdd));
  }
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
          const __m512 lo = _mm512_maskz_loadu_ps(valid, row + 16 * h);
          const __m512 hi = two ? _mm512_maskz_loadu_ps(valid, row + src.ld + 16 * h) : _mm512_setzero_ps();
          _mm512_mask_storeu_epi32(out + 16 * h, first_lanes(W - 16 * h), round_pairs(lo, hi));
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
        _mm512_store_si512(block[l], round32(_mm512_maskz_loadu_ps(first_lanes(left), line),
                                             _mm512_maskz_loadu_ps(first_lanes(left - 16), line + 16)));
      }
      const Eigen::Index np = std::min<Eigen::Index>(16, pairs - p0);
      if constexpr (W % 16 == 0) {
        // Whole 16 x 16 transpositions; the last pairs of a line through a block on the stack.
        alignas(64) std::uint32_t rows[16][W];
        std::uint32_t* to = np == 16 ? out : &rows[0][0];
        for (int h = 0; h < W; h += 16) transpose16(&block[h][0], to + h, W);
        if (np < 16) std::copy_n(&rows[0][0], np * W, out);
        out += np * W;
      } else {
        for (Eigen::Index p = 0; p < np; ++p, out += W)
          for (int l = 0; l < W; ++l) out[l] = block[l][p];
      }
    }
  }
}

// C[0:mr, 0:nr] (leading dimension ldc) = (add ? C : 0) + the product of one A micro-panel and
// one B micro-panel over `pairs` pairs of k.
CTNN_BF16_TARGET inline void micro_kernel(Eigen::Index pairs, const std::uint32_t* ap, const std::uint32_t* bp,
                                          float* c, Eigen::Index ldc, int mr, int nr, bool add) {
  // The loops over the 12 columns are unrolled on request, so that c0 and c1 stay in registers:
  // GCC kept them on the stack, zeroed by two memset calls per block (3 % of a ResNet50_layer4
  // evaluation step under bf16 on AMD Zen 4; products with k of 64-256 10 % slower).
  __m512 c0[kNr], c1[kNr];
#pragma GCC unroll 12
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
#pragma GCC unroll 12
  for (int j = 0; j < kNr; ++j) {
    if (j >= nr) continue;
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
  // 0, 1: the operands packed block by block; 2: a product's shared operand; 3: Bf16PackedB.
  thread_local std::vector<std::uint32_t, Eigen::aligned_allocator<std::uint32_t>> buffers[4];
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
  CTNN_OMP(parallel for schedule(dynamic, 1) if (kblocks * groups > 1))
  for (Eigen::Index t = 0; t < kblocks * groups; ++t) {
    const Eigen::Index k0 = (t / groups) * kKc, kc = std::min(kKc, k - k0), l0 = (t % groups) * 8 * W;
    pack_panels<W>(src, l0, std::min<Eigen::Index>(8 * W, lines - l0), k0, kc,
                   const_cast<std::uint32_t*>(packed_at<W>(p, l0, k0, kc)));
  }
  return p;
}

// A's rows as product() packs them from a matrix: pack_panels (a functor, not a lambda: a
// lambda would not inherit the target attribute).
struct MatrixPanels {
  PanelSource src;
  CTNN_BF16_TARGET void operator()(Eigen::Index l0, Eigen::Index count, Eigen::Index k0, Eigen::Index kc,
                                   std::uint32_t* out) const {
    pack_panels<kMr>(src, l0, count, k0, kc, out);
  }
};

// C = A * B (+ C), A being m x k rows that pack_a(l0, count, k0, kc, out) packs as pack_panels
// does. `whole_a` / `whole_b`, when given, are the packings of the whole operand of which A is
// rows [a_line0, ...) / `b` is columns [b_line0, ...); the other operand is packed here, block by
// block.
template <class PackA>
CTNN_BF16_TARGET inline void product(const PackA& pack_a, Eigen::Index m, Eigen::Index k, const MatRef& b, float* c,
                                     Eigen::Index ldc, bool accumulate, const Packed& whole_a, Eigen::Index a_line0,
                                     const Packed& whole_b, Eigen::Index b_line0) {
  const Eigen::Index n = b.out_cols();
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
        if (!whole_a.data) pack_a(i0, mc, k0, kc, ap);
        for (Eigen::Index jr = 0; jr < nc; jr += kNr)
          for (Eigen::Index ir = 0; ir < mc; ir += kMr)
            micro_kernel(pairs, apan + ir * pairs, bpan + jr * pairs, c + (i0 + ir) + (j0 + jr) * ldc, ldc,
                         static_cast<int>(std::min(kMr, mc - ir)), static_cast<int>(std::min(kNr, nc - jr)),
                         accumulate || k0 > 0);
      }
    }
  }
}

CTNN_BF16_TARGET inline void product(const MatRef& a, const MatRef& b, float* c, Eigen::Index ldc, bool accumulate,
                                     const Packed& whole_a = {}, Eigen::Index a_line0 = 0, const Packed& whole_b = {},
                                     Eigen::Index b_line0 = 0) {
  product(MatrixPanels{source_of_a(a)}, a.out_rows(), a.out_cols(), b, c, ldc, accumulate, whole_a, a_line0, whole_b,
          b_line0);
}

// C (m x n) = A * B (or +=) for an A whose rows a packer reads from elsewhere (rows_from(s): the
// packer of A's rows from s on): B packed once, by all threads; C's rows cut into one block of
// whole panels per thread, each packing its own rows of A. The bits of gemm_bf16_serial on the A
// the packer reads, at any thread count.
template <class RowsFrom>
inline void product_by_row_blocks(const RowsFrom& rows_from, Eigen::Index m, const MatRef& b, float* c,
                                  Eigen::Index ldc, bool accumulate) {
  const Eigen::Index k = b.out_rows(), n = b.out_cols();
  const Packed shared = pack_whole<kNr>(source_of_b(b), n, k, panel_buffer(2, packed_words<kNr>(n, k)));
  const Eigen::Index panels = (m + kMr - 1) / kMr,
                     blocks = std::min(panels, ops::detail::thread_block_count(m, static_cast<long>(m) * n * k, num_threads()));
  CTNN_OMP(parallel for schedule(dynamic, 1) if (blocks > 1))
  for (Eigen::Index i = 0; i < blocks; ++i) {
    const Eigen::Index s = i * panels / blocks * kMr, e = std::min(m, (i + 1) * panels / blocks * kMr);
    product(rows_from(s), e - s, k, b, c + s, ldc, accumulate, {}, 0, shared, 0);
  }
}

}  // namespace detail::bf16

// The AMX kernel. Eight tile registers of 16 rows x 64 bytes: four hold a 32 x 32 block of C in
// fp32, two hold B's lines (16 lines x 32 values of k each), two hold A's rows (16 pairs of k x
// 16 rows of pairs). TDPBF16PS multiplies tiles as Ct[r][c] += sum over pairs p of
// L[r][2p..2p+1] . R[p][c's pair], so with r a column of our C and c a row, a C tile row is 16
// consecutive floats of one column of C: tiles load and store C (column-major) in place, and
// A's panels ([k/2][32 rows] of pairs, pack_panels<32>) are already the right-hand operand's
// layout, half a panel per tile. B's lines are packed per 16 lines and 32 values of k into
// one 1 KiB tile ([16 lines][16 pairs]). k is padded with zeros to a multiple of 32.
namespace detail::amx {

using bf16::PanelSource;
using Index = Eigen::Index;

// k-blocks of 256 (the micro-kernel's two 16 KiB operand panels stay in L1), row and line blocks
// in L2; all multiples of 32.
inline constexpr Index kKc = 256, kMc = 256, kNc = 512;

inline Index chunks_of(Index kc) { return (kc + 31) / 32; }

// GCC's tile intrinsics are asm statements that do not tell the compiler they touch memory:
// a barrier keeps packed stores before tile loads and tile stores before the reads of them.
inline void memory_barrier() { asm volatile("" ::: "memory"); }

CTNN_AMX_TARGET inline void load_tile_config() {
  struct alignas(64) Config {
    std::uint8_t palette, start_row, reserved[14];
    std::uint16_t colsb[16];
    std::uint8_t rows[16];
  };
  Config cfg{};
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  _tile_loadconfig(&cfg);
}

// Lines [l0, l0+count) of B (B's columns) and k [k0, k0+kc) as tiles: for each group of 16 lines
// (count rounded up to a multiple of 32, missing lines zero), its chunks of 32 k in turn.
CTNN_AMX_TARGET inline void pack_lines(const PanelSource& src, Index l0, Index count, Index k0, Index kc,
                                       std::uint32_t* out) {
  const Index chunks = chunks_of(kc), groups = (count + 31) / 32 * 2;
  const __m512i rows16 = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(16));
  for (Index g = 0; g < groups; ++g)
    for (Index q = 0; q < chunks; ++q) {
      std::uint32_t* tile = out + (g * chunks + q) * 256;
      const Index left = kc - 32 * q;  // values of k from this chunk's first on
      if (src.k_contiguous) {
        // A line's 32 values of k are contiguous: rounded, they are its tile row.
        for (Index r = 0; r < 16; ++r) {
          const Index l = g * 16 + r;
          __m512i row = _mm512_setzero_si512();
          if (l < count) {
            const float* line = src.data + (k0 + 32 * q) + (l0 + l) * src.ld;
            row = bf16::round32(_mm512_maskz_loadu_ps(bf16::first_lanes(left), line),
                                _mm512_maskz_loadu_ps(bf16::first_lanes(left - 16), line + 16));
          }
          _mm512_storeu_si512(tile + 16 * r, row);
        }
        continue;
      }
      // Lines are contiguous for each k: a pair of k for 16 lines is a tile column, scattered.
      const __mmask16 valid = bf16::first_lanes(count - 16 * g);
      for (Index p = 0; p < 16; ++p) {
        const Index k = 32 * q + 2 * p;
        __m512i pair = _mm512_setzero_si512();
        if (k < kc) {
          const float* row = src.data + (l0 + 16 * g) + (k0 + k) * src.ld;
          pair = bf16::round_pairs(_mm512_maskz_loadu_ps(valid, row),
                                   k + 1 < kc ? _mm512_maskz_loadu_ps(valid, row + src.ld) : _mm512_setzero_ps());
        }
        _mm512_i32scatter_epi32(tile + p, rows16, pair, 4);
      }
    }
}

// Rows [l0, l0+count) of A and k [k0, k0+kc) as panels of 32 rows: [chunks * 16 pairs][32 rows].
CTNN_AMX_TARGET inline void pack_rows(const PanelSource& src, Index l0, Index count, Index k0, Index kc,
                                      std::uint32_t* out) {
  const Index pairs = (kc + 1) / 2, padded = chunks_of(kc) * 16;
  for (Index r = 0; r < count; r += 32, out += padded * 32) {
    bf16::pack_panels<32>(src, l0 + r, std::min<Index>(32, count - r), k0, kc, out);
    std::fill(out + pairs * 32, out + padded * 32, 0u);
  }
}

// The rows of a convolution's patch matrix (im2col's, ops/im2col.hpp, for the whole batch x)
// packed as pack_rows packs that matrix, bit for bit, but read from x itself: the fp32 patch
// matrix is never written. With stride 1, the rows of one output row are, for each value of k,
// a shifted run of one input row: each half of a panel (16 rows) is one masked load per run of
// it that lies in one output row, per value of k (one run for planes 16 wide or wider).
struct ConvRows {
  const float* x;
  ConvGeometry g;
  Index row0;  // the patch matrix's row (of the whole batch) that is this operand's first
};

inline bool conv_rows_fusable(const ConvGeometry& g) { return g.stride == 1; }

// Up to 32 consecutive rows of a stride-1 patch matrix cut into runs that lie in one output row
// and one 16-lane half: for each value of k, a run reads consecutive input values.
struct PatchRun {
  long at;     // x's offset of the run's first value at kernel offset (0, 0), channel 0
  int oy, ox;  // its first output pixel
  int lane, lanes, half;
};
struct PatchRuns {
  PatchRun run[32];
  int count = 0;

  // Rows [row, row + rows) of the patch matrix, rows <= 32.
  PatchRuns(const ConvGeometry& g, Index row, Index rows) {
    const int ow = g.out_width, plane = g.out_plane();
    const long in_plane = static_cast<long>(g.height) * g.width;
    for (int lane = 0; lane < rows;) {
      const int img = static_cast<int>((row + lane) / plane), pixel = static_cast<int>((row + lane) % plane);
      const int oy = pixel / ow, ox = pixel % ow;
      const int lanes = static_cast<int>(std::min<Index>({ow - ox, 16 - lane % 16, rows - lane}));
      run[count++] = {img * in_plane + static_cast<long>(oy - g.padding) * g.width + (ox - g.padding), oy, ox,
                      lane % 16, lanes, lane / 16};
      lane += lanes;
    }
  }

  // The rows' values of one patch element: `at` is the element's offset in x (channel * channel
  // stride + ky * width + kx); values in the padding stay v's (zeros).
  CTNN_AMX_TARGET void load(const ConvGeometry& g, const float* x, long at, int ky, int kx, __m512 (&v)[2]) const {
    for (int i = 0; i < count; ++i) {
      const PatchRun& u = run[i];
      const int iy = u.oy - g.padding + ky, ix = u.ox - g.padding + kx;
      if (iy < 0 || iy >= g.height) continue;
      // Lanes lane + j, j < lanes, read input column ix + j: those inside the plane.
      const int lo = u.lane + std::max(0, -ix), hi = u.lane + std::min(u.lanes, g.width - ix);
      if (lo >= hi) continue;
      const __mmask16 m = static_cast<__mmask16>((1u << hi) - (1u << lo));
      v[u.half] = _mm512_mask_loadu_ps(v[u.half], m, x + (at + u.at - u.lane));
    }
  }
};

CTNN_AMX_TARGET inline void pack_conv_rows(const ConvRows& a, Index r0, Index count, Index k0, Index kc,
                                           std::uint32_t* out) {
  const ConvGeometry& g = a.g;
  const int kk = g.kernel * g.kernel;
  const long channel = static_cast<long>(g.in_channel_stride());
  const Index pairs = (kc + 1) / 2, padded = chunks_of(kc) * 16;
  for (Index r = 0; r < count; r += 32, out += padded * 32) {
    const PatchRuns runs(g, a.row0 + r0 + r, std::min<Index>(32, count - r));
    // k = (channel, ky, kx), stepped along without divisions; `at` is its offset in x.
    int ky = static_cast<int>(k0 % kk) / g.kernel, kx = static_cast<int>(k0 % kk) % g.kernel;
    long at = (k0 / kk) * channel + ky * g.width + kx;
    for (Index p = 0; p < pairs; ++p) {
      __m512 v[2][2] = {{_mm512_setzero_ps(), _mm512_setzero_ps()}, {_mm512_setzero_ps(), _mm512_setzero_ps()}};
      for (int e = 0; e < 2 && 2 * p + e < kc; ++e) {
        runs.load(g, a.x, at, ky, kx, v[e]);
        ++at;
        if (++kx == g.kernel) {
          kx = 0;
          at += g.width - g.kernel;
          if (++ky == g.kernel) {
            ky = 0;
            at += channel - static_cast<long>(g.kernel) * g.width;
          }
        }
      }
      _mm512_storeu_si512(out + p * 32, bf16::round_pairs(v[0][0], v[1][0]));
      _mm512_storeu_si512(out + p * 32 + 16, bf16::round_pairs(v[0][1], v[1][1]));
    }
    std::fill(out + pairs * 32, out + padded * 32, 0u);
  }
}

// The columns of the same patch matrix as A's rows (A = P^T, for weight gradients: line l is the
// patch element (channel, ky, kx), k runs over P's rows from row0), packed as pack_rows packs
// P^T, bit for bit, read from x itself. For each chunk of 32 k, its runs (PatchRuns) are found
// once; each line is then one masked load per run, its 32 values rounded into 16 pairs, and
// each 16 lines transposed into the panel.
struct ConvCols {
  const float* x;
  ConvGeometry g;
  Index row0;
};

CTNN_AMX_TARGET inline void pack_conv_cols(const ConvCols& a, Index l0, Index count, Index k0, Index kc,
                                           std::uint32_t* out) {
  const ConvGeometry& g = a.g;
  const int kk = g.kernel * g.kernel;
  const long channel = static_cast<long>(g.in_channel_stride());
  const Index chunks = chunks_of(kc);
  alignas(64) std::uint32_t block[32][16];
  for (Index r = 0; r < count; r += 32, out += chunks * 16 * 32) {
    const int lines = static_cast<int>(std::min<Index>(32, count - r));
    for (Index q = 0; q < chunks; ++q) {
      const PatchRuns runs(g, a.row0 + k0 + 32 * q, std::min<Index>(32, kc - 32 * q));
      for (int l = 0; l < 32; ++l) {
        __m512 v[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
        if (l < lines) {
          const int p = static_cast<int>(l0 + r + l), ky = (p % kk) / g.kernel, kx = p % g.kernel;
          runs.load(g, a.x, (p / kk) * channel + ky * g.width + kx, ky, kx, v);
        }
        _mm512_store_si512(block[l], bf16::round32(v[0], v[1]));
      }
      bf16::transpose16(&block[0][0], out + q * 16 * 32, 32);
      bf16::transpose16(&block[16][0], out + q * 16 * 32 + 16, 32);
    }
  }
}

// Tiles 0-3 += tile 4 x tile 6, 4 x 7, 5 x 6 and 5 x 7: tiles 4 and 5 the left-hand operands
// loaded from l0 and l1, 6 and 7 the right-hand ones from r0 and r1 (row strides in bytes). Every
// AMX kernel's inner step: four products for four tile loads.
CTNN_AMX_TARGET inline void tile_products(const void* l0, const void* l1, long lstride, const void* r0, const void* r1,
                                          long rstride) {
  _tile_loadd(4, l0, lstride);
  _tile_loadd(5, l1, lstride);
  _tile_loadd(6, r0, rstride);
  _tile_loadd(7, r1, rstride);
  _tile_dpbf16ps(0, 4, 6);
  _tile_dpbf16ps(1, 4, 7);
  _tile_dpbf16ps(2, 5, 6);
  _tile_dpbf16ps(3, 5, 7);
}

// C[0:mr, 0:nr] (leading dimension ldc) = (add ? C : 0) + one A panel times one pair of B's line
// groups, over `chunks` chunks of 32 k. Needs the tile configuration loaded. An edge block goes
// through a 32 x 32 block on the stack (columns of 32 floats) and is summed in the same order as
// a whole one, C first, so that where a product's blocks start never changes a bit.
CTNN_AMX_TARGET inline void micro_kernel(Index chunks, const std::uint32_t* ap, const std::uint32_t* bl, float* c,
                                         Index ldc, int mr, int nr, bool add) {
  const bool whole = mr == 32 && nr == 32;
  alignas(64) float block[32 * 32];
  float* const t = whole ? c : block;
  const long ld = whole ? static_cast<long>(ldc * sizeof(float)) : 128;
  const Index ldt = whole ? ldc : 32;
  const __mmask16 m0 = bf16::first_lanes(mr), m1 = bf16::first_lanes(mr - 16);
  if (!whole && add)
    for (int j = 0; j < 32; ++j) {
      const bool in = j < nr;
      _mm512_store_ps(block + 32 * j, _mm512_maskz_loadu_ps(in ? m0 : 0, c + j * ldc));
      _mm512_store_ps(block + 32 * j + 16, _mm512_maskz_loadu_ps(in ? m1 : 0, c + j * ldc + 16));
    }
  memory_barrier();
  if (add) {
    _tile_loadd(0, t, ld);
    _tile_loadd(1, t + 16, ld);
    _tile_loadd(2, t + 16 * ldt, ld);
    _tile_loadd(3, t + 16 + 16 * ldt, ld);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  const std::uint32_t* bl1 = bl + chunks * 256;
  for (Index q = 0; q < chunks; ++q, ap += 16 * 32) tile_products(bl + q * 256, bl1 + q * 256, 64, ap, ap + 16, 128);
  _tile_stored(0, t, ld);
  _tile_stored(1, t + 16, ld);
  _tile_stored(2, t + 16 * ldt, ld);
  _tile_stored(3, t + 16 + 16 * ldt, ld);
  memory_barrier();
  if (whole) return;
  for (int j = 0; j < nr; ++j) {
    _mm512_mask_storeu_ps(c + j * ldc, m0, _mm512_load_ps(block + 32 * j));
    _mm512_mask_storeu_ps(c + j * ldc + 16, m1, _mm512_load_ps(block + 32 * j + 16));
  }
}

// Words of a whole operand of `lines` lines (rows or columns) by k, packed by pack_whole.
inline std::size_t packed_words(Index lines, Index k) {
  return static_cast<std::size_t>((lines + 31) / 32 * 32) * static_cast<std::size_t>(chunks_of(k) * 16);
}

// Where the pack of k-block [k0, ...) (k0 a multiple of kKc) of a whole operand starts: each
// earlier k-block holds `lines` rounded up to 32 lines of kKc values.
inline std::size_t whole_offset(Index lines, Index k0) {
  return static_cast<std::size_t>((lines + 31) / 32 * 32) * static_cast<std::size_t>(k0 / 2);
}

// Packs all `lines` x k of `src` into `out` (packed_words words), k-block by k-block, as
// product() would pack each block, with the calling team of threads when there is one.
template <bool Rows>
CTNN_AMX_TARGET inline void pack_whole(const PanelSource& src, Index lines, Index k, std::uint32_t* out) {
  const Index kblocks = (k + kKc - 1) / kKc, groups = (lines + 127) / 128;  // 128 lines a task
  CTNN_OMP(parallel for schedule(dynamic, 1) if (kblocks * groups > 1))
  for (Index t = 0; t < kblocks * groups; ++t) {
    const Index k0 = (t / groups) * kKc, kc = std::min(kKc, k - k0), l0 = (t % groups) * 128;
    std::uint32_t* at = out + whole_offset(lines, k0) + static_cast<std::size_t>(l0) * chunks_of(kc) * 16;
    if (Rows) pack_rows(src, l0, std::min<Index>(128, lines - l0), k0, kc, at);
    else pack_lines(src, l0, std::min<Index>(128, lines - l0), k0, kc, at);
  }
}

// A's rows as product() packs them: from a matrix (pack_rows), or from a convolution's input
// (pack_conv_rows).
struct MatrixRows {
  PanelSource src;
  CTNN_AMX_TARGET void operator()(Index r0, Index count, Index k0, Index kc, std::uint32_t* out) const {
    pack_rows(src, r0, count, k0, kc, out);
  }
};
struct PatchRows {
  ConvRows conv;
  CTNN_AMX_TARGET void operator()(Index r0, Index count, Index k0, Index kc, std::uint32_t* out) const {
    pack_conv_rows(conv, r0, count, k0, kc, out);
  }
};
struct PatchCols {
  ConvCols conv;
  Index line0;  // the patch element that is this block's first row
  CTNN_AMX_TARGET void operator()(Index r0, Index count, Index k0, Index kc, std::uint32_t* out) const {
    pack_conv_cols(conv, line0 + r0, count, k0, kc, out);
  }
};

// Rows of a GatheredMatrix (above), read from its table. In general, per panel, each half's
// lanes' offsets for every k % k_group are worked out once, then each pair of k is two gathers
// per half. Groups of 4 rows by 4 k (whole-plane 2x2 convolutions: Wd and Wd^T) go without
// gathers, which are slow where microcode guards them (Intel's Gather Data Sampling fix): the
// 16 values a row group and a k group share lie within 16 floats of src, one load permuted.
struct GatheredRows {
  GatheredMatrix a;
  Index line0;  // the matrix row that is this block's first
  // AMX's panels hold k in chunks of 32, the last one padded with zero pairs; the AVX512_BF16
  // kernel's hold (kc + 1) / 2 pairs (bf16::pack_panels's layout).
  bool chunked = true;
  Index padded_pairs(Index kc) const { return chunked ? chunks_of(kc) * 16 : (kc + 1) / 2; }
  // Only AVX-512 and AVX512_BF16 instructions: the AVX512_BF16 kernel packs with it too.
  CTNN_BF16_TARGET void operator()(Index r0, Index count, Index k0, Index kc, std::uint32_t* out) const {
    if (a.row_group == 4 && a.k_group == 4 && k0 % 4 == 0 && kc % 4 == 0 && (line0 + r0) % 4 == 0 && count % 4 == 0) {
      int reach = 0;
      alignas(64) int perm[16];
      for (int j = 0; j < 16; ++j) reach = std::max(reach, perm[j] = a.taps[j / 4 * a.tap_row + j % 4 * a.tap_k]);
      if (reach < 16) return by_groups_of_4(r0, count, k0, kc, out, _mm512_load_si512(perm), bf16::first_lanes(reach + 1));
    }
    const Index pairs = (kc + 1) / 2, padded = padded_pairs(kc);
    const int kg = a.k_group;
    alignas(64) int at[2][GatheredMatrix::kMaxGroup][16];
    for (Index r = 0; r < count; r += 32, out += padded * 32) {
      const int lines = static_cast<int>(std::min<Index>(32, count - r));
      for (int l = 0; l < 32; ++l) {
        const Index i = line0 + r0 + r + l;
        for (int t = 0; t < kg; ++t)
          at[l / 16][t][l % 16] =
              l < lines ? static_cast<int>((i / a.row_group) * a.row_step + a.taps[(i % a.row_group) * a.tap_row + t * a.tap_k])
                        : 0;
      }
      const __mmask16 valid[2] = {bf16::first_lanes(lines), bf16::first_lanes(lines - 16)};
      for (Index p = 0; p < padded; ++p)
        for (int h = 0; h < 2; ++h) {
          __m512i words = _mm512_setzero_si512();
          if (p < pairs)
            words = bf16::round_pairs(values(at[h], valid[h], k0 + 2 * p),
                                      2 * p + 1 < kc ? values(at[h], valid[h], k0 + 2 * p + 1) : _mm512_setzero_ps());
          _mm512_storeu_si512(out + p * 32 + 16 * h, words);
        }
    }
  }

  // Column k of 16 rows whose offsets for each k % k_group are `at` (a member function, not a
  // lambda: a lambda would not inherit the target attribute, and GCC would refuse the intrinsics
  // where the translation unit is not built for AVX-512).
  CTNN_BF16_TARGET __m512 values(const int (*at)[16], __mmask16 valid, Index k) const {
    const __m512i idx = _mm512_add_epi32(_mm512_load_si512(at[k % a.k_group]),
                                         _mm512_set1_epi32(static_cast<int>((k / a.k_group) * a.k_step)));
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, idx, a.src, 4);
  }

  // Row group u (rows 4u..4u+3) and k group j: lane 4 * (row % 4) + k % 4 of src's 16 floats
  // from (u * row_step + j * k_step) permuted by `perm`. Rounded two row groups to a register,
  // each row group's words are (row % 4, pair of k % 4) in order; a panel's 32 rows (8 groups)
  // for one pair of k are then the even or odd words of four such registers.
  CTNN_BF16_TARGET void by_groups_of_4(Index r0, Index count, Index k0, Index kc, std::uint32_t* out, __m512i perm,
                                       __mmask16 reach) const {
    const Index padded = padded_pairs(kc);
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (Index r = 0; r < count; r += 32, out += padded * 32) {
      const Index u0 = (line0 + r0 + r) / 4;
      const int units = static_cast<int>(std::min<Index>(8, (count - r) / 4));
      for (Index j = 0; j < kc / 4; ++j) {
        const float* at = a.src + (k0 / 4 + j) * a.k_step + u0 * a.row_step;
        __m512 v[8];
        for (int u = 0; u < 8; ++u)
          v[u] = u < units ? _mm512_permutexvar_ps(perm, _mm512_maskz_loadu_ps(reach, at + u * a.row_step))
                           : _mm512_setzero_ps();
        __m512i two[4];
        for (int t = 0; t < 4; ++t) two[t] = bf16::round32(v[2 * t], v[2 * t + 1]);
        std::uint32_t* pair = out + 2 * j * 32;
        _mm512_storeu_si512(pair, _mm512_permutex2var_epi32(two[0], even, two[1]));
        _mm512_storeu_si512(pair + 16, _mm512_permutex2var_epi32(two[2], even, two[3]));
        _mm512_storeu_si512(pair + 32, _mm512_permutex2var_epi32(two[0], odd, two[1]));
        _mm512_storeu_si512(pair + 48, _mm512_permutex2var_epi32(two[2], odd, two[3]));
      }
      std::fill(out + kc / 2 * 32, out + padded * 32, 0u);
    }
  }
};

// C (m x n) = A * B (or +=) for an A whose rows a packer reads from elsewhere (rows_from(s): the
// packer of A's rows from s on): B packed once, by all threads; C's rows cut into blocks of whole
// 32-row panels, shared out over ctnn's threads, each packing its own rows of A. The bits of
// gemm_bf16_serial on the A the packer reads, at any thread count.
template <class RowsFrom>
inline void product_by_row_blocks(const RowsFrom& rows_from, Index m, const MatRef& b, float* c, Index ldc,
                                  bool accumulate) {
  const Index k = b.out_rows(), n = b.out_cols();
  std::uint32_t* whole = bf16::panel_buffer(2, packed_words(n, k));
  amx::pack_whole<false>(bf16::source_of_b(b), n, k, whole);  // qualified: no lookup of bf16::pack_whole by argument
  const Index panels = (m + 31) / 32, blocks = std::min(panels, detail::block_count(m, static_cast<long>(m) * n * k));
  CTNN_OMP(parallel for schedule(dynamic, 1) if (blocks > 1))
  for (Index i = 0; i < blocks; ++i) {
    const Index s = i * panels / blocks * 32, e = std::min(m, (i + 1) * panels / blocks * 32);
    product(rows_from(s), e - s, k, b, c + s, ldc, accumulate, nullptr, whole);
  }
}

// The same product where A is a single panel (m <= 32: one row block, one thread) and C has
// columns to share (VGG16's first layer's weight gradient: 27 patch rows, 64 outputs, k = every
// position of the batch): A packed whole by all threads, k-block by k-block, then C's 32-column
// blocks shared out, each thread packing its own columns of B. Every C element sums the same
// packed products in the same order as gemm_bf16_serial: its bits.
template <class RowsFrom>
inline void product_by_column_blocks(const RowsFrom& rows_from, Index m, const MatRef& b, float* c, Index ldc,
                                     bool accumulate) {
  const Index k = b.out_rows(), n = b.out_cols(), kblocks = (k + kKc - 1) / kKc, blocks = (n + 31) / 32;
  std::uint32_t* whole = bf16::panel_buffer(2, packed_words(m, k));
  const auto pack = rows_from(0);
  CTNN_OMP(parallel)
  {
    CTNN_OMP(for schedule(static))
    for (Index t = 0; t < kblocks; ++t)
      pack(0, m, t * kKc, std::min(kKc, k - t * kKc), whole + whole_offset(m, t * kKc));
    CTNN_OMP(for schedule(dynamic, 1))
    for (Index j = 0; j < blocks; ++j) {
      const Index j0 = 32 * j;
      product(pack, m, k, detail::logical_cols(b, j0, std::min<Index>(32, n - j0)), c + j0 * ldc, ldc, accumulate,
              whole, nullptr);
    }
  }
}

// C = A * B (+ C) on the calling thread, A being m x k rows packed by `pack_a`. `whole_a` /
// `whole_b`, when given, are pack_whole's packings of all of A's rows / B's lines; the other
// operand is packed here, block by block.
template <class PackA>
CTNN_AMX_TARGET inline void product(const PackA& pack_a, Index m, Index k, const MatRef& b, float* c, Index ldc,
                                    bool accumulate, const std::uint32_t* whole_a, const std::uint32_t* whole_b) {
  const Index n = b.out_cols();
  std::uint32_t* ap = whole_a ? nullptr : bf16::panel_buffer(0, static_cast<std::size_t>(kMc) * (kKc / 2));
  std::uint32_t* bp = whole_b ? nullptr : bf16::panel_buffer(1, static_cast<std::size_t>(kNc) * (kKc / 2));
  load_tile_config();
  for (Index j0 = 0; j0 < n; j0 += kNc) {
    const Index nc = std::min(kNc, n - j0);
    for (Index k0 = 0; k0 < k; k0 += kKc) {
      const Index kc = std::min(kKc, k - k0), chunks = chunks_of(kc);
      const std::uint32_t* bpan = bp;
      if (whole_b) bpan = whole_b + whole_offset(n, k0) + static_cast<std::size_t>(j0) * chunks * 16;
      else pack_lines(bf16::source_of_b(b), j0, nc, k0, kc, bp);
      for (Index i0 = 0; i0 < m; i0 += kMc) {
        const Index mc = std::min(kMc, m - i0);
        const std::uint32_t* apan = ap;
        if (whole_a) apan = whole_a + whole_offset(m, k0) + static_cast<std::size_t>(i0) * chunks * 16;
        else pack_a(i0, mc, k0, kc, ap);
        for (Index jr = 0; jr < nc; jr += 32)
          for (Index ir = 0; ir < mc; ir += 32)
            micro_kernel(chunks, apan + ir * chunks * 16, bpan + jr * chunks * 16, c + (i0 + ir) + (j0 + jr) * ldc,
                         ldc, static_cast<int>(std::min<Index>(32, mc - ir)), static_cast<int>(std::min<Index>(32, nc - jr)),
                         accumulate || k0 > 0);
      }
    }
  }
  // Gives the tile state back, so that context switches need not save it.
  _tile_release();
}

CTNN_AMX_TARGET inline void product(const MatRef& a, const MatRef& b, float* c, Index ldc, bool accumulate,
                                    const std::uint32_t* whole_a = nullptr, const std::uint32_t* whole_b = nullptr) {
  product(MatrixRows{bf16::source_of_a(a)}, a.out_rows(), a.out_cols(), b, c, ldc, accumulate, whole_a, whole_b);
}

}  // namespace detail::amx
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

namespace detail::bf16 {
// The portable kernel's operand: a copy of m's stored elements rounded to bf16 (as floats), in
// the same orientation, in storage of the calling thread (slot 0, 1: a product's operands; 2, 3:
// gemm_bf16_blocks's; 4: Bf16PackedB) that stays valid until its next copy into that slot.
// `team`: rounded by the calling thread's team of threads (callers outside a parallel loop).
inline MatRef rounded_copy(const MatRef& m, int slot, [[maybe_unused]] bool team = false) {
  thread_local AlignedFloats buffers[5];
  AlignedFloats& buffer = buffers[slot];
  const std::size_t size = static_cast<std::size_t>(m.rows) * static_cast<std::size_t>(m.cols);
  if (buffer.size() < size) {
    buffer = {};  // nothing of the old contents to keep
    buffer.resize(size);
  }
  float* out = buffer.data();
  CTNN_OMP(parallel for schedule(static) if (team && size >= kThreadedStream))
  for (Eigen::Index j = 0; j < m.cols; ++j)
    for (Eigen::Index i = 0; i < m.rows; ++i) out[i + j * m.rows] = round_to_bf16(m.data[i + j * m.ld]);
  return {out, m.rows, m.cols, std::max<Eigen::Index>(m.rows, 1), m.transposed};
}
}  // namespace detail::bf16

// An operand B packed once for many products that share it (a layer's weights, multiplied by
// every chunk of a batch), for the kernel in use: rounded once per pass instead of once per
// product. Packed by the calling thread (with its team of threads when it has one) into storage
// of that thread that stays valid until its next pack_bf16_b; any thread may then read it.
struct Bf16PackedB {
  MatRef b;
  const std::uint32_t* data = nullptr;
  Eigen::Index panels = 0;  // of the AVX512_BF16 kernel's layout
  Bf16Kernel kernel = Bf16Kernel::avx512_bf16;
  MatRef rounded{nullptr, 0, 0, 1};  // the portable kernel's: b rounded, as it is stored
  bool empty() const { return !data && !rounded.data; }
};

inline Bf16PackedB pack_bf16_b(const MatRef& b) {
  Bf16PackedB p{b, nullptr, 0, bf16_kernel()};
  if (p.kernel == Bf16Kernel::portable) {
    p.rounded = detail::bf16::rounded_copy(b, 4, /*team=*/true);
    return p;
  }
#if CTNN_HAVE_BF16_KERNEL
  using namespace detail::bf16;
  const Eigen::Index n = b.out_cols(), k = b.out_rows();
  if (p.kernel == Bf16Kernel::amx) {
    std::uint32_t* out = panel_buffer(3, detail::amx::packed_words(n, k));
    detail::amx::pack_whole<false>(source_of_b(b), n, k, out);
    p.data = out;
  } else {
    const Packed whole = pack_whole<kNr>(source_of_b(b), n, k, panel_buffer(3, packed_words<kNr>(n, k)));
    p.data = whole.data;
    p.panels = whole.panels;
  }
#endif
  return p;
}

namespace detail::bf16 {
// gemm_bf16_serial, with B packed already when `packed` is given.
inline void serial(const MatRef& a, const MatRef& b, float* c, Eigen::Index ldc, bool accumulate,
                   const Bf16PackedB* packed) {
  if (a.out_rows() == 0 || b.out_cols() == 0) return;
  if (packed && packed->kernel != bf16_kernel()) throw std::logic_error("Bf16PackedB: packed for another bf16 kernel");
  if (bf16_kernel() == Bf16Kernel::portable)
    return sgemm::product(rounded_copy(a, 0), packed ? packed->rounded : rounded_copy(b, 1), c, ldc, accumulate);
#if CTNN_HAVE_BF16_KERNEL
  if (a.out_cols() == 0) {
    if (!accumulate)
      for (Eigen::Index j = 0; j < b.out_cols(); ++j) std::fill_n(c + j * ldc, a.out_rows(), 0.0f);
    return;
  }
  if (bf16_kernel() == Bf16Kernel::amx) amx::product(a, b, c, ldc, accumulate, nullptr, packed ? packed->data : nullptr);
  else if (packed) product(a, b, c, ldc, accumulate, {}, 0, Packed{packed->data, packed->panels}, 0);
  else product(a, b, c, ldc, accumulate);
#endif
}
}  // namespace detail::bf16

// C (m x n, leading dimension ldc) = A * B, or += when `accumulate`, with A and B rounded to
// bf16 and fp32 sums, on the calling thread.
inline void gemm_bf16_serial(const MatRef& a, const MatRef& b, float* c, Eigen::Index ldc, bool accumulate) {
  detail::bf16::serial(a, b, c, ldc, accumulate, nullptr);
}

// The same with B packed by pack_bf16_b: the same bits as with B itself.
inline void gemm_bf16_serial(const MatRef& a, const Bf16PackedB& b, float* c, Eigen::Index ldc, bool accumulate) {
  detail::bf16::serial(a, b.b, c, ldc, accumulate, &b);
}

// Whether gemm_bf16_patches takes this convolution: on the AMX kernel, for stride 1.
inline bool bf16_fuses_im2col(const ConvGeometry& g) {
#if CTNN_HAVE_BF16_KERNEL
  return bf16_kernel() == Bf16Kernel::amx && detail::amx::conv_rows_fusable(g);
#else
  (void)g;
  return false;
#endif
}

// C = P * W (or +=), P being rows [row0, row0 + rows) of the patch matrix of x (im2col's, see
// ops/im2col.hpp, for the whole batch: row = (sample, output y, output x)) and W packed by
// pack_bf16_b: gemm_bf16_serial(P, W)'s bits, with P's panels read from x directly, so that
// the patch matrix is never written. Only where bf16_fuses_im2col(g).
inline void gemm_bf16_patches(const float* x, const ConvGeometry& g, Eigen::Index row0, Eigen::Index rows,
                              const Bf16PackedB& w, float* c, Eigen::Index ldc, bool accumulate) {
  if (!bf16_fuses_im2col(g) || w.kernel != Bf16Kernel::amx || w.b.out_rows() != g.patch())
    throw std::logic_error("gemm_bf16_patches: not for this convolution or kernel");
#if CTNN_HAVE_BF16_KERNEL
  if (rows == 0 || w.b.out_cols() == 0) return;
  detail::amx::product(detail::amx::PatchRows{{x, g, row0}}, rows, g.patch(), w.b, c, ldc, accumulate, nullptr, w.data);
#else
  (void)x, (void)row0, (void)rows, (void)c, (void)ldc, (void)accumulate;
#endif
}

// C (patch x n) = P^T * B (or +=), P being rows [row0, row0 + B's rows) of the patch matrix of x
// as for gemm_bf16_patches: a convolution's weight gradient (dw += P^T dy) without the patch
// matrix. gemm_bf16_serial(P^T, B)'s bits, at any thread count: C's rows are cut into blocks of
// whole 32-row panels, shared out over ctnn's threads, each packing its own rows of P^T from x;
// B is packed once, by all threads (or, for P^T of one panel, its columns: see
// product_by_column_blocks). Only where bf16_fuses_im2col(g).
inline void gemm_bf16_patches_t(const float* x, const ConvGeometry& g, Eigen::Index row0, const MatRef& b, float* c,
                                Eigen::Index ldc, bool accumulate) {
  if (!bf16_fuses_im2col(g)) throw std::logic_error("gemm_bf16_patches_t: not for this convolution or kernel");
#if CTNN_HAVE_BF16_KERNEL
  namespace amx = detail::amx;
  const Eigen::Index m = g.patch(), k = b.out_rows(), n = b.out_cols();
  if (m == 0 || n == 0 || k == 0) return gemm_bf16_serial({x, m, k, m}, b, c, ldc, accumulate);  // zeros or nothing
  const auto cols_from = [&](Eigen::Index s) { return amx::PatchCols{{x, g, row0}, s}; };
  if (m <= 32 && n > 32) return amx::product_by_column_blocks(cols_from, m, b, c, ldc, accumulate);
  amx::product_by_row_blocks(cols_from, m, b, c, ldc, accumulate);
#else
  (void)x, (void)row0, (void)b, (void)c, (void)ldc, (void)accumulate;
#endif
}

// C = A * B (or +=), A a GatheredMatrix whose panels are packed from its table directly, so that
// A is never written out: gemm_bf16_serial's bits on A as a matrix. On the AMX and AVX512_BF16
// kernels (not the portable one).
inline void gemm_bf16_gathered(const GatheredMatrix& a, const MatRef& b, float* c, Eigen::Index ldc, bool accumulate) {
  if (bf16_kernel() == Bf16Kernel::portable || a.k_group > GatheredMatrix::kMaxGroup || a.cols != b.out_rows())
    throw std::logic_error("gemm_bf16_gathered: not for this operand or kernel");
#if CTNN_HAVE_BF16_KERNEL
  if (a.rows == 0 || b.out_cols() == 0) return;
  if (a.cols == 0) return gemm_bf16_serial({a.src, a.rows, 0, a.rows}, b, c, ldc, accumulate);  // zeros or nothing
  namespace amx = detail::amx;
  if (bf16_kernel() == Bf16Kernel::avx512_bf16)
    return detail::bf16::product_by_row_blocks([&](Eigen::Index s) { return amx::GatheredRows{a, s, /*chunked=*/false}; },
                                               a.rows, b, c, ldc, accumulate);
  amx::product_by_row_blocks([&](Eigen::Index s) { return amx::GatheredRows{a, s}; }, a.rows, b, c, ldc, accumulate);
#else
  (void)c, (void)ldc, (void)accumulate;
#endif
}

// C = A * B in blocks of `cols` columns, each computed by one of ctnn's threads into storage of
// that thread (leading dimension A's rows) and handed there to done(j0, count, c, ldc): for a
// product consumed as it is made (a whole-plane convolution's dWd, summed into kernel taps)
// that need never be written whole. A is packed once, by all threads. Each block holds
// gemm_bf16_serial's bits. Only on the AMX kernel.
template <class Done>
inline void gemm_bf16_column_blocks(const MatRef& a, const MatRef& b, Eigen::Index cols, const Done& done) {
  if (bf16_kernel() != Bf16Kernel::amx || cols <= 0 || a.out_cols() != b.out_rows())
    throw std::logic_error("gemm_bf16_column_blocks: not for these operands or kernel");
#if CTNN_HAVE_BF16_KERNEL
  namespace amx = detail::amx;
  const Eigen::Index m = a.out_rows(), k = a.out_cols(), n = b.out_cols();
  if (m == 0 || n == 0) return;
  std::uint32_t* whole = detail::bf16::panel_buffer(2, amx::packed_words(m, k));
  if (k > 0) amx::pack_whole<true>(detail::bf16::source_of_a(a), m, k, whole);
  const Eigen::Index blocks = (n + cols - 1) / cols;
  CTNN_OMP(parallel for schedule(dynamic, 1) if (blocks > 1))
  for (Eigen::Index i = 0; i < blocks; ++i) {
    const Eigen::Index j0 = i * cols, count = std::min(cols, n - j0);
    // Slot 0 holds A's panels only when A is not packed whole.
    auto* c = reinterpret_cast<float*>(detail::bf16::panel_buffer(0, static_cast<std::size_t>(m * count)));
    if (k == 0) std::fill_n(c, m * count, 0.0f);
    else amx::product(a, detail::logical_cols(b, j0, count), c, m, /*accumulate=*/false, whole, nullptr);
    done(j0, count, static_cast<const float*>(c), m);
  }
#else
  (void)b, (void)cols, (void)done;
#endif
}

namespace detail::bf16 {
// The portable kernel's blocks, both operands rounded already (rounded_copy, or a
// Bf16PackedB's): ctnn's fp32 kernel gives every element the same bits wherever a block
// starts (test_ops), so the blocks give gemm_bf16_serial's.
inline void portable_blocks(const MatRef& ra, const MatRef& rb, float* c, Eigen::Index ldc, bool accumulate,
                            bool split_rows, Eigen::Index blocks) {
  ops::detail::for_each_block(blocks, split_rows ? ra.out_rows() : rb.out_cols(), [&](Eigen::Index s, Eigen::Index l) {
    if (split_rows) sgemm::product(ops::detail::logical_rows(ra, s, l), rb, c + s, ldc, accumulate);
    else sgemm::product(ra, ops::detail::logical_cols(rb, s, l), c + s * ldc, ldc, accumulate);
  });
}
}  // namespace detail::bf16

// C = A * B (or +=) in bf16 cut into `blocks` blocks of rows (split_rows) or columns,
// shared out over ctnn's threads. The operand every block reads whole is packed once, by all
// threads, instead of once per block. Results are gemm_bf16_serial's, bit for bit, at any
// thread count: packing only rounds and moves values.
inline void gemm_bf16_blocks(const MatRef& a, const MatRef& b, float* c, Eigen::Index ldc, bool accumulate,
                             bool split_rows, Eigen::Index blocks) {
  using namespace detail::bf16;
  if (blocks <= 1 || a.out_cols() == 0) return gemm_bf16_serial(a, b, c, ldc, accumulate);
  if (bf16_kernel() == Bf16Kernel::portable)  // both operands rounded once, by the team
    return portable_blocks(rounded_copy(a, 2, true), rounded_copy(b, 3, true), c, ldc, accumulate, split_rows, blocks);
#if CTNN_HAVE_BF16_KERNEL
  const Eigen::Index m = a.out_rows(), k = a.out_cols(), n = b.out_cols(), extent = split_rows ? m : n;
  if (bf16_kernel() == Bf16Kernel::amx) {
    namespace amx = detail::amx;
    std::uint32_t* whole = panel_buffer(2, split_rows ? amx::packed_words(n, k) : amx::packed_words(m, k));
    if (split_rows) amx::pack_whole<false>(source_of_b(b), n, k, whole);
    else amx::pack_whole<true>(source_of_a(a), m, k, whole);
    return detail::for_each_block(blocks, extent, [&](Eigen::Index s, Eigen::Index l) {
      if (split_rows)
        amx::product(detail::logical_rows(a, s, l), b, c + s, ldc, accumulate, nullptr, whole);
      else
        amx::product(a, detail::logical_cols(b, s, l), c + s * ldc, ldc, accumulate, whole, nullptr);
    });
  }
  // The shared operand is used whole by every block, so block edges need not meet panel edges.
  std::uint32_t* whole = panel_buffer(2, split_rows ? packed_words<kNr>(n, k) : packed_words<kMr>(m, k));
  const Packed shared = split_rows ? pack_whole<kNr>(source_of_b(b), n, k, whole) : pack_whole<kMr>(source_of_a(a), m, k, whole);
  detail::for_each_block(blocks, extent, [&](Eigen::Index s, Eigen::Index l) {
    if (split_rows) product(detail::logical_rows(a, s, l), b, c + s, ldc, accumulate, {}, 0, shared, 0);
    else product(a, detail::logical_cols(b, s, l), c + s * ldc, ldc, accumulate, shared, 0, {}, s);
  });
#endif
}

// The same with B packed by pack_bf16_b (a layer's weights, shared by the products of a
// batch's chunks, rounded once for all of them), cut into block_count's blocks: rows of C, each
// block reading the one packed B (on the portable kernel, which packs as it multiplies, columns
// where C is wider than tall). gemm_bf16_serial's bits.
inline void gemm_bf16_blocks(const MatRef& a, const Bf16PackedB& b, float* c, Eigen::Index ldc, bool accumulate) {
  using namespace detail::bf16;
  const Eigen::Index m = a.out_rows(), n = b.b.out_cols(), k = a.out_cols();
  eigen_assert(k == b.b.out_rows());
  const bool portable = b.kernel == Bf16Kernel::portable, split_rows = !portable || m >= n;
  const Eigen::Index extent = split_rows ? m : n, blocks = detail::block_count(extent, static_cast<long>(m) * n * k);
  if (blocks <= 1 || k == 0 || m == 0 || n == 0) return gemm_bf16_serial(a, b, c, ldc, accumulate);
  if (b.kernel != bf16_kernel()) throw std::logic_error("Bf16PackedB: packed for another bf16 kernel");
  if (portable) return portable_blocks(rounded_copy(a, 2, true), b.rounded, c, ldc, accumulate, split_rows, blocks);
#if CTNN_HAVE_BF16_KERNEL
  detail::for_each_block(blocks, m, [&](Eigen::Index s, Eigen::Index l) {
    if (b.kernel == Bf16Kernel::amx)
      detail::amx::product(detail::logical_rows(a, s, l), b.b, c + s, ldc, accumulate, nullptr, b.data);
    else
      product(detail::logical_rows(a, s, l), b.b, c + s, ldc, accumulate, {}, 0, Packed{b.data, b.panels}, 0);
  });
#endif
}

}  // namespace ctnn::ops
