// Batch tensors: the layout every layer consumes and produces.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <stdexcept>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "ctnn/core/shape.hpp"

namespace ctnn {

namespace detail {
// Eigen's aligned allocation (packet-aligned), except that blocks of 2 MiB or more are taken 2
// MiB-aligned and whole, and on Linux marked for transparent huge pages (madvise MADV_HUGEPAGE;
// Linux's default is to give them only where asked, and the advice is ignored where they are
// off). Activations, weights, Adam's state and scratch are hundreds of MiB that every step
// sweeps, far beyond what a TLB maps in 4 KiB pages. (The gradient buffer is calloc'd instead,
// detail::ZeroedFloats, so that evaluation never makes it resident.) On Zen 3 (ctnn-bench, 2
// threads, alternating runs before and after, median of the rounds' ratios): VGG16 training 9 %
// faster (4 of 4 rounds), evaluation 4 % (3 of 4); ResNet50_layer4 training 3 % (6 of 8; level
// in a noisier run, 3 of 6), evaluation 1 % (5 of 6). Peak memory 10-38 MiB more (whole pages).
// Advises Linux to back the whole 2 MiB pages inside [p, p + bytes) with transparent huge pages
// (MADV_HUGEPAGE). Advice only: where they are off or unsupported nothing changes.
inline void advise_huge_pages([[maybe_unused]] void* p, [[maybe_unused]] std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t huge = std::uintptr_t{1} << 21;
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t first = (begin + huge - 1) & ~(huge - 1), last = (begin + bytes) & ~(huge - 1);
  if (last > first) (void)madvise(reinterpret_cast<void*>(first), static_cast<std::size_t>(last - first), MADV_HUGEPAGE);
#endif
}

template <class T>
struct LargePageAllocator {
  using value_type = T;
  static constexpr std::size_t kHuge = std::size_t{1} << 21;

  LargePageAllocator() = default;
  template <class U>
  LargePageAllocator(const LargePageAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    // At most PTRDIFF_MAX bytes, rounding up included (as std::allocator's limit).
    constexpr auto kMaxBytes = static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max());
    if (n > (kMaxBytes - kHuge) / sizeof(T)) throw std::bad_array_new_length();
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kHuge) return static_cast<T*>(Eigen::internal::aligned_malloc(bytes));  // throws bad_alloc
    const std::size_t whole = (bytes + kHuge - 1) / kHuge * kHuge;
    void* p = std::aligned_alloc(kHuge, whole);
    if (!p) throw std::bad_alloc();
    advise_huge_pages(p, whole);  // without the advice the pages are ordinary ones
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (n * sizeof(T) < kHuge) Eigen::internal::aligned_free(p);
    else std::free(p);
  }
  friend bool operator==(const LargePageAllocator&, const LargePageAllocator&) { return true; }
};
}  // namespace detail

using AlignedFloats = std::vector<float, detail::LargePageAllocator<float>>;

namespace detail {
// Storage that evaluation gave back (Batch::release), for the next batch that needs room. An
// evaluation forward thereby holds only the outputs still to be read instead of every layer's,
// and, since each step asks for the same sizes in the same order, it allocates nothing after
// the first. One pool per thread, like ops::scratch.
inline std::vector<AlignedFloats>& spare_storage() {
  // Room for the spares of the largest network up front: growing this list would be the one
  // allocation of an evaluation's second batch.
  thread_local std::vector<AlignedFloats> spares = [] {
    std::vector<AlignedFloats> v;
    v.reserve(256);
    return v;
  }();
  return spares;
}
// The smallest spare holding at least `floats` floats, or an empty vector if none does.
inline AlignedFloats take_spare(std::size_t floats) {
  auto& spares = spare_storage();
  std::size_t best = spares.size();
  for (std::size_t i = 0; i < spares.size(); ++i)
    if (spares[i].capacity() >= floats && (best == spares.size() || spares[i].capacity() < spares[best].capacity()))
      best = i;
  if (best == spares.size()) return {};
  AlignedFloats taken = std::move(spares[best]);
  spares.erase(spares.begin() + static_cast<std::ptrdiff_t>(best));
  return taken;
}

// What a Batch holds, whatever its shape: the storage and the code that manages it, outside the
// template so that the batches of every shape share one copy. `sample` is floats per sample.
class BatchStorage {
 protected:
  BatchStorage() = default;
  BatchStorage(const BatchStorage& o, std::size_t floats) : n_(o.n_), storage_(o.data_, o.data_ + floats) {
    data_ = storage_.data();
  }
  BatchStorage(const BatchStorage&) = delete;
  BatchStorage& operator=(const BatchStorage&) = delete;

  void copy_from(const BatchStorage& o, std::size_t sample) {
    resize(o.n_, sample);
    std::copy(o.data_, o.data_ + static_cast<std::size_t>(o.n_) * sample, data_);
  }
  void move_from(BatchStorage& o) noexcept {
    n_ = o.n_;
    owning_ = o.owning_;
    storage_ = std::move(o.storage_);
    data_ = owning_ ? storage_.data() : o.data_;
    o.n_ = 0;
    o.data_ = nullptr;
    o.owning_ = true;
  }

  void resize(int n, std::size_t sample) {
    if (n < 0) throw std::invalid_argument("ctnn::Batch: negative batch size");
    if (!owning_) {
      if (n != n_) throw std::logic_error("ctnn::Batch: cannot resize a view");
      return;
    }
    const std::size_t need = static_cast<std::size_t>(n) * sample;
    if (storage_.capacity() == 0 && need > 0) storage_ = take_spare(need);
    // Never shrunk: growing a vector zero-fills the part it grows by, serially, on one thread,
    // and an evaluation hands spares of one size to batches of another every step (a zero-fill
    // was 3-6 % of a ResNet50_layer4 evaluation step). Layers overwrite their outputs anyway.
    if (need > storage_.size()) storage_.resize(need);
    n_ = n;  // only once the storage holds it: a failed allocation leaves the batch as it was
    data_ = storage_.data();
  }

  void release() {
    if (!owning_ || storage_.capacity() == 0) return;
    spare_storage().push_back(std::move(storage_));
    storage_ = AlignedFloats();
    n_ = 0;
    data_ = nullptr;
  }

  int n_ = 0;
  bool owning_ = true;
  float* data_ = nullptr;
  AlignedFloats storage_;
};
}  // namespace detail

// A batch of N samples of shape S, stored channel-major: (C, N, H, W), row-major.
//
// Why not PyTorch's NCHW: with all N samples of one channel contiguous,
//  - a 1x1 stride-1 convolution of the whole batch is one GEMM on the activations as they
//    lie ((N*H*W) x C, column-major), with no im2col copy;
//  - a KxK convolution writes each batch chunk's GEMM result straight into place;
//  - BatchNorm reduces over one contiguous run per channel;
//  - with H = W = 1 the batch is an (N x F) column-major matrix, which is what Linear needs.
// Use from_nchw()/to_nchw() to exchange data with PyTorch-ordered buffers.
//
// A Batch either owns its storage or views someone else's (see view()); resizing a view
// is not allowed. Capacity is kept across resize() so a training step allocates nothing
// once the first batch has been seen.
template <class S>
class Batch : detail::BatchStorage {
 public:
  using shape = S;

  Batch() = default;
  explicit Batch(int n) { resize(n); }

  Batch(const Batch& o) : BatchStorage(o, o.size()) {}
  Batch& operator=(const Batch& o) {
    if (this != &o) copy_from(o, S::size);
    return *this;
  }
  Batch(Batch&& o) noexcept { move_from(o); }
  Batch& operator=(Batch&& o) noexcept {
    move_from(o);
    return *this;
  }

  // A non-owning batch over `n` samples at `data` (which must hold n * S::size floats).
  static Batch view(float* data, int n) {
    Batch b;
    b.owning_ = false;
    b.n_ = n;
    b.data_ = data;
    return b;
  }

  void resize(int n) { BatchStorage::resize(n, S::size); }

  // Gives an owning batch's storage back for other batches to reuse (see detail::spare_storage);
  // the batch is then empty. A view is left as it is.
  void release() { BatchStorage::release(); }

  bool is_view() const { return !owning_; }
  int batch() const { return n_; }
  std::size_t size() const { return static_cast<std::size_t>(n_) * S::size; }
  float* data() { return data_; }
  const float* data() const { return data_; }

  // The N*H*W values of channel c, all samples, contiguous.
  std::size_t channel_stride() const { return static_cast<std::size_t>(n_) * S::plane; }
  float* channel(int c) { return data_ + c * channel_stride(); }
  const float* channel(int c) const { return data_ + c * channel_stride(); }

  std::size_t index(int n, int c, int y, int x) const {
    assert(n >= 0 && n < n_ && c >= 0 && c < S::channels && y >= 0 && y < S::height && x >= 0 &&
           x < S::width);
    return c * channel_stride() + static_cast<std::size_t>(n) * S::plane + y * S::width + x;
  }
  float& operator()(int n, int c, int y, int x) { return data_[index(n, c, y, x)]; }
  float operator()(int n, int c, int y, int x) const { return data_[index(n, c, y, x)]; }

  void fill(float v) { std::fill(data_, data_ + size(), v); }
  void set_zero() { fill(0.0f); }

  // Copy from / to a PyTorch-ordered (N, C, H, W) buffer.
  void from_nchw(const float* src, int n) {
    resize(n);
    for (int i = 0; i < n; ++i)
      for (int c = 0; c < S::channels; ++c)
        std::copy(src + (static_cast<std::size_t>(i) * S::channels + c) * S::plane,
                  src + (static_cast<std::size_t>(i) * S::channels + c + 1) * S::plane,
                  channel(c) + static_cast<std::size_t>(i) * S::plane);
  }
  void to_nchw(float* dst) const {
    for (int i = 0; i < n_; ++i)
      for (int c = 0; c < S::channels; ++c)
        std::copy(channel(c) + static_cast<std::size_t>(i) * S::plane,
                  channel(c) + static_cast<std::size_t>(i + 1) * S::plane,
                  dst + (static_cast<std::size_t>(i) * S::channels + c) * S::plane);
  }
  std::vector<float> to_nchw() const {
    std::vector<float> out(size());
    to_nchw(out.data());
    return out;
  }
};

}  // namespace ctnn
