// im2col / col2im for channel-major (C, N, H, W) batches.
//
// For a chunk of `nb` samples starting at sample n0, the patch matrix is column-major with
// nb*Ho*Wo rows (sample, output y, output x) and Cin*K*K columns (channel, ky, kx): column j
// is the input plane of one channel shifted by (ky, kx) for every sample of the chunk. Its
// product with the weight viewed as (Cin*K*K x Cout) gives the chunk's output rows directly
// in the output batch's layout. The column order matches PyTorch's weight layout
// [Cout][Cin][K][K], so weights are used as stored.
#pragma once

#include <algorithm>
#include <cstddef>

#include "ctnn/core/threading.hpp"  // kThreadedWork

namespace ctnn::ops {

struct ConvGeometry {
  int in_channels, height, width;   // input sample
  int kernel, stride, padding;
  int out_height, out_width;
  int batch;                        // N of the whole batch (the channel stride is N*H*W)
  std::size_t in_channel_stride() const { return static_cast<std::size_t>(batch) * height * width; }
  int out_plane() const { return out_height * out_width; }
  int patch() const { return in_channels * kernel * kernel; }
};

namespace detail {
// Small output planes (ResNet's 7x7, 4x4 and 2x2 layers): rows of 2-7 pixels are too short for
// the run-copy loops below, so each kernel offset gets a table of source pixels (-1 where it
// falls in the padding) and every plane becomes one gather or scatter.
inline constexpr int small_plane_max = 64, small_kernel_area_max = 9;
inline bool small_plane(const ConvGeometry& g) {
  return g.out_plane() <= small_plane_max && g.kernel * g.kernel <= small_kernel_area_max;
}
// table[r * out_plane + p]: offset in the input plane read by output pixel p at kernel offset r.
inline void small_plane_table(const ConvGeometry& g, int* table) {
  for (int r = 0; r < g.kernel * g.kernel; ++r) {
    const int ky = r / g.kernel, kx = r % g.kernel;
    for (int oy = 0; oy < g.out_height; ++oy)
      for (int ox = 0; ox < g.out_width; ++ox) {
        const int iy = oy * g.stride - g.padding + ky, ix = ox * g.stride - g.padding + kx;
        const bool inside = iy >= 0 && iy < g.height && ix >= 0 && ix < g.width;
        *table++ = inside ? iy * g.width + ix : -1;
      }
  }
}
}  // namespace detail

// col (ld = nb * out_plane) <- patches of samples [n0, n0 + nb) of `in`. `threaded` = false
// when the caller is itself one iteration of a parallel loop.
inline void im2col(const float* in, const ConvGeometry& g, int n0, int nb, float* col,
                   [[maybe_unused]] bool threaded = true) {
  const std::size_t ld = static_cast<std::size_t>(nb) * g.out_plane();
  const int kk = g.kernel * g.kernel;
  if (detail::small_plane(g)) {
    int table[detail::small_plane_max * detail::small_kernel_area_max];
    detail::small_plane_table(g, table);
    const int plane = g.out_plane(), in_plane = g.height * g.width;
    CTNN_OMP(parallel for schedule(static) if (threaded && ld * g.patch() > kThreadedWork))
    for (int j = 0; j < g.patch(); ++j) {
      const int* t = table + (j % kk) * plane;
      const float* src = in + (j / kk) * g.in_channel_stride() + static_cast<std::size_t>(n0) * in_plane;
      float* dst = col + j * ld;
      for (int b = 0; b < nb; ++b, src += in_plane, dst += plane)
        for (int p = 0; p < plane; ++p) dst[p] = t[p] >= 0 ? src[t[p]] : 0.0f;
    }
    return;
  }
  CTNN_OMP(parallel for schedule(static) if (threaded && ld * g.patch() > kThreadedWork))
  for (int j = 0; j < g.patch(); ++j) {
    const int c = j / kk, ky = (j % kk) / g.kernel, kx = j % g.kernel;
    float* dst = col + j * ld;
    for (int b = 0; b < nb; ++b) {
      const float* plane = in + c * g.in_channel_stride() +
                           static_cast<std::size_t>(n0 + b) * g.height * g.width;
      for (int oy = 0; oy < g.out_height; ++oy) {
        const int iy = oy * g.stride - g.padding + ky;
        if (iy < 0 || iy >= g.height) {
          for (int ox = 0; ox < g.out_width; ++ox) *dst++ = 0.0f;
          continue;
        }
        const float* row = plane + iy * g.width;
        if (g.stride == 1) {
          // Contiguous run with zero margins: the common case, kept branch-free inside.
          const int shift = kx - g.padding;
          const int lo = shift < 0 ? (-shift < g.out_width ? -shift : g.out_width) : 0;
          const int hi = g.width - shift < g.out_width ? g.width - shift : g.out_width;
          int ox = 0;
          for (; ox < lo; ++ox) *dst++ = 0.0f;
          for (; ox < hi; ++ox) *dst++ = row[ox + shift];
          for (; ox < g.out_width; ++ox) *dst++ = 0.0f;
        } else {
          // Strided: the outputs whose input column ox * stride + shift lies inside the row
          // form one range [lo, hi); zeros on either side.
          const int shift = kx - g.padding;
          const int lo = std::min(shift >= 0 ? 0 : (g.stride - 1 - shift) / g.stride, g.out_width);
          const int hi = std::max(lo, std::min(g.width - 1 - shift >= 0 ? (g.width - 1 - shift) / g.stride + 1 : 0,
                                               g.out_width));
          int ox = 0;
          for (; ox < lo; ++ox) *dst++ = 0.0f;
          for (; ox < hi; ++ox) *dst++ = row[ox * g.stride + shift];
          for (; ox < g.out_width; ++ox) *dst++ = 0.0f;
        }
      }
    }
  }
}

// in += col2im(col): scatters the gradient of the patch matrix back onto the input samples
// [n0, n0 + nb). Each thread owns whole input channels, and within a channel the patch
// columns are added in a fixed order, so sums do not depend on the thread count.
inline void col2im_add(const float* col, const ConvGeometry& g, int n0, int nb, float* in,
                       [[maybe_unused]] bool threaded = true) {
  const std::size_t ld = static_cast<std::size_t>(nb) * g.out_plane();
  const int kk = g.kernel * g.kernel;
  if (detail::small_plane(g)) {  // same order of additions as the general loop below
    int table[detail::small_plane_max * detail::small_kernel_area_max];
    detail::small_plane_table(g, table);
    const int plane = g.out_plane(), in_plane = g.height * g.width;
    CTNN_OMP(parallel for schedule(static) if (threaded && ld * g.patch() > kThreadedWork))
    for (int c = 0; c < g.in_channels; ++c) {
      for (int r = 0; r < kk; ++r) {
        const int* t = table + r * plane;
        const float* src = col + (static_cast<std::size_t>(c) * kk + r) * ld;
        float* dst = in + c * g.in_channel_stride() + static_cast<std::size_t>(n0) * in_plane;
        for (int b = 0; b < nb; ++b, src += plane, dst += in_plane)
          for (int p = 0; p < plane; ++p)
            if (t[p] >= 0) dst[t[p]] += src[p];
      }
    }
    return;
  }
  CTNN_OMP(parallel for schedule(static) if (threaded && ld * g.patch() > kThreadedWork))
  for (int c = 0; c < g.in_channels; ++c) {
    for (int r = 0; r < kk; ++r) {
      const int ky = r / g.kernel, kx = r % g.kernel;
      const float* src = col + (static_cast<std::size_t>(c) * kk + r) * ld;
      for (int b = 0; b < nb; ++b) {
        float* plane = in + c * g.in_channel_stride() +
                       static_cast<std::size_t>(n0 + b) * g.height * g.width;
        for (int oy = 0; oy < g.out_height; ++oy) {
          const int iy = oy * g.stride - g.padding + ky;
          if (iy < 0 || iy >= g.height) {
            src += g.out_width;
            continue;
          }
          float* row = plane + iy * g.width;
          for (int ox = 0; ox < g.out_width; ++ox, ++src) {
            const int ix = ox * g.stride - g.padding + kx;
            if (ix >= 0 && ix < g.width) row[ix] += *src;
          }
        }
      }
    }
  }
}

}  // namespace ctnn::ops
