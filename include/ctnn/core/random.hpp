// Seeded, platform-independent random numbers.
//
// Every random choice in ctnn (initialisation, dropout masks, shuffles, crops, flips) comes
// from here, derived from one user seed. The generators and distributions are written out
// rather than taken from <random>, whose distributions differ between standard libraries,
// so that a seed means the same numbers everywhere. Work that runs in parallel draws from
// counter-based streams (a stream per index, never a shared generator) so results do not
// depend on the thread count.
#pragma once

#include <cmath>
#include <cstdint>

namespace ctnn {

// SplitMix64's finaliser: a bijective 64-bit mix, good enough to turn (seed, counter)
// into independent-looking values.
inline std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// xoshiro256** seeded through SplitMix64.
class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) { reseed(seed); }

  void reseed(std::uint64_t seed) {
    std::uint64_t z = seed;
    for (auto& w : s_) {
      z += 0x9e3779b97f4a7c15ULL;
      w = mix64(z);
    }
  }

  // An independent generator for sub-stream `id` (a layer, an epoch, a sample).
  static Rng stream(std::uint64_t seed, std::uint64_t id) { return Rng(mix64(seed ^ mix64(id))); }

  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

  // Standard normal by Box-Muller (one value per call; simple and reproducible).
  double normal() {
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  double normal(double mean, double stddev) { return mean + stddev * normal(); }

  // Uniform integer in [0, n) without modulo bias (Lemire's method).
  std::uint64_t below(std::uint64_t n) {
    __extension__ using u128 = unsigned __int128;  // a GCC/clang extension, and -Wpedantic says so
    u128 m = static_cast<u128>(next()) * n;
    auto low = static_cast<std::uint64_t>(m);
    if (low < n) {
      const std::uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<u128>(next()) * n;
        low = static_cast<std::uint64_t>(m);
      }
    }
    return static_cast<std::uint64_t>(m >> 64);
  }

  bool bernoulli(double p) { return uniform() < p; }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4]{};
};

// Stateless uniform in [0, 1) for element `index` of draw `counter` under `seed`: the value
// depends only on its arguments, so parallel loops stay reproducible at any thread count.
inline double counter_uniform(std::uint64_t seed, std::uint64_t counter, std::uint64_t index) {
  const std::uint64_t z = mix64(mix64(seed ^ mix64(counter)) + index);
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

}  // namespace ctnn
