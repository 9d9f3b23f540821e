// A labelled set of 32x32 RGB images held as raw bytes, and the data pipeline's error type.
//
// Images stay uint8 in memory (150 MB for CIFAR-10's 50,000 training images instead of 600 MB
// as floats) and are converted to normalised floats only when a batch is assembled, which is
// also where the random augmentation has to happen anyway.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "ctnn/core/shape.hpp"
#include "ctnn/core/tensor.hpp"

namespace ctnn::data {

// Every failure of the data pipeline (missing or malformed files, inconsistent in-memory data).
// The message names the file and, where it applies, the record and what is wrong, so that a
// program can print e.what() as its one line of diagnosis.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr int kImageChannels = 3;
inline constexpr int kImageSide = 32;
inline constexpr int kImagePlane = kImageSide * kImageSide;        // 1024 bytes per channel
inline constexpr int kImageBytes = kImageChannels * kImagePlane;   // 3072 bytes per image
inline constexpr int kRecordBytes = 1 + kImageBytes;               // label byte + image
inline constexpr int kNumClasses = 10;

// The shape and batch type the networks consume.
using ImageShape = Shape<kImageChannels, kImageSide, kImageSide>;
using ImageBatch = Batch<ImageShape>;

struct Dataset {
  // Image i occupies pixels[i * kImageBytes, (i + 1) * kImageBytes): 1024 red, 1024 green,
  // then 1024 blue bytes, each plane 32 rows top to bottom, each row left to right. This is the
  // CIFAR file order (planar C, H, W), kept as is so reading is a plain copy.
  std::vector<std::uint8_t> pixels;
  std::vector<std::uint8_t> labels;        // one per image, in [0, kNumClasses)
  std::vector<std::string> class_names;    // kNumClasses names, index = label
  std::string description;                 // where the images came from, for logs
  bool synthetic = false;                  // true for generated stand-in data, never CIFAR-10

  int size() const { return static_cast<int>(labels.size()); }
  bool empty() const { return labels.empty(); }

  const std::uint8_t* image(int i) const { return pixels.data() + static_cast<std::size_t>(i) * kImageBytes; }
  std::uint8_t* image(int i) { return pixels.data() + static_cast<std::size_t>(i) * kImageBytes; }
  int label(int i) const { return labels[static_cast<std::size_t>(i)]; }

  // Channel c (0 = R, 1 = G, 2 = B), row y (0 = top), column x (0 = left) of image i.
  std::uint8_t pixel(int i, int c, int y, int x) const {
    return image(i)[c * kImagePlane + y * kImageSide + x];
  }

  // Checks the invariants a loader relies on; `what` names the data set in the message.
  // Data read from files is already checked; this catches hand-built or edited Datasets.
  void validate(const std::string& what) const {
    if (pixels.size() != labels.size() * static_cast<std::size_t>(kImageBytes))
      throw DataError(what + ": " + std::to_string(pixels.size()) + " pixel bytes for " +
                      std::to_string(labels.size()) + " labels (expected " +
                      std::to_string(kImageBytes) + " bytes per image)");
    for (std::size_t i = 0; i < labels.size(); ++i)
      if (labels[i] >= kNumClasses)
        throw DataError(what + ", image " + std::to_string(i) + ": label " +
                        std::to_string(labels[i]) + " is above " + std::to_string(kNumClasses - 1));
  }
};

namespace detail {

// Sizes `buffer` to `bytes` zero bytes, asking Linux to back it with transparent huge
// pages first. Why: the data set is ~180 MB of fresh memory, and touching it 4 KB page by 4 KB
// page costs more than reading the files (about 0.45 s for 150 MB on a virtual machine we
// measured, against 0.03 s with 2 MB pages). Only a hint: where it is unsupported or refused
// nothing changes.
inline void allocate_bytes(std::vector<std::uint8_t>& buffer, std::size_t bytes) {
  buffer.clear();
  buffer.reserve(bytes);
  if (bytes >= std::size_t{8} << 20) ctnn::detail::advise_huge_pages(buffer.data(), bytes);
  buffer.resize(bytes);
}

}  // namespace detail

}  // namespace ctnn::data
