// A layer's transformed weights kept from one forward pass to the next while the weights stay
// the same: Winograd's transformed kernels, a whole-plane convolution's dense matrix (where it
// is written out: under OpenBLAS, or bf16 on the portable kernel; WholePlane, ops/conv2d.hpp). In
// evaluation every batch transformed the same weights again: 10 % of a VGG16 evaluation step,
// 3 % of ResNet50_layer4's (perf, Xeon model 167). Layers use one under NoGrad only (training
// changes the weights every step, and frees it then).
//
// Whether the weights are the same is checked, not assumed: anything may write them (an
// optimizer, a checkpoint, a user through Network::parameters()), so each use compares them with
// a copy of the bits it was made from and transforms again when they, the address, the size or
// the kind of transform differ. (A checksum did this until session 27, Fletcher sums in 32-bit
// lanes: negating every weight, or scaling them by a power of two, left its sums unchanged, and
// the stale transform was used. The copy costs the weights' size again and one more stream
// to read; a batch's convolutions take far longer.)
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ctnn/core/tensor.hpp"
#include "ctnn/core/threading.hpp"
#include "ctnn/ops/scratch.hpp"

namespace ctnn::ops {

namespace detail {
// Whether the n floats at a and b have the same bits, compared in fixed chunks by the threads.
inline bool same_bits(const float* a, const float* b, std::size_t n) {
  constexpr std::size_t chunk = std::size_t{1} << 16;
  const auto chunks = static_cast<std::ptrdiff_t>((n + chunk - 1) / chunk);
  int differ = 0;
  CTNN_OMP(parallel for schedule(static) reduction(| : differ) if (n > kThreadedStream))
  for (std::ptrdiff_t c = 0; c < chunks; ++c) {
    const std::size_t begin = static_cast<std::size_t>(c) * chunk, len = std::min(chunk, n - begin);
    differ |= std::memcmp(a + begin, b + begin, len * sizeof(float)) != 0;
  }
  return differ == 0;
}
}  // namespace detail

class WeightCache {
 public:
  // The transform of the n weights at w into `floats` floats, made by make(out) unless this
  // cache holds it already for the same weights and `kind` (distinct kinds for distinct
  // transforms of the same weights, e.g. Winograd's tile size).
  template <class Make>
  const float* get(const float* w, std::size_t n, int kind, std::size_t floats, Make&& make) {
    if (w != weights_ || n != copy_.size() || kind != kind_ || data_.size() != floats ||
        !detail::same_bits(w, copy_.data(), n)) {
      weights_ = nullptr;  // invalid until make() has finished (it may throw)
      if (data_.size() != floats) data_ = AlignedFloats(floats);
      if (copy_.size() != n) copy_ = AlignedFloats(n);
      make(data_.data());
      if (n) std::memcpy(copy_.data(), w, n * sizeof(float));
      weights_ = w, kind_ = kind;
    }
    return data_.data();
  }
  // Frees the memory (a training pass, which would invalidate it anyway).
  void clear() {
    data_ = AlignedFloats();
    copy_ = AlignedFloats();
    weights_ = nullptr;
  }

 private:
  AlignedFloats data_, copy_;  // the transform, and the weights' bits it was made from
  const float* weights_ = nullptr;
  int kind_ = 0;
};

// The transform of the n weights at w (`floats` floats, made by make(out)): from `cache` where it
// is given (WeightCache::get), else made again in scratch slot 1, which the kernels that use a
// transform leave alone.
template <class Make>
const float* transformed_weights(WeightCache* cache, const float* w, std::size_t n, int kind, std::size_t floats,
                                 Make&& make) {
  if (cache) return cache->get(w, n, kind, floats, make);
  float* made = scratch(1, floats);
  make(made);
  return made;
}

}  // namespace ctnn::ops
