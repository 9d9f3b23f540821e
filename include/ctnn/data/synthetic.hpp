// SYNTHETIC stand-in for CIFAR-10: CIFAR-shaped (3x32x32 uint8) labelled images generated
// from a seed, for smoke runs and benchmarks on machines without the real data set.
//
// It is not CIFAR-10 and must never be reported as such: the Dataset it returns has
// synthetic = true, class names "synthetic_0".."synthetic_9" and a description that starts
// with "SYNTHETIC".
//
// The data is learnable on purpose, so a smoke run can see the loss fall: class k has its own
// colour and its own stripe orientation and period, and each image adds a random stripe phase,
// a random brightness shift and per-pixel noise, so no two images are identical and a network
// has to pick up the class pattern rather than memorise pixels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "ctnn/core/random.hpp"
#include "ctnn/core/threading.hpp"
#include "ctnn/data/dataset.hpp"

namespace ctnn::data {

// `count` images; image i is a pure function of (seed, i), so generation is parallel and the
// result does not depend on the thread count.
inline Dataset make_synthetic_cifar(int count, std::uint64_t seed) {
  if (count < 0) throw std::invalid_argument("ctnn::data::make_synthetic_cifar: negative count");

  // Per class: base colour, and stripe direction (0 rows, 1 columns, 2 diagonal) and period.
  static constexpr std::uint8_t colour[kNumClasses][3] = {
      {200, 60, 60}, {60, 200, 60}, {60, 60, 200}, {200, 200, 60}, {200, 60, 200},
      {60, 200, 200}, {230, 140, 40}, {120, 60, 180}, {150, 150, 150}, {40, 90, 60}};
  static constexpr int direction[kNumClasses] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 0};
  static constexpr int period[kNumClasses] = {4, 6, 8, 8, 4, 6, 6, 8, 4, 5};

  Dataset d;
  d.labels.resize(static_cast<std::size_t>(count));
  detail::allocate_bytes(d.pixels, static_cast<std::size_t>(count) * kImageBytes);
  const std::uint64_t key = mix64(seed ^ 0x73796e746865ULL);

  CTNN_OMP(parallel for schedule(static))
  for (int i = 0; i < count; ++i) {
    Rng rng = Rng::stream(key, static_cast<std::uint64_t>(i));
    const int k = static_cast<int>(rng.below(kNumClasses));
    const int phase = static_cast<int>(rng.below(static_cast<std::uint64_t>(period[k])));
    const int brightness = static_cast<int>(rng.below(49)) - 24;
    std::uint8_t* img = d.image(i);
    for (int y = 0; y < kImageSide; ++y)
      for (int x = 0; x < kImageSide; ++x) {
        const int t = direction[k] == 0 ? y : direction[k] == 1 ? x : x + y;
        const bool stripe = ((t + phase) % period[k]) < period[k] / 2;
        for (int c = 0; c < kImageChannels; ++c) {
          // Stripes darken the class colour; noise is uniform in [-40, 40].
          int v = colour[k][c] * (stripe ? 1 : 2) / 2 + brightness + static_cast<int>(rng.below(81)) - 40;
          img[c * kImagePlane + y * kImageSide + x] = static_cast<std::uint8_t>(std::clamp(v, 0, 255));
        }
      }
    d.labels[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(k);
  }

  for (int k = 0; k < kNumClasses; ++k) d.class_names.push_back("synthetic_" + std::to_string(k));
  d.description = "SYNTHETIC CIFAR-shaped data, not CIFAR-10 (" + std::to_string(count) +
                  " images, seed " + std::to_string(seed) + ")";
  d.synthetic = true;
  return d;
}

}  // namespace ctnn::data
