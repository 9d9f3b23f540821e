// Matrix products for the layers: one entry point, deterministic at any thread count, on the
// backend that runs the fastest kernels this CPU has.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "ctnn/core/threading.hpp"
#include "ctnn/ops/cpu.hpp"
#include "ctnn/ops/linkage.hpp"
#include "ctnn/ops/matrix.hpp"
#include "ctnn/ops/precision.hpp"
#include "ctnn/ops/sgemm.hpp"

// CTNN_USE_OPENBLAS (the CMake option of the same name, on when libopenblas-dev is found): each
// fixed block below may run as one single-threaded OpenBLAS sgemm instead of ctnn's own kernel
// (ops/sgemm.hpp, on Eigen's packet math: the backend named "eigen").
// Whether it does is decided at run time (gemm_backend() below): only where ctnn's kernel was
// compiled for less than the CPU has, and never on OpenBLAS's word alone, because OpenBLAS picks
// its kernels from a table of CPU models: on a CPU it does not know (Debian's 0.3.21 on an
// Emerald Rapids Xeon) it falls back to SSE3 kernels five times slower than AVX-512 code.
// Splitting and thread count stay ctnn's either way, so results are the same for any number of
// threads.
#ifdef CTNN_USE_OPENBLAS
extern "C" {
// OpenBLAS's own API (its cblas.h), declared here so that any cblas.h may be on the path.
void openblas_set_num_threads(int);
char* openblas_get_corename(void);
char* openblas_get_config(void);
// The Fortran BLAS entry, declared exactly as Eigen's blas.h does (for a program that also
// defines EIGEN_USE_BLAS).
int sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
           const int*, const float*, const int*, const float*, float*, const int*);
}
#endif

namespace ctnn::ops {

enum class GemmBackend { eigen, openblas };

inline const char* backend_name(GemmBackend b) { return b == GemmBackend::openblas ? "OpenBLAS" : "Eigen"; }

// A backend and the one line that says why it was chosen and how to override the choice.
struct GemmChoice {
  GemmBackend backend;
  std::string why;
};

namespace detail {
// How the messages name ctnn's kernel compiled for `isa`, and OpenBLAS running `core`'s kernels.
inline std::string kernel_name(Isa isa) { return std::string("ctnn's kernel (Eigen packets, ") + isa_name(isa) + ")"; }
inline std::string openblas_name(std::string_view core) {
  return "OpenBLAS ('" + std::string(core) + "' kernels, " + isa_name(openblas_core_isa(core)) + ")";
}
}  // namespace detail

// The choice as a function of the facts alone (tested for every case in tests/test_ops.cpp):
// the CPU's level, the level ctnn's kernel (Eigen's packets) was compiled for, OpenBLAS's core
// name (empty when ctnn is built without it) and the CTNN_GEMM override ("eigen", "openblas" or
// empty). ctnn's kernel is taken whenever it was compiled for the best instruction set the CPU
// has (-march=native, CTNN_NATIVE for ctnn's own programs): side by side with PyTorch it trained
// and evaluated both networks faster than OpenBLAS's matching kernels in every row of the latest
// runs on an AVX2 AMD Zen 3 (OpenBLAS 'Zen', session 18) and an AVX-512 Intel Xeon ('SkylakeX',
// session 20), so the default speed rests on no library's table of CPU models. OpenBLAS serves a build
// compiled for less than the CPU (a distribution's generic -O2), where its run-time dispatch
// reaches instructions ctnn's kernel was not compiled for; an OpenBLAS core name ctnn does not
// know is never trusted.
inline GemmChoice choose_gemm_backend(Isa cpu, Isa eigen, std::string_view openblas_core,
                                      std::string_view forced) {
  const std::string on_cpu = std::string(" on this ") + isa_name(cpu) + " CPU";
  const std::string eigen_desc = detail::kernel_name(eigen);
  if (openblas_core.empty()) {
    std::string why = eigen_desc + on_cpu + ": ctnn built without OpenBLAS";
    if (eigen < cpu) why += "; compile with -march=native to use the CPU's " + std::string(isa_name(cpu));
    return {GemmBackend::eigen, why};
  }
  const Isa blas = openblas_core_isa(openblas_core);
  const std::string blas_desc = detail::openblas_name(openblas_core);
  std::string note;
  if (forced == "eigen") return {GemmBackend::eigen, eigen_desc + on_cpu + ", forced by CTNN_GEMM=eigen"};
  if (forced == "openblas") return {GemmBackend::openblas, blas_desc + on_cpu + ", forced by CTNN_GEMM=openblas"};
  if (!forced.empty()) note = "; CTNN_GEMM='" + std::string(forced) + "' ignored (eigen or openblas)";
  if (eigen >= cpu)
    return {GemmBackend::eigen, eigen_desc + on_cpu + ": compiled for the CPU's best" + note +
                                    " (CTNN_GEMM=openblas for " + blas_desc + ")"};
  if (blas > eigen && blas <= cpu && blas != Isa::unknown)
    return {GemmBackend::openblas, blas_desc + on_cpu + ": ctnn's kernel is compiled only for " + isa_name(eigen) +
                                       " (build with -march=native for it)" + note};
  return {GemmBackend::eigen, eigen_desc + on_cpu + ": OpenBLAS would run its '" + std::string(openblas_core) +
                                  "' kernels (" + isa_name(blas) + ")" + note + " (CTNN_GEMM=openblas forces it)"};
}

namespace detail {
inline std::string openblas_core() {
#ifdef CTNN_USE_OPENBLAS
  const char* core = openblas_get_corename();
  return core && *core ? core : "unknown";
#else
  return {};
#endif
}

// Decided once, on first use, from cpuid, the compile flags and CTNN_GEMM.
inline GemmChoice& gemm_choice() {
  static GemmChoice choice = [] {
    const char* forced = std::getenv("CTNN_GEMM");
    return choose_gemm_backend(cpu_isa(), compiled_isa(), openblas_core(), forced ? forced : "");
  }();
  return choice;
}
}  // namespace detail

// The backend every GEMM block runs on.
inline GemmBackend gemm_backend() { return detail::gemm_choice().backend; }

// One line for programs to print beside their figures: the backend, its instruction set, why,
// how to override it, and the CPU's model name.
inline std::string gemm_backend_summary() {
  const std::string model = cpu_model_name();
  return "GEMM: " + detail::gemm_choice().why + (model.empty() ? "" : "; CPU: " + model);
}

// Overrides the automatic choice (for benchmarks comparing the two). Not while GEMMs run.
inline void set_gemm_backend(GemmBackend b) {
#ifndef CTNN_USE_OPENBLAS
  if (b == GemmBackend::openblas)
    throw std::invalid_argument("set_gemm_backend: ctnn was built without OpenBLAS (CTNN_USE_OPENBLAS)");
#endif
  const std::string why = b == GemmBackend::eigen ? detail::kernel_name(compiled_isa())
                                                  : detail::openblas_name(detail::openblas_core());
  detail::gemm_choice() = {b, why + ", set by the program"};
}

namespace detail {

#ifdef CTNN_USE_OPENBLAS
// One single-threaded sgemm: C (m x n, leading dimension ldc) = A * B (+ C). OpenBLAS's own
// threads would nest inside ctnn's OpenMP loop, so they are switched off once, up front.
inline void blas_product(float* c, Eigen::Index ldc, const MatRef& a, const MatRef& b, bool accumulate) {
  static const bool single = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)single;
  const int m = static_cast<int>(a.out_rows()), n = static_cast<int>(b.out_cols()),
            k = static_cast<int>(a.out_cols()), lda = static_cast<int>(a.ld),
            ldb = static_cast<int>(b.ld), ldcc = static_cast<int>(ldc);
  const char ta = a.transposed ? 'T' : 'N', tb = b.transposed ? 'T' : 'N';
  const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  sgemm_(&ta, &tb, &m, &n, &k, &one, a.data, &lda, b.data, &ldb, &beta, c, &ldcc);
}
#endif

// One block's product on the calling thread, in the current precision (ops/precision.hpp); then
// `map` (unless null) on element (i, j) as map->apply(value, j): in ctnn's fp32 kernel's
// registers, else over the block while it is in cache.
inline void product_into(float* c, Eigen::Index ldc, const MatRef& a, const MatRef& b, bool accumulate,
                         Precision precision, const ChannelMap* map = nullptr) {
  if (precision == Precision::bf16) {
    gemm_bf16_serial(a, b, c, ldc, accumulate);
#ifdef CTNN_USE_OPENBLAS
  } else if (gemm_backend() == GemmBackend::openblas && a.out_cols() > 0) {
    blas_product(c, ldc, a, b, accumulate);
#endif
  } else {
    return sgemm::product(a, b, c, ldc, accumulate, map);
  }
  if (map)
    map_channels(c, *map, static_cast<int>(b.out_cols()), static_cast<std::size_t>(a.out_rows()),
                 static_cast<std::size_t>(ldc), /*threaded=*/false);
}

// Whether ctnn's kernel cuts a product's m x n output into blocks of rows (else of columns) for
// `threads` threads. Each thread packs all of the operand the blocks share (B when rows are
// cut, A when columns are) and its own share of the other, and its packed block of B (kKc x up
// to kNc columns: 1 MiB with AVX2, 2 MiB with AVX-512) is read again for every kMc rows of A.
// Cut by rows, every thread packs and rereads all of B's block, more than a 512 KiB L2 holds
// from 512 columns on; cut by columns, its share. So columns are cut wherever each thread still
// gets 128 or more (21 panels with AVX2), else the longer extent. Measured on Zen 3 (2 threads,
// each of ResNet50_layer4's product shapes with m >= n alone, operands in cache, cut both
// ways): columns 2-26 % faster at 13 of the 14 with n >= 256 (400 x 256 x 1024 17 %, 1600 x 512
// x 512 16 %, 512 x 512 x 1600 26 %), level at the other; rows 6-8 % faster at 3 of the 4 with
// n = 64 or 128. In the networks much less (weights come from memory there): ResNet50_layer4's
// training 1-4 % faster (18 of 25 alternating runs), its evaluation level; VGG16's training and
// evaluation 5 % (9 of 12).
inline bool splits_rows(Eigen::Index m, Eigen::Index n, int threads) {
  return n < 128 * static_cast<Eigen::Index>(std::max(threads, 1)) && m >= n;
}

}  // namespace detail

// C = A * B (or += when `accumulate`) on the calling thread alone: for kernels that already
// run inside ctnn's parallel loop, one chunk of work per thread.
// `precision`: of the operands' rounding; Winograd's tile products are always fp32.
inline void gemm_serial(const MatRef& a, const MatRef& b, const MutMatRef& c, bool accumulate = false,
                        Precision precision = matmul_precision()) {
  eigen_assert(a.out_cols() == b.out_rows() && c.rows == a.out_rows() && c.cols == b.out_cols());
  if (c.rows == 0 || c.cols == 0) return;
  detail::product_into(c.data, c.ld, a, b, accumulate, precision);
}

// Whether gemm_gathered runs here: on ctnn's fp32 kernel (OpenBLAS and the bf16 kernels take a
// matrix that is written out).
inline bool gathers_fp32() {
  return gemm_backend() == GemmBackend::eigen && matmul_precision() == Precision::fp32;
}

// C = A * B for an A read from a table (a whole-plane convolution's Wd or Wd^T), on ctnn's fp32
// kernel, which packs A's panels from the table's source: the bits of ops::gemm on A written
// out, without writing it (4 MiB for ResNet's 256-channel 2x2 layers, 16 MiB for VGG16's
// 512-channel ones, each time the weights change). Blocks as ops::gemm's.
inline void gemm_gathered(const GatheredMatrix& a, const MatRef& b, const MutMatRef& c) {
  const Eigen::Index m = a.rows, n = b.out_cols();
  eigen_assert(gathers_fp32() && a.cols == b.out_rows() && c.rows == m && c.cols == n);
  if (m == 0 || n == 0) return;
  const bool split_rows = detail::splits_rows(m, n, num_threads());
  const Eigen::Index extent = split_rows ? m : n;
  const long work = static_cast<long>(m) * n * a.cols;
  detail::for_each_block(detail::thread_block_count(extent, work, num_threads()), extent,
                         [&](Eigen::Index s, Eigen::Index l) {
                           if (split_rows)
                             return detail::sgemm::product(detail::sgemm::GatheredBlock{a, s, l}, b, c.data + s, c.ld,
                                                           /*accumulate=*/false);
                           detail::sgemm::product(detail::sgemm::GatheredBlock{a, 0, m}, detail::logical_cols(b, s, l),
                                                  c.data + s * c.ld, c.ld, /*accumulate=*/false);
                         });
}

// C = A * B, or C += A * B when `accumulate`. The larger output extent is cut into fixed blocks,
// each a single-threaded product (detail::product_into), shared out over ctnn's OpenMP threads.
// (Declared only under CTNN_SEPARATE_KERNELS, ops/linkage.hpp.)
#if CTNN_KERNELS_DECLARED_ONLY
void gemm(const MatRef& a, const MatRef& b, const MutMatRef& c, bool accumulate = false,
          Precision precision = matmul_precision());
void gemm_mapped(const MatRef& a, const MatRef& b, const MutMatRef& c, const ChannelMap& map);
#else
namespace detail {
// ops::gemm, and ops::gemm_mapped with `map`: the blocks and who runs them.
inline void gemm_blocks(const MatRef& a, const MatRef& b, const MutMatRef& c, bool accumulate, Precision precision,
                        const ChannelMap* map) {
  const Eigen::Index m = a.out_rows(), n = b.out_cols();
  eigen_assert(a.out_cols() == b.out_rows() && c.rows == m && c.cols == n);
  if (m == 0 || n == 0) return;
  // ctnn's own kernel: one block per thread (thread_block_count), by splits_rows. OpenBLAS keeps
  // block_count's blocks: its sums do depend on where a block starts (its `Zen` kernels,
  // ResNet's 1x1 shapes cut into 2, 3 or 8 blocks: thousands of elements differ in their last
  // bits from the whole product), so blocks that followed the threads would make its results
  // depend on the thread count (and one block per thread gained it 3.5 % on Zen 3, faster in 6
  // runs of 10). Under bf16 the AVX512_BF16 and portable kernels, whose results do not depend on
  // where blocks start either, are cut as ctnn's fp32 kernel is: faster at 13 of ResNet50_layer4's
  // 18 1x1 product shapes (forward, input and weight gradients), up to 1.43x (1600 x 128 x 512),
  // level at the others (AMD Zen 4, 2 threads, operands in cache), than m >= n and block_count.
  // The AMX kernel keeps the blocks it was measured with.
  const bool own = precision == Precision::fp32 ? gemm_backend() == GemmBackend::eigen
                                                : bf16_kernel() != Bf16Kernel::amx;
  const bool split_rows = own ? splits_rows(m, n, num_threads()) : m >= n;
  const Eigen::Index extent = split_rows ? m : n;
  const long work = static_cast<long>(m) * n * a.out_cols();
  const Eigen::Index blocks = own ? thread_block_count(extent, work, num_threads()) : block_count(extent, work);
  if (precision == Precision::bf16) {
    gemm_bf16_blocks(a, b, c.data, c.ld, accumulate, split_rows, blocks);
    if (map) map_channels(c.data, *map, static_cast<int>(n), static_cast<std::size_t>(m), static_cast<std::size_t>(c.ld));
    return;
  }
  for_each_block(blocks, extent, [&](Eigen::Index s, Eigen::Index l) {
    if (split_rows) return product_into(c.data + s, c.ld, logical_rows(a, s, l), b, accumulate, precision, map);
    const ChannelMap part = map ? map->from(s) : ChannelMap{};  // the block's columns are channels s, ...
    product_into(c.data + s * c.ld, c.ld, a, logical_cols(b, s, l), accumulate, precision, map ? &part : nullptr);
  });
}
}  // namespace detail

CTNN_KERNEL void gemm(const MatRef& a, const MatRef& b, const MutMatRef& c, bool accumulate = false,
                      Precision precision = matmul_precision()) {
  detail::gemm_blocks(a, b, c, accumulate, precision, nullptr);
}

// C = A * B, then `map` on each column j of C (ChannelMap::apply(value, j)): a 1x1 convolution's
// output, channels as columns, with its bias, a BatchNorm folded in evaluation and a ReLU. On
// ctnn's kernel in fp32 the map is applied to the tiles' final sums in registers, a pass over
// the output fewer (a BatchNorm's pass after each of ResNet50_layer4's 1x1 convolutions in
// evaluation); on OpenBLAS to each block while it is in cache, under bf16 in one pass after the
// product. The same bits every way.
CTNN_KERNEL void gemm_mapped(const MatRef& a, const MatRef& b, const MutMatRef& c, const ChannelMap& map) {
  detail::gemm_blocks(a, b, c, /*accumulate=*/false, matmul_precision(), map.empty() ? nullptr : &map);
}

#endif  // CTNN_KERNELS_DECLARED_ONLY

}  // namespace ctnn::ops
