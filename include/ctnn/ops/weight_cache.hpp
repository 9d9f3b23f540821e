// A layer's transformed weights kept from one forward pass to the next while the weights stay
// the same: Winograd's transformed kernels, a whole-plane convolution's dense matrix (where it
// is written out: under OpenBLAS, or bf16 without AMX; WholePlane, ops/conv2d.hpp). In
// evaluation every batch transformed the same weights again: 10 % of a VGG16 evaluation step,
// 3 % of ResNet50_layer4's (perf, Xeon model 167). Layers use one under NoGrad only (training
// changes the weights every step, and frees it then).
//
// Whether the weights are the same is checked, not assumed: anything may write them (an
// optimizer, a checkpoint, a user through Network::parameters()), so each use sums their bits
// (a position-dependent checksum, one read of the weights at memory speed, a fifth of the
// transform's time or less) and transforms again when the sums, the address, the size or the
// kind of transform differ.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ctnn/core/tensor.hpp"
#include "ctnn/core/threading.hpp"
#include "ctnn/ops/scratch.hpp"

namespace ctnn::ops {

namespace detail {
// Fletcher-style sums of the weights' bits in 16 lanes of 32 bits, one vector (GCC's and clang's
// vector extension; a loop over an array of lanes ran at 11-15 GB/s, not vectorised): per lane
// s += v and t += s, so that changing any value changes s and moving one changes t. Chunks of
// fixed size, summed by the threads and combined in order (the result does not depend on the
// thread count).
inline std::uint64_t weights_checksum(const float* w, std::size_t n) {
  using Lanes = std::uint32_t __attribute__((vector_size(64)));
  constexpr std::size_t chunk = std::size_t{1} << 16, lanes = 16;
  const std::size_t chunks = (n + chunk - 1) / chunk;
  std::vector<std::uint64_t> sums(chunks);
  CTNN_OMP(parallel for schedule(static) if (n > kThreadedStream))
  for (std::size_t c = 0; c < chunks; ++c) {
    const std::size_t begin = c * chunk, end = std::min(n, begin + chunk);
    Lanes s{}, t{};
    std::size_t i = begin;
    for (; i + lanes <= end; i += lanes) {
      Lanes v;
      std::memcpy(&v, w + i, sizeof v);
      s += v;
      t += s;
    }
    std::uint64_t h = 0;
    for (std::size_t l = 0; l < lanes; ++l) h = (h ^ (std::uint64_t{s[l]} << 32 | t[l])) * 0x100000001b3ull;
    for (; i < end; ++i) h = (h ^ std::bit_cast<std::uint32_t>(w[i])) * 0x100000001b3ull;
    sums[c] = h;
  }
  std::uint64_t h = n;
  for (std::uint64_t v : sums) h = (h ^ v) * 0x9e3779b97f4a7c15ull;
  return h;
}
}  // namespace detail

class WeightCache {
 public:
  // The transform of the n weights at w into `floats` floats, made by make(out) unless this
  // cache holds it already for the same weights and `kind` (distinct kinds for distinct
  // transforms of the same weights, e.g. Winograd's tile size).
  template <class Make>
  const float* get(const float* w, std::size_t n, int kind, std::size_t floats, Make&& make) {
    const std::uint64_t sum = detail::weights_checksum(w, n);
    if (w != weights_ || n != n_ || kind != kind_ || sum != sum_ || data_.size() != floats) {
      weights_ = nullptr;  // invalid until make() has finished (it may throw)
      if (data_.size() != floats) data_ = AlignedFloats(floats);
      make(data_.data());
      weights_ = w, n_ = n, kind_ = kind, sum_ = sum;
    }
    return data_.data();
  }
  // Frees the memory (a training pass, which would invalidate it anyway).
  void clear() {
    data_ = AlignedFloats();
    weights_ = nullptr;
  }

 private:
  AlignedFloats data_;
  const float* weights_ = nullptr;
  std::size_t n_ = 0;
  int kind_ = 0;
  std::uint64_t sum_ = 0;
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
