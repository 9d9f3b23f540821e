// The assignment's image transforms with torchvision's semantics:
//
//   train: RandomCrop(32, padding=4) -> RandomHorizontalFlip(p=0.5) -> ToTensor -> Normalize
//   test:  ToTensor -> Normalize
//
// As in torchvision, the geometric transforms act on the uint8 image (so crop padding is a zero
// byte, which Normalize later maps to -mean/std), and ToTensor / Normalize produce float32 with
// the same operations in the same order: x = float(v) / 255, then (x - mean[c]) / std[c].
// No reciprocal multiplies and no fused multiply-adds, so the results equal torchvision's bit
// for bit (checked against a fixture in tests/data/).
//
// Each random transform separates drawing its parameters (get_params, as in torchvision) from
// applying them. The loader draws them from a per-sample random stream, and tests can apply
// chosen offsets and flips directly.
//
// Images are planar uint8 (C, H, W) = (3, 32, 32), the CIFAR file order (see Dataset).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "ctnn/core/random.hpp"
#include "ctnn/data/dataset.hpp"

namespace ctnn::data {

// uint8 -> float32 in [0, 1], as torchvision.transforms.ToTensor (float division by 255).
struct ToTensor {
  float operator()(std::uint8_t v) const { return static_cast<float>(v) / 255.0f; }

  void operator()(const std::uint8_t* src, float* dst, std::size_t count) const {
    for (std::size_t i = 0; i < count; ++i) dst[i] = (*this)(src[i]);
  }
};

// Per-channel (x - mean) / std in float32, as torchvision.transforms.Normalize.
// The defaults are the assignment's CIFAR-10 statistics.
struct Normalize {
  std::array<float, kImageChannels> mean{0.4914f, 0.4822f, 0.4465f};
  std::array<float, kImageChannels> stddev{0.2023f, 0.1994f, 0.2010f};

  static Normalize cifar10() { return Normalize{}; }

  float operator()(int c, float x) const { return (x - mean[static_cast<std::size_t>(c)]) / stddev[static_cast<std::size_t>(c)]; }

  // In place on one planar float image (channel c at image + c * kImagePlane).
  void operator()(float* image) const {
    for (int c = 0; c < kImageChannels; ++c)
      for (int i = 0; i < kImagePlane; ++i) image[c * kImagePlane + i] = (*this)(c, image[c * kImagePlane + i]);
  }

  // In place on a whole batch (each channel is one contiguous run in the batch layout).
  void operator()(ImageBatch& batch) const {
    for (int c = 0; c < kImageChannels; ++c) {
      float* v = batch.channel(c);
      for (std::size_t i = 0; i < batch.channel_stride(); ++i) v[i] = (*this)(c, v[i]);
    }
  }
};

// Top-left corner of the crop window in the padded image; each in [0, 2 * padding].
// (padding, padding) is the unshifted image.
struct CropParams {
  int top = 4;
  int left = 4;
  bool operator==(const CropParams&) const = default;
};

// RandomCrop(32, padding) for 32x32 images: pad `padding` pixels of value `fill` on every side,
// then cut the 32x32 window at (top, left). The padded image is never built: an output pixel
// reads the source pixel it lands on, or `fill` if it lands in the border.
struct RandomCrop {
  int padding = 4;
  std::uint8_t fill = 0;

  CropParams centre() const { return {padding, padding}; }

  // torchvision's get_params: top, then left, each uniform over the 2 * padding + 1 positions.
  CropParams get_params(Rng& rng) const {
    const auto positions = static_cast<std::uint64_t>(2 * std::int64_t{padding} + 1);
    CropParams p;
    p.top = static_cast<int>(rng.below(positions));
    p.left = static_cast<int>(rng.below(positions));
    return p;
  }

  void check(const CropParams& p) const {
    const std::int64_t last = 2 * std::int64_t{padding};  // (in 64 bits: a padding of 2^30 fits)
    if (p.top < 0 || p.top > last || p.left < 0 || p.left > last)
      throw std::invalid_argument("ctnn::data::RandomCrop: offsets (" + std::to_string(p.top) + ", " +
                                  std::to_string(p.left) + ") outside [0, " + std::to_string(last) + "]");
  }

  void operator()(const std::uint8_t* src, std::uint8_t* dst, const CropParams& p) const {
    check(p);
    for (int c = 0; c < kImageChannels; ++c)
      for (int y = 0; y < kImageSide; ++y)
        for (int x = 0; x < kImageSide; ++x) {
          const int sy = y + p.top - padding;
          const int sx = x + p.left - padding;
          const bool inside = sy >= 0 && sy < kImageSide && sx >= 0 && sx < kImageSide;
          dst[c * kImagePlane + y * kImageSide + x] = inside ? src[c * kImagePlane + sy * kImageSide + sx] : fill;
        }
  }
};

// RandomHorizontalFlip(p): mirror left-right with probability p.
struct RandomHorizontalFlip {
  double p = 0.5;

  // torchvision flips when a uniform draw is below p.
  bool get_params(Rng& rng) const { return rng.bernoulli(p); }

  void operator()(const std::uint8_t* src, std::uint8_t* dst, bool flip) const {
    for (int c = 0; c < kImageChannels; ++c)
      for (int y = 0; y < kImageSide; ++y)
        for (int x = 0; x < kImageSide; ++x)
          dst[c * kImagePlane + y * kImageSide + x] =
              src[c * kImagePlane + y * kImageSide + (flip ? kImageSide - 1 - x : x)];
  }
};

// The random choices for one sample, in torchvision's draw order (crop, then flip).
struct AugmentParams {
  CropParams crop;
  bool flip = false;
  bool operator==(const AugmentParams&) const = default;
};

// The whole per-image pipeline, fused: crop, flip, ToTensor and Normalize in one pass from
// the uint8 image straight into a batch slot. The value of an output pixel depends only on
// its channel and source byte, so the float conversion is a 256-entry table per channel,
// built with the very ToTensor and Normalize arithmetic above (identical results, a table
// lookup per pixel).
class CifarTransform {
 public:
  explicit CifarTransform(bool augment, Normalize normalize = {}, RandomCrop crop = {},
                          RandomHorizontalFlip flip = {})
      : augment_(augment), normalize_(normalize), crop_(crop), flip_(flip) {
    // (past 2^20 every window but a few lies wholly in the border: nothing a data set wants)
    if (crop_.padding < 0 || crop_.padding > (1 << 20))
      throw std::invalid_argument("ctnn::data::CifarTransform: crop padding must be between 0 and 1048576, got " +
                                  std::to_string(crop_.padding));
    const ToTensor to_tensor;
    for (int c = 0; c < kImageChannels; ++c)
      for (int v = 0; v < 256; ++v)
        table_[static_cast<std::size_t>(c * 256 + v)] = normalize_(c, to_tensor(static_cast<std::uint8_t>(v)));
  }

  // RandomCrop(32, padding=4) + RandomHorizontalFlip(0.5) + ToTensor + Normalize.
  static CifarTransform train(Normalize normalize = {}) { return CifarTransform(true, normalize); }
  // ToTensor + Normalize.
  static CifarTransform test(Normalize normalize = {}) { return CifarTransform(false, normalize); }

  bool augments() const { return augment_; }
  const Normalize& normalize() const { return normalize_; }
  const RandomCrop& crop() const { return crop_; }
  const RandomHorizontalFlip& flip() const { return flip_; }

  // The parameters that leave the image unchanged.
  AugmentParams identity() const { return {crop_.centre(), false}; }

  // The parameters for one sample; draws nothing when not augmenting.
  AugmentParams draw(Rng& rng) const {
    if (!augment_) return identity();
    AugmentParams p;
    p.crop = crop_.get_params(rng);
    p.flip = flip_.get_params(rng);
    return p;
  }

  // Transforms `src` with explicit parameters and writes channel c at dst + c * channel_stride
  // (kImagePlane for a lone planar image; see the batch overload for a batch slot).
  void operator()(const std::uint8_t* src, const AugmentParams& p, float* dst, std::size_t channel_stride) const {
    crop_.check(p.crop);
    const int pad = crop_.padding;
    for (int c = 0; c < kImageChannels; ++c) {
      const float* table = table_.data() + c * 256;
      const float border = table[crop_.fill];
      const std::uint8_t* plane = src + c * kImagePlane;
      for (int y = 0; y < kImageSide; ++y) {
        float* out = dst + static_cast<std::size_t>(c) * channel_stride + static_cast<std::size_t>(y) * kImageSide;
        const int sy = y + p.crop.top - pad;
        if (sy < 0 || sy >= kImageSide) {
          std::fill(out, out + kImageSide, border);
          continue;
        }
        const std::uint8_t* row = plane + sy * kImageSide;
        // Output column x shows cropped column xc (mirrored if flipped), which is source
        // column xc + left - pad of the unpadded image.
        for (int x = 0; x < kImageSide; ++x) {
          const int xc = p.flip ? kImageSide - 1 - x : x;
          const int sx = xc + p.crop.left - pad;
          out[x] = (sx >= 0 && sx < kImageSide) ? table[row[sx]] : border;
        }
      }
    }
  }

  // Writes sample n of `batch` (which must already hold at least n + 1 samples).
  void operator()(const std::uint8_t* src, const AugmentParams& p, ImageBatch& batch, int n) const {
    if (n < 0 || n >= batch.batch())
      throw std::out_of_range("ctnn::data::CifarTransform: sample " + std::to_string(n) + " of a batch of " +
                              std::to_string(batch.batch()));
    (*this)(src, p, batch.data() + static_cast<std::size_t>(n) * kImagePlane, batch.channel_stride());
  }

 private:
  bool augment_;
  Normalize normalize_;
  RandomCrop crop_;
  RandomHorizontalFlip flip_;
  std::array<float, kImageChannels * 256> table_{};
};

}  // namespace ctnn::data
