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

// The same for a 2x2 window with stride 2 and no padding (all of VGG16's pools), in two
// passes per output row that the compiler vectorises (one chain of four compares does not
// vectorise): the first row's pairs, then the second row's pairs, each pair's result replacing
// the first row's if it is larger or a NaN, unless that is a NaN. That is max_pool_plane's
// scan, the same values and indices: the first NaN of the window if it holds one, else its first
// maximum. The compares are `&`-ed, not `&&`-ed, so that there is no branch to vectorise around.
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
      const bool right = !(v1 <= v0) & (v0 == v0);  // v1 > v0, or v1 is a NaN and v0 is not
      o[ox] = right ? v1 : v0;
      a[ox] = top + 2 * ox + right;
    }
    for (int ox = 0; ox < out_width; ++ox) {
      const float v2 = r1[2 * ox], v3 = r1[2 * ox + 1];
      const bool right = !(v3 <= v2) & (v2 == v2);
      const float m = right ? v3 : v2, above = o[ox];
      const bool below = !(m <= above) & (above == above);
      o[ox] = below ? m : above;
      a[ox] = below ? top + width + 2 * ox + right : a[ox];
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
