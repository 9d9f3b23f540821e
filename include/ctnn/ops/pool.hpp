// Pooling kernels on one (H x W) plane. Plain functions: the layers loop over planes.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace ctnn::ops {

struct PoolGeometry {
  int height, width, kernel, stride, padding, out_height, out_width;
};

// Max pooling with implicit -inf padding. Records, for each output, the index in the plane
// of the value it took: the first maximum in scan order, or the last NaN if the window holds one,
// as PyTorch 1.13's CPU kernel, which scans the whole window and takes a value if
// `val > maxval || isnan(val)`.
inline void max_pool_plane(const float* in, const PoolGeometry& g, float* out, std::int32_t* arg) {
  for (int oy = 0; oy < g.out_height; ++oy) {
    for (int ox = 0; ox < g.out_width; ++ox) {
      const int y0 = oy * g.stride - g.padding, x0 = ox * g.stride - g.padding;
      float best = -std::numeric_limits<float>::infinity();
      std::int32_t best_i = -1;
      for (int ky = 0; ky < g.kernel; ++ky) {
        const int iy = y0 + ky;
        if (iy < 0 || iy >= g.height) continue;
        for (int kx = 0; kx < g.kernel; ++kx) {
          const int ix = x0 + kx;
          if (ix < 0 || ix >= g.width) continue;
          const float v = in[iy * g.width + ix];
          if (v > best || std::isnan(v) || best_i < 0) {
            best = v;
            best_i = iy * g.width + ix;
          }
        }
      }
      out[oy * g.out_width + ox] = best;
      arg[oy * g.out_width + ox] = best_i;
    }
  }
}

// The scan rule of max_pool_plane without a branch, for the kernels below that the compiler
// vectorises: a later value v replaces the maximum so far m if it is larger or a NaN (`|`, not
// `||`: no branch to vectorise around).
inline bool max_replaces(float v, float m) { return (v > m) | (v != v); }

// The same for a 2x2 window with stride 2 and no padding (all of VGG16's pools), in two
// passes per output row that the compiler vectorises (one chain of four compares does not
// vectorise): the first row's pairs, then the second row's pairs, each pair's result replacing
// the first row's if it is larger or a NaN. That is max_pool_plane's scan, the same values and
// indices: the last NaN of the window if it holds one, else its first maximum (max_replaces).
inline void max_pool_plane_2x2(const float* in, const PoolGeometry& g, float* out, std::int32_t* arg) {
  const int width = g.width, out_width = g.out_width;  // locals: the stores below cannot change them
  for (int oy = 0; oy < g.out_height; ++oy) {
    const std::int32_t top = 2 * oy * width;
    const float* r0 = in + top;
    const float* r1 = r0 + width;
    float* o = out + oy * out_width;
    std::int32_t* a = arg + oy * out_width;
    for (int ox = 0; ox < out_width; ++ox) {
      const float v0 = r0[2 * ox], v1 = r0[2 * ox + 1];
      const bool right = max_replaces(v1, v0);
      o[ox] = right ? v1 : v0;
      a[ox] = top + 2 * ox + right;
    }
    for (int ox = 0; ox < out_width; ++ox) {
      const float v2 = r1[2 * ox], v3 = r1[2 * ox + 1];
      const bool right = max_replaces(v3, v2);
      const float m = right ? v3 : v2, above = o[ox];
      // max_replaces(m, above), with m's NaN test on the pair itself (m is a NaN exactly when
      // v2 or v3 is): tested on the select, GCC 12 left this loop scalar.
      const bool below = (m > above) | __builtin_isunordered(v2, v3);
      o[ox] = below ? m : above;
      a[ox] = below ? top + width + 2 * ox + right : a[ox];
    }
  }
}

// The same for a K x K window with stride S and no padding on planes whose width S divides
// (ResNet's 3x3 stride-2 stem pool, 16 -> 7), in two passes that the compiler vectorises. First
// each row's maximum over kx for every column start S*c: with `cols` = width / S of them per
// row, row maximum i starts at input S*i, an affine walk over the whole plane however short the
// rows. Then each output combines its K row maxima over ky. Both passes keep max_pool_plane's
// rule (max_replaces), and the last NaN or first maximum of each row, then of the rows in
// order, is the last NaN or first maximum of the window in scan order: the same values and
// indices. (The branchy scan took 10 ms of a 97 ms ResNet50_layer4 evaluation step under
// bf16 on the Xeon with AMX, 2 threads.) row_max and row_arg hold width / S * height values.
template <int K, int S>
inline void max_pool_plane_by_rows(const float* in, const PoolGeometry& g, float* out, std::int32_t* arg, float* row_max,
                                   std::int32_t* row_arg) {
  const int cols = g.width / S, out_width = g.out_width;
  // Row maxima up to the last one an output reads: row (out_height - 1) * S + K - 1, column
  // out_width - 1 (its window ends inside the row: S * (out_width - 1) + K <= width).
  const int count = ((g.out_height - 1) * S + K - 1) * cols + out_width;
  for (int i = 0; i < count; ++i) {
    row_max[i] = in[S * i];
    row_arg[i] = S * i;
  }
  for (int kx = 1; kx < K; ++kx)  // one pass per offset: an inner loop over kx would not vectorise
    for (int i = 0; i < count; ++i) {
      const float v = in[S * i + kx], m = row_max[i];
      const bool take = max_replaces(v, m);
      row_max[i] = take ? v : m;
      row_arg[i] = take ? S * i + kx : row_arg[i];
    }
  for (int oy = 0; oy < g.out_height; ++oy) {
    float* o = out + oy * out_width;
    std::int32_t* a = arg + oy * out_width;
    const float* r = row_max + oy * S * cols;
    const std::int32_t* ra = row_arg + oy * S * cols;
    for (int ox = 0; ox < out_width; ++ox) {
      o[ox] = r[ox];
      a[ox] = ra[ox];
    }
    for (int ky = 1; ky < K; ++ky)
      for (int ox = 0; ox < out_width; ++ox) {
        const float v = r[ky * cols + ox], m = o[ox];
        const bool take = max_replaces(v, m);
        o[ox] = take ? v : m;
        a[ox] = take ? ra[ky * cols + ox] : a[ox];
      }
  }
}

inline void max_pool_plane_backward(const float* dy, const std::int32_t* arg, int outputs, float* dx) {
  for (int i = 0; i < outputs; ++i) dx[arg[i]] += dy[i];
}

// Average pooling without padding: the sum of the window in scan order, divided by K*K.
inline void avg_pool_plane(const float* in, const PoolGeometry& g, float* out) {
  const float divisor = static_cast<float>(g.kernel * g.kernel);
  for (int oy = 0; oy < g.out_height; ++oy)
    for (int ox = 0; ox < g.out_width; ++ox) {
      float s = 0.0f;
      for (int ky = 0; ky < g.kernel; ++ky)
        for (int kx = 0; kx < g.kernel; ++kx)
          s += in[(oy * g.stride + ky) * g.width + ox * g.stride + kx];
      out[oy * g.out_width + ox] = s / divisor;
    }
}

inline void avg_pool_plane_backward(const float* dy, const PoolGeometry& g, float* dx) {
  const float divisor = static_cast<float>(g.kernel * g.kernel);
  for (int oy = 0; oy < g.out_height; ++oy)
    for (int ox = 0; ox < g.out_width; ++ox) {
      const float v = dy[oy * g.out_width + ox] / divisor;
      for (int ky = 0; ky < g.kernel; ++ky)
        for (int kx = 0; kx < g.kernel; ++kx) dx[(oy * g.stride + ky) * g.width + ox * g.stride + kx] += v;
    }
}

}  // namespace ctnn::ops
