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
// of the value it took: the first maximum in scan order, and a NaN wins (as PyTorch).
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
            if (std::isnan(v)) goto done;
          }
        }
      }
    done:
      out[oy * g.out_width + ox] = best;
      arg[oy * g.out_width + ox] = best_i;
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
