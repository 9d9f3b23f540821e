// Winograd convolutions for 3x3 kernels, stride 1, padding 1, on channel-major (C, N, H, W)
// batches: forward, input gradient and weight gradient.
//
// F(m x m, 3 x 3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks") computes an
// m x m output tile from an (m+2) x (m+2) input tile with (m+2)^2 multiplications instead of 9m^2:
//   Y = A^T [ (G g G^T) .* (B^T d B) ] A.
// Summed over input channels, the element-wise product at each of the (m+2)^2 transform points
// is a matrix product (tiles x Cin) * (Cin x Cout), so the work is: transform every input tile,
// one GEMM per point, inverse-transform every output tile. m = 2 (16 points, 2.25x fewer
// multiplies) and m = 4 (36 points, 4x fewer) are provided; m = 4 loses about one decimal digit
// of accuracy (its transforms have coefficients up to 8 and 1/24), which is why the choice is
// the caller's (see Conv2dLayer and tests/test_winograd.cpp for measured errors).
//
// - Input gradient: stride 1, padding 1 makes it a forward convolution of dY with the kernel
//   rotated by 180 degrees and its two channel axes swapped.
// - Weight gradient: dL/dU = (B^T d B) .* (A dY A^T) per tile, summed over tiles as one GEMM per
//   point (V^T * dM), then dW = G^T dU G.
//
// Vectorisation: every transform loop runs over the tiles of a strip, unit-stride and
// branch-free, and GCC vectorises it (checked with -fopt-info-vec). These loops deliberately do
// not use `#pragma omp simd`: GCC 12 then turns the small per-tile arrays into per-lane "simd
// arrays" and gives up, leaving scalar code that made the transforms cost more than the GEMMs.
//
// Sizes are run-time values; only the tile size is a template parameter, so every layer shares
// two instantiations. Ragged edges (planes that are not a multiple of m) read zeros past the
// input and drop the outputs past the plane; the output gradient there is zero.
//
// Two schedules, chosen by the caller:
// - chunked: the batch is cut into chunks of whole images; one thread transforms a chunk, runs
//   its (m+2)^2 products with gemm_serial and inverse-transforms it, all in its own cache-sized
//   buffer. Good for large planes and few channels, where the transformed weights are small.
// - by point: the whole batch is transformed (threads split the channels), then threads share out
//   the (m+2)^2 products, one whole-batch gemm_serial each. Good for small planes and many
//   channels, where a chunk holds few tiles and re-reading the large transformed weights for
//   every chunk would dominate.
// Determinism: chunk, group and point boundaries depend only on the problem; every output value
// is computed by the same code in the same order whatever thread runs it; weight-gradient sums
// over chunks are kept per fixed group and added in group order. Results are therefore
// bit-identical for any thread count. Buffers come from ops::scratch, so nothing is allocated
// once the largest layer has run.
#pragma once

#include <algorithm>
#include <cstddef>

#include "ctnn/core/threading.hpp"
#include "ctnn/ops/elementwise.hpp"
#include "ctnn/ops/gemm.hpp"
#include "ctnn/ops/scratch.hpp"
#include "ctnn/ops/weight_cache.hpp"

// GCC's "no loop-carried dependence" hint for the transform loops below. Clang has no such
// pragma (it checks aliasing at run time instead) and warns about unknown ones, so it gets none.
#if defined(__clang__)
#define CTNN_IVDEP
#else
#define CTNN_IVDEP _Pragma("GCC ivdep")
#endif

namespace ctnn::ops {

struct Winograd3x3 {
  int in_channels, out_channels, height, width;
  int batch;                 // N of the whole batch (channel stride = N * H * W)
  int tile = 2;              // m: 2 or 4
  bool by_point = false;     // schedule: false = chunked by images, true = by transform point
  // By point: floats of transformed tiles held at once. The batch is transformed in as many
  // consecutive parts as this needs (VGG's 32x32 layers: 4 parts of 27 images, 32 MB instead of
  // 118 MB for the whole batch, with products still 1,700 rows tall).
  std::size_t point_budget = std::size_t{1} << 23;
  bool relu = false;  // the output transform also applies a following ReLU (forward only)
};

namespace winograd_detail {

// One-dimensional transforms, written out so that no multiplication by 0 or 1 is executed (a
// compiler may not drop 0 * x for floats). T is float, or double for the weights.
template <int M>
struct Xf;

template <>
struct Xf<2> {
  static constexpr int m = 2, a = 4;
  template <class T>
  static void data(const T* d, T* r) {  // B^T d
    r[0] = d[0] - d[2];
    r[1] = d[1] + d[2];
    r[2] = d[2] - d[1];
    r[3] = d[1] - d[3];
  }
  template <class T>
  static void out(const T* v, T* r) {  // A^T v
    r[0] = v[0] + v[1] + v[2];
    r[1] = v[1] - v[2] - v[3];
  }
  template <class T>
  static void grad(const T* y, T* r) {  // A y (the transpose of out)
    r[0] = y[0];
    r[1] = y[0] + y[1];
    r[2] = y[0] - y[1];
    r[3] = -y[1];
  }
  template <class T>
  static void kernel(const T* g, T* r) {  // G g
    r[0] = g[0];
    r[1] = (g[0] + g[1] + g[2]) * T(0.5);
    r[2] = (g[0] - g[1] + g[2]) * T(0.5);
    r[3] = g[2];
  }
  template <class T>
  static void kernel_t(const T* u, T* r) {  // G^T u
    r[0] = u[0] + (u[1] + u[2]) * T(0.5);
    r[1] = (u[1] - u[2]) * T(0.5);
    r[2] = (u[1] + u[2]) * T(0.5) + u[3];
  }
};

// Interpolation points 0, 1, -1, 2, -2 and infinity.
template <>
struct Xf<4> {
  static constexpr int m = 4, a = 6;
  template <class T>
  static void data(const T* d, T* r) {
    r[0] = T(4) * d[0] - T(5) * d[2] + d[4];
    r[1] = d[3] + d[4] - T(4) * (d[1] + d[2]);
    r[2] = d[4] - d[3] + T(4) * (d[1] - d[2]);
    r[3] = d[4] - d[2] + T(2) * (d[3] - d[1]);
    r[4] = d[4] - d[2] + T(2) * (d[1] - d[3]);
    r[5] = T(4) * d[1] - T(5) * d[3] + d[5];
  }
  template <class T>
  static void out(const T* v, T* r) {
    const T s12 = v[1] + v[2], d12 = v[1] - v[2], s34 = v[3] + v[4], d34 = v[3] - v[4];
    r[0] = v[0] + s12 + s34;
    r[1] = d12 + T(2) * d34;
    r[2] = s12 + T(4) * s34;
    r[3] = d12 + T(8) * d34 + v[5];
  }
  template <class T>
  static void grad(const T* y, T* r) {
    const T e = y[0] + y[2], o = y[1] + y[3], e4 = y[0] + T(4) * y[2], o2 = T(2) * y[1] + T(8) * y[3];
    r[0] = y[0];
    r[1] = e + o;
    r[2] = e - o;
    r[3] = e4 + o2;
    r[4] = e4 - o2;
    r[5] = y[3];
  }
  template <class T>
  static void kernel(const T* g, T* r) {
    const T s = g[0] + g[2];
    r[0] = g[0] / T(4);
    r[1] = -(s + g[1]) / T(6);
    r[2] = -(s - g[1]) / T(6);
    r[3] = (g[0] + T(2) * g[1] + T(4) * g[2]) / T(24);
    r[4] = (g[0] - T(2) * g[1] + T(4) * g[2]) / T(24);
    r[5] = g[2];
  }
  template <class T>
  static void kernel_t(const T* u, T* r) {
    r[0] = u[0] / T(4) - (u[1] + u[2]) / T(6) + (u[3] + u[4]) / T(24);
    r[1] = (u[2] - u[1]) / T(6) + (u[3] - u[4]) / T(12);
    r[2] = (u[3] + u[4] - u[1] - u[2]) / T(6) + u[5];
  }
};

// Tile order inside a chunk of `cnt` images: t = (ty * cnt + b) * tw + tx (tile row, image,
// tile column). For one channel and one tile row, the tiles of every image of the chunk are then
// consecutive, so the transforms below vectorise over them even on planes one or two tiles wide
// (ResNet's 4x4 and 2x2 layers), where a single image's tile row would be too short.
// A strip is processed in blocks of at most tile_block tiles; that bounds the stack buffers.
inline constexpr int tile_block = 64;

inline int tiles_along(int extent, int m) { return (extent + m - 1) / m; }

// Input-transform (B^T d B) of channel plane set `chan` (image b's plane at chan + b * plane) for
// `cnt` images: tile t at point p goes to dst[p * ps + t].
template <int M>
void data_tiles(const float* chan, int cnt, int h, int w, float* dst, std::size_t ps) {
  using X = Xf<M>;
  constexpr int A = X::a, TB = tile_block;
  const int th = tiles_along(h, M), tw = tiles_along(w, M), strip = cnt * tw;
  const std::size_t plane = static_cast<std::size_t>(h) * w;
  // buf[j][r][t]: input row j of the tile, column r, of the strip's tile t. Gathering the tile
  // columns apart ("phases") keeps both transform passes on contiguous, unit-stride data.
  alignas(64) float buf[A][A][TB], col[A][A][TB];
  for (int ty = 0; ty < th; ++ty) {
    for (int t0 = 0; t0 < strip; t0 += TB) {
      const int nt = std::min(TB, strip - t0);
      for (int j = 0; j < A; ++j) {
        const int iy = ty * M - 1 + j;
        if (iy < 0 || iy >= h) {
          for (int r = 0; r < A; ++r) std::fill_n(buf[j][r], nt, 0.0f);
          continue;
        }
        int b = t0 / tw, tx = t0 % tw;
        for (int t = 0; t < nt; ++t) {
          const float* row = chan + b * plane + static_cast<std::size_t>(iy) * w;
          const int x0 = tx * M - 1;
          if (x0 >= 0 && x0 + A <= w) {
            for (int r = 0; r < A; ++r) buf[j][r][t] = row[x0 + r];
          } else {  // a tile on the left or right edge
            for (int r = 0; r < A; ++r) buf[j][r][t] = x0 + r >= 0 && x0 + r < w ? row[x0 + r] : 0.0f;
          }
          if (++tx == tw) tx = 0, ++b;
        }
      }
      // B^T along y (over j), for every column phase and tile ...
      for (int r = 0; r < A; ++r) {
CTNN_IVDEP
        for (int t = 0; t < nt; ++t) {
          float d[A], o[A];
          for (int j = 0; j < A; ++j) d[j] = buf[j][r][t];
          X::data(d, o);
          for (int i = 0; i < A; ++i) col[i][r][t] = o[i];
        }
      }
      // ... then along x (over the phases), stored per point.
      float* out = dst + static_cast<std::size_t>(ty) * strip + t0;
      for (int i = 0; i < A; ++i) {
CTNN_IVDEP
        for (int t = 0; t < nt; ++t) {
          float d[A], o[A];
          for (int r = 0; r < A; ++r) d[r] = col[i][r][t];
          X::data(d, o);
          for (int k = 0; k < A; ++k) out[(i * A + k) * ps + t] = o[k];
        }
      }
    }
  }
}

// Output-gradient transform (A dY A^T) of each m x m tile, zeros past the plane's edge; same
// layout as data_tiles.
template <int M>
void grad_tiles(const float* chan, int cnt, int h, int w, float* dst, std::size_t ps) {
  using X = Xf<M>;
  constexpr int A = X::a, TB = tile_block;
  const int th = tiles_along(h, M), tw = tiles_along(w, M), strip = cnt * tw;
  const std::size_t plane = static_cast<std::size_t>(h) * w;
  alignas(64) float buf[M][M][TB], col[A][M][TB];
  for (int ty = 0; ty < th; ++ty) {
    for (int t0 = 0; t0 < strip; t0 += TB) {
      const int nt = std::min(TB, strip - t0);
      for (int j = 0; j < M; ++j) {
        const int iy = ty * M + j;
        if (iy >= h) {
          for (int r = 0; r < M; ++r) std::fill_n(buf[j][r], nt, 0.0f);
          continue;
        }
        int b = t0 / tw, tx = t0 % tw;
        for (int t = 0; t < nt; ++t) {
          const float* row = chan + b * plane + static_cast<std::size_t>(iy) * w;
          const int x0 = tx * M;
          if (x0 + M <= w) {
            for (int r = 0; r < M; ++r) buf[j][r][t] = row[x0 + r];
          } else {
            for (int r = 0; r < M; ++r) buf[j][r][t] = x0 + r < w ? row[x0 + r] : 0.0f;
          }
          if (++tx == tw) tx = 0, ++b;
        }
      }
      for (int r = 0; r < M; ++r) {
CTNN_IVDEP
        for (int t = 0; t < nt; ++t) {
          float y[M], o[A];
          for (int j = 0; j < M; ++j) y[j] = buf[j][r][t];
          X::grad(y, o);
          for (int i = 0; i < A; ++i) col[i][r][t] = o[i];
        }
      }
      float* out = dst + static_cast<std::size_t>(ty) * strip + t0;
      for (int i = 0; i < A; ++i) {
CTNN_IVDEP
        for (int t = 0; t < nt; ++t) {
          float y[M], o[A];
          for (int r = 0; r < M; ++r) y[r] = col[i][r][t];
          X::grad(y, o);
          for (int k = 0; k < A; ++k) out[(i * A + k) * ps + t] = o[k];
        }
      }
    }
  }
}

// Inverse transform (A^T m A) of the product tiles src[p * ps + t] of one output channel into
// its planes (image b's at chan + b * plane), adding `bias` (then ReLU, with `relu`) and dropping
// the part of ragged tiles past the edge.
template <int M>
void output_tiles(const float* src, std::size_t ps, float bias, bool relu, float* chan, int cnt, int h, int w) {
  using X = Xf<M>;
  constexpr int A = X::a, TB = tile_block;
  const int th = tiles_along(h, M), tw = tiles_along(w, M), strip = cnt * tw;
  const std::size_t plane = static_cast<std::size_t>(h) * w;
  alignas(64) float row[A][M][TB], res[M][M][TB];
  for (int ty = 0; ty < th; ++ty) {
    for (int t0 = 0; t0 < strip; t0 += TB) {
      const int nt = std::min(TB, strip - t0);
      const float* in = src + static_cast<std::size_t>(ty) * strip + t0;
      // A^T along x (the second point index) ...
      for (int i = 0; i < A; ++i) {
CTNN_IVDEP
        for (int t = 0; t < nt; ++t) {
          float v[A], o[M];
          for (int k = 0; k < A; ++k) v[k] = in[(i * A + k) * ps + t];
          X::out(v, o);
          for (int s = 0; s < M; ++s) row[i][s][t] = o[s];
        }
      }
      // ... then along y: res[q][s][t] is output row q, column s of tile t.
      for (int s = 0; s < M; ++s) {
CTNN_IVDEP
        for (int t = 0; t < nt; ++t) {
          float v[A], o[M];
          for (int i = 0; i < A; ++i) v[i] = row[i][s][t];
          X::out(v, o);
          for (int q = 0; q < M; ++q) res[q][s][t] = relu ? ops::relu(o[q] + bias) : o[q] + bias;
        }
      }
      for (int q = 0; q < M && ty * M + q < h; ++q) {
        int b = t0 / tw, tx = t0 % tw;
        for (int t = 0; t < nt; ++t) {
          float* dst = chan + b * plane + static_cast<std::size_t>(ty * M + q) * w + tx * M;
          if (tx * M + M <= w) {
            for (int s = 0; s < M; ++s) dst[s] = res[q][s][t];
          } else {  // a ragged tile: keep only the columns inside the plane
            for (int s = 0; s < w - tx * M; ++s) dst[s] = res[q][s][t];
          }
          if (++tx == tw) tx = 0, ++b;
        }
      }
    }
  }
}

// U[p][k * cin + c] = (G g G^T)[p] for the kernel g = w[k][c] ([cout][cin][3][3], PyTorch's
// layout), in double and rounded once. With `flip`, the kernels of the input gradient instead:
// g'[i][j] = w[k][c][2 - i][2 - j] at U[p][c * cout + k] (a convolution from cout channels to
// cin channels).
template <int M>
void transform_kernels(const float* w, int cin, int cout, bool flip, float* u) {
  using X = Xf<M>;
  constexpr int A = X::a, L = 8;
  const std::size_t ps = static_cast<std::size_t>(cin) * cout;
  // L kernels at a time along U's contiguous index (c for U[k][c]; k for the flipped U[c][k]),
  // each lane's arithmetic exactly the one-kernel transform's, so that the compiler runs the
  // lanes as one vector (one kernel at a time, with U's stores a row apart when flipped, took
  // 11 % of a VGG16 fp32 training step).
  const int outer = flip ? cin : cout, inner = flip ? cout : cin;
  CTNN_OMP(parallel for schedule(static) if (ps * A * A > kThreadedStream))
  for (int o = 0; o < outer; ++o) {
    for (int i0 = 0; i0 < inner; i0 += L) {
      const int lanes = std::min(L, inner - i0);
      alignas(64) double gg[3][3][L], t[A][3][L], r[A][A][L];
      for (int l = 0; l < L; ++l) {
        const int i = i0 + std::min(l, lanes - 1);  // lanes past the end repeat the last kernel
        const float* g = w + (static_cast<std::size_t>(flip ? i : o) * cin + (flip ? o : i)) * 9;
        for (int a = 0; a < 3; ++a)
          for (int b = 0; b < 3; ++b) gg[a][b][l] = flip ? g[(2 - a) * 3 + (2 - b)] : g[a * 3 + b];
      }
      for (int j = 0; j < 3; ++j) {  // G along rows
        CTNN_OMP(simd)
        for (int l = 0; l < L; ++l) {
          const double in[3] = {gg[0][j][l], gg[1][j][l], gg[2][j][l]};
          double res[A];
          X::kernel(in, res);
          for (int a = 0; a < A; ++a) t[a][j][l] = res[a];
        }
      }
      for (int a = 0; a < A; ++a) {  // G along columns
        CTNN_OMP(simd)
        for (int l = 0; l < L; ++l) {
          const double in[3] = {t[a][0][l], t[a][1][l], t[a][2][l]};
          double res[A];
          X::kernel(in, res);
          for (int b = 0; b < A; ++b) r[a][b][l] = res[b];
        }
      }
      float* at = u + static_cast<std::size_t>(o) * inner + i0;  // U[k][c] at k * cin + c; flipped, c * cout + k
      for (int a = 0; a < A; ++a)
        for (int b = 0; b < A; ++b)
          for (int l = 0; l < lanes; ++l) at[(a * A + b) * ps + l] = static_cast<float>(r[a][b][l]);
    }
  }
}

// dw[k][c] (+)= G^T dU[.][c + k * cin] G, computed in double; dw in PyTorch's layout.
template <int M>
void inverse_kernels(const float* du, int cin, int cout, float* dw, bool accumulate, [[maybe_unused]] bool threaded) {
  using X = Xf<M>;
  constexpr int A = X::a;
  const std::size_t ps = static_cast<std::size_t>(cin) * cout;
  CTNN_OMP(parallel for schedule(static) if (threaded && ps * A * A > kThreadedStream))
  for (int k = 0; k < cout; ++k) {
    for (int c = 0; c < cin; ++c) {
      const std::size_t at = static_cast<std::size_t>(k) * cin + c;
      double t[3][A];
      for (int i = 0; i < A; ++i) {
        double in[A], r[3];
        for (int j = 0; j < A; ++j) in[j] = du[(i * A + j) * ps + at];
        X::kernel_t(in, r);
        for (int b = 0; b < 3; ++b) t[b][i] = r[b];
      }
      float* g = dw + at * 9;
      for (int b = 0; b < 3; ++b) {
        double r[3];
        X::kernel_t(t[b], r);  // G^T along the first index, for output column b
        for (int a = 0; a < 3; ++a) {
          const float v = static_cast<float>(r[a]);
          g[a * 3 + b] = accumulate ? g[a * 3 + b] + v : v;
        }
      }
    }
  }
}

inline constexpr std::size_t chunk_budget = std::size_t{1} << 20;  // floats per thread buffer
inline constexpr int min_chunks = 8, max_groups = 8;


// Images per chunk: as many as fit the budget, and at least min_chunks chunks so threads stay
// balanced. Depends only on the problem.
inline int chunk_images(const Winograd3x3& s, int tiles_per_image, int points) {
  const std::size_t per_image =
      static_cast<std::size_t>(points) * tiles_per_image * (s.in_channels + s.out_channels);
  const int cap = std::max(1, (s.batch + min_chunks - 1) / min_chunks);
  return static_cast<int>(std::clamp<std::size_t>(chunk_budget / per_image, 1, cap));
}

// Images per part of the by-point schedule: as many as fit s.point_budget, parts of equal size
// (but the last), at least one image.
inline int part_images(const Winograd3x3& s, int tiles_per_image, int points) {
  const std::size_t per_image =
      static_cast<std::size_t>(points) * tiles_per_image * (s.in_channels + s.out_channels);
  const int fit = static_cast<int>(std::clamp<std::size_t>(s.point_budget / per_image, 1, std::max(s.batch, 1)));
  const int parts = (s.batch + fit - 1) / fit;
  return (s.batch + parts - 1) / parts;
}

// y = conv(x, kernels u) + bias: u already transformed, (A*A) x (cin x cout) column-major.
template <int M>
void forward_core(const Winograd3x3& s, const float* x, const float* u, const float* bias, float* y) {
  constexpr int A = M + 2, P = A * A;
  const int n = s.batch, cin = s.in_channels, cout = s.out_channels, h = s.height, w = s.width;
  const std::size_t plane = static_cast<std::size_t>(h) * w, cs = plane * n;
  const int tpi = tiles_along(h, M) * tiles_along(w, M);
  const std::size_t ups = static_cast<std::size_t>(cin) * cout;
  if (n == 0) return;
  if (s.by_point) {
    const int nb = part_images(s, tpi, P);
    float* v = scratch(0, static_cast<std::size_t>(P) * nb * tpi * (cin + cout));
    for (int n0 = 0; n0 < n; n0 += nb) {
      const int cnt = std::min(nb, n - n0);
      const std::size_t tiles = static_cast<std::size_t>(cnt) * tpi;
      float* mm = v + P * tiles * cin;
      CTNN_OMP(parallel for schedule(static))
      for (int c = 0; c < cin; ++c) data_tiles<M>(x + c * cs + n0 * plane, cnt, h, w, v + c * tiles, tiles * cin);
      const Eigen::Index t = static_cast<Eigen::Index>(tiles);
      CTNN_OMP(parallel for schedule(dynamic, 1))
      for (int p = 0; p < P; ++p)
        gemm_serial({v + p * tiles * cin, t, cin, t}, {u + p * ups, cin, cout, cin}, {mm + p * tiles * cout, t, cout, t}, false, Precision::fp32);
      CTNN_OMP(parallel for schedule(static))
      for (int k = 0; k < cout; ++k)
        output_tiles<M>(mm + k * tiles, tiles * cout, bias ? bias[k] : 0.0f, s.relu, y + k * cs + n0 * plane, cnt, h, w);
    }
    return;
  }
  const int nb = chunk_images(s, tpi, P), chunks = (n + nb - 1) / nb;
  const std::size_t per_thread = static_cast<std::size_t>(P) * nb * tpi * (cin + cout);
  float* bufs = scratch(0, per_thread * num_threads());
  CTNN_OMP(parallel for schedule(dynamic, 1))
  for (int i = 0; i < chunks; ++i) {
    const int n0 = i * nb, cnt = std::min(nb, n - n0);
    const std::size_t tiles = static_cast<std::size_t>(cnt) * tpi;
    float* v = bufs + per_thread * thread_index();
    float* mm = v + P * tiles * cin;
    for (int c = 0; c < cin; ++c) data_tiles<M>(x + c * cs + n0 * plane, cnt, h, w, v + c * tiles, tiles * cin);
    const Eigen::Index t = static_cast<Eigen::Index>(tiles);
    for (int p = 0; p < P; ++p)
      gemm_serial({v + p * tiles * cin, t, cin, t}, {u + p * ups, cin, cout, cin}, {mm + p * tiles * cout, t, cout, t}, false, Precision::fp32);
    for (int k = 0; k < cout; ++k)
      output_tiles<M>(mm + k * tiles, tiles * cout, bias ? bias[k] : 0.0f, s.relu, y + k * cs + n0 * plane, cnt, h, w);
  }
}

template <int M>
void backward_weights_core(const Winograd3x3& s, const float* x, const float* dy, float* dw) {
  constexpr int A = M + 2, P = A * A;
  const int n = s.batch, cin = s.in_channels, cout = s.out_channels, h = s.height, w = s.width;
  const std::size_t plane = static_cast<std::size_t>(h) * w, cs = plane * n;
  const int tpi = tiles_along(h, M) * tiles_along(w, M);
  const std::size_t ups = static_cast<std::size_t>(cin) * cout;
  if (n == 0) return;  // no samples, no gradient
  if (s.by_point) {
    const int nb = part_images(s, tpi, P);
    float* v = scratch(0, static_cast<std::size_t>(P) * nb * tpi * (cin + cout));
    float* du = scratch(1, P * ups);
    // Parts are summed into du in batch order: their boundaries depend on the problem only.
    for (int n0 = 0; n0 < n; n0 += nb) {
      const int cnt = std::min(nb, n - n0);
      const std::size_t tiles = static_cast<std::size_t>(cnt) * tpi;
      float* gy = v + P * tiles * cin;
      CTNN_OMP(parallel for schedule(static))
      for (int c = 0; c < cin + cout; ++c) {
        if (c < cin)
          data_tiles<M>(x + c * cs + n0 * plane, cnt, h, w, v + c * tiles, tiles * cin);
        else
          grad_tiles<M>(dy + (c - cin) * cs + n0 * plane, cnt, h, w, gy + (c - cin) * tiles, tiles * cout);
      }
      const Eigen::Index t = static_cast<Eigen::Index>(tiles);
      CTNN_OMP(parallel for schedule(dynamic, 1))
      for (int p = 0; p < P; ++p)
        gemm_serial(MatRef{v + p * tiles * cin, t, cin, t}.t(), {gy + p * tiles * cout, t, cout, t},
                    {du + p * ups, cin, cout, cin}, /*accumulate=*/n0 > 0, Precision::fp32);
    }
    inverse_kernels<M>(du, cin, cout, dw, /*accumulate=*/true, /*threaded=*/true);
    return;
  }
  const int nb = chunk_images(s, tpi, P), chunks = (n + nb - 1) / nb, groups = std::min(chunks, max_groups);
  const std::size_t per_thread = static_cast<std::size_t>(P) * nb * tpi * (cin + cout);
  const int threads = num_threads();
  float* bufs = scratch(0, per_thread * threads);
  // Slot 1: one Winograd-domain accumulator per thread, then one 3x3-domain partial per group.
  float* acc = scratch(1, P * ups * threads + 9 * ups * groups);
  float* partials = acc + P * ups * threads;
  CTNN_OMP(parallel for schedule(dynamic, 1))
  for (int gi = 0; gi < groups; ++gi) {
    const int tid = thread_index();
    float* v = bufs + per_thread * tid;
    float* du = acc + P * ups * tid;
    const int first = gi * chunks / groups, last = (gi + 1) * chunks / groups;
    for (int i = first; i < last; ++i) {
      const int n0 = i * nb, cnt = std::min(nb, n - n0);
      const std::size_t tiles = static_cast<std::size_t>(cnt) * tpi;
      float* gy = v + P * tiles * cin;
      for (int c = 0; c < cin; ++c)
        data_tiles<M>(x + c * cs + n0 * plane, cnt, h, w, v + c * tiles, tiles * cin);
      for (int k = 0; k < cout; ++k)
        grad_tiles<M>(dy + k * cs + n0 * plane, cnt, h, w, gy + k * tiles, tiles * cout);
      const Eigen::Index t = static_cast<Eigen::Index>(tiles);
      for (int p = 0; p < P; ++p)
        gemm_serial(MatRef{v + p * tiles * cin, t, cin, t}.t(), {gy + p * tiles * cout, t, cout, t},
                    {du + p * ups, cin, cout, cin}, /*accumulate=*/i != first, Precision::fp32);
    }
    // Back to 3x3 per group: the partials to be summed are 9/P the size.
    inverse_kernels<M>(du, cin, cout, partials + 9 * ups * gi, /*accumulate=*/false, /*threaded=*/false);
  }
  add_group_partials(partials, groups, 9 * ups, dw);
}

}  // namespace winograd_detail

// y = conv3x3(x, w) + bias (bias may be null), stride 1, padding 1. x: (cin, N, H, W); y:
// (cout, N, H, W); w: [cout][cin][3][3]. The transformed kernels are taken from `cache` where
// it holds them for these weights (unless null), else made again.
inline void winograd_forward(const Winograd3x3& s, const float* x, const float* w, const float* bias, float* y,
                             WeightCache* cache = nullptr) {
  using namespace winograd_detail;
  const int points = (s.tile + 2) * (s.tile + 2);
  const std::size_t kernels = static_cast<std::size_t>(s.in_channels) * s.out_channels;
  const auto transform = [&](float* u) {
    if (s.tile == 4) transform_kernels<4>(w, s.in_channels, s.out_channels, false, u);
    else transform_kernels<2>(w, s.in_channels, s.out_channels, false, u);
  };
  const float* u = transformed_weights(cache, w, 9 * kernels, s.tile, points * kernels, transform);
  if (s.tile == 4) forward_core<4>(s, x, u, bias, y);
  else forward_core<2>(s, x, u, bias, y);
}

// dx = the input gradient of that convolution for the output gradient dy (overwritten).
inline void winograd_backward_data(const Winograd3x3& s, const float* dy, const float* w, float* dx) {
  using namespace winograd_detail;
  const int points = (s.tile + 2) * (s.tile + 2);
  Winograd3x3 t = s;  // a convolution from cout channels back to cin
  t.in_channels = s.out_channels;
  t.out_channels = s.in_channels;
  t.relu = false;
  float* u = scratch(1, static_cast<std::size_t>(points) * s.in_channels * s.out_channels);
  if (s.tile == 4) {
    transform_kernels<4>(w, s.in_channels, s.out_channels, true, u);
    forward_core<4>(t, dy, u, nullptr, dx);
  } else {
    transform_kernels<2>(w, s.in_channels, s.out_channels, true, u);
    forward_core<2>(t, dy, u, nullptr, dx);
  }
}

// dw += the weight gradient for input x and output gradient dy; dw: [cout][cin][3][3].
inline void winograd_backward_weights(const Winograd3x3& s, const float* x, const float* dy, float* dw) {
  if (s.tile == 4)
    winograd_detail::backward_weights_core<4>(s, x, dy, dw);
  else
    winograd_detail::backward_weights_core<2>(s, x, dy, dw);
}

}  // namespace ctnn::ops
