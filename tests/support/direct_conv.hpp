// A direct convolution in double, any kernel, stride and padding, on ctnn's channel-major
// (C, N, H, W) batches: the exact values a convolution's forward and three gradients should
// have, and, for each value, the sum of the magnitudes of the products that make it (the scale
// that bounds a float computation's rounding error whatever the order of its sums).
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "ctnn/ops/conv2d.hpp"

namespace ctnn::test {

struct DirectConv {
  std::vector<double> y, dx, dw, db;                  // y = conv(x, w) + b (no ReLU)
  std::vector<double> y_terms, dx_terms, dw_terms, db_terms;  // sums of |product|
};

inline DirectConv direct_conv(const ops::ConvShape& s, int n, const std::vector<float>& x, const std::vector<float>& w,
                              const std::vector<float>& b, const std::vector<float>& dy) {
  const int oh = s.out_height(), ow = s.out_width(), k = s.kernel;
  const std::size_t in_plane = static_cast<std::size_t>(s.height) * s.width, out_plane = static_cast<std::size_t>(oh) * ow;
  const std::size_t in_cs = in_plane * n, out_cs = out_plane * n;
  DirectConv r;
  r.y.assign(out_cs * s.out_channels, 0.0);
  r.y_terms = r.y;
  r.dx.assign(x.size(), 0.0);
  r.dx_terms = r.dx;
  r.dw.assign(w.size(), 0.0);
  r.dw_terms = r.dw;
  r.db.assign(s.out_channels, 0.0);
  r.db_terms = r.db;
  for (int o = 0; o < s.out_channels; ++o)
    for (int i = 0; i < n; ++i)
      for (int oy = 0; oy < oh; ++oy)
        for (int ox = 0; ox < ow; ++ox) {
          const std::size_t yi = o * out_cs + i * out_plane + static_cast<std::size_t>(oy) * ow + ox;
          const double g = dy[yi];
          r.y[yi] = b[o];
          r.y_terms[yi] = std::abs(b[o]);
          r.db[o] += g;
          r.db_terms[o] += std::abs(g);
          for (int c = 0; c < s.in_channels; ++c)
            for (int ky = 0; ky < k; ++ky)
              for (int kx = 0; kx < k; ++kx) {
                const int iy = oy * s.stride - s.padding + ky, ix = ox * s.stride - s.padding + kx;
                if (iy < 0 || iy >= s.height || ix < 0 || ix >= s.width) continue;
                const std::size_t xi = c * in_cs + i * in_plane + static_cast<std::size_t>(iy) * s.width + ix;
                const std::size_t wi = ((static_cast<std::size_t>(o) * s.in_channels + c) * k + ky) * k + kx;
                r.y[yi] += double(w[wi]) * x[xi];
                r.y_terms[yi] += std::abs(double(w[wi]) * x[xi]);
                r.dx[xi] += double(w[wi]) * g;
                r.dx_terms[xi] += std::abs(double(w[wi]) * g);
                r.dw[wi] += double(x[xi]) * g;
                r.dw_terms[wi] += std::abs(double(x[xi]) * g);
              }
        }
  return r;
}

}  // namespace ctnn::test
