// What the CPU can run and what this translation unit was compiled for.
//
// Speed must never rest on a library recognising the CPU model: the GEMM backend (ops/gemm.hpp)
// compares the vector instruction set the CPU reports (cpuid, at run time) with the one each
// backend really runs, and these are the levels it compares.
#pragma once

#include <fstream>
#include <istream>
#include <string>
#include <string_view>

namespace ctnn::ops {

// Vector instruction-set levels, ordered: a higher level runs everything a lower one does.
// avx2 means AVX2 with FMA (every CPU that has one has the other), avx512 means AVX-512F.
enum class Isa : int { unknown = 0, sse2, sse3, sse4, avx, avx2, avx512, neon };

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::sse2: return "SSE2";
    case Isa::sse3: return "SSE3";
    case Isa::sse4: return "SSE4";
    case Isa::avx: return "AVX";
    case Isa::avx2: return "AVX2+FMA";
    case Isa::avx512: return "AVX-512";
    case Isa::neon: return "NEON";
    case Isa::unknown: break;
  }
  return "unknown";
}

// Off x86: NEON where the compiler targets it (every aarch64 CPU has it), else unknown.
constexpr Isa non_x86_isa() {
#if defined(__ARM_NEON) || defined(__aarch64__)
  return Isa::neon;
#else
  return Isa::unknown;
#endif
}

// The best level this CPU (and its operating system, which must save the wider registers)
// supports, read with cpuid at run time. GCC's and clang's __builtin_cpu_supports check the OS
// support (XCR0) for AVX and AVX-512 as well.
inline Isa cpu_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
  if (__builtin_cpu_supports("avx")) return Isa::avx;
  if (__builtin_cpu_supports("sse4.1")) return Isa::sse4;
  if (__builtin_cpu_supports("sse3")) return Isa::sse3;
  return Isa::sse2;
#else
  return non_x86_isa();
#endif
}

// The level the compiler was allowed to use here (-march=native or -m flags): what Eigen's
// vectorised kernels in this translation unit run.
constexpr Isa compiled_isa() {
#if defined(__AVX512F__)
  return Isa::avx512;
#elif defined(__AVX2__) && defined(__FMA__)
  return Isa::avx2;
#elif defined(__AVX__)
  return Isa::avx;
#elif defined(__SSE4_1__)
  return Isa::sse4;
#elif defined(__SSE3__)
  return Isa::sse3;
#elif defined(__SSE2__) || defined(__x86_64__)
  return Isa::sse2;
#else
  return non_x86_isa();
#endif
}

// The CPU's model name as lscpu shows it ("AMD EPYC 9B45"), from /proc/cpuinfo (or text in its
// format); empty where there is none, or where the line names none. For the lines benchmarks and trainers print beside their figures.
inline std::string cpu_model_name(std::istream& cpuinfo) {
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      const auto start = colon == std::string::npos ? colon : line.find_first_not_of(" \t", colon + 1);
      return start == std::string::npos ? std::string() : line.substr(start);
    }
  return {};
}
inline std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  return cpu_model_name(in);
}

// The instruction set of the sgemm kernels behind an OpenBLAS core name
// (openblas_get_corename(), the names of OpenBLAS's DYNAMIC_ARCH targets). A name missing from
// the table, as a newer OpenBLAS may add, counts as unknown: never trusted to be fast.
inline Isa openblas_core_isa(std::string_view core) {
  struct Entry {
    std::string_view name;
    Isa isa;
  };
  static constexpr Entry table[] = {
      {"SkylakeX", Isa::avx512},   {"Cooperlake", Isa::avx512}, {"SapphireRapids", Isa::avx512},
      {"Zen4", Isa::avx512},       {"Haswell", Isa::avx2},      {"Zen", Isa::avx2},
      {"Excavator", Isa::avx2},    {"SkylakeX_AVX2", Isa::avx2}, {"Sandybridge", Isa::avx},
      {"Bulldozer", Isa::avx},     {"Piledriver", Isa::avx},    {"Steamroller", Isa::avx},
      {"Nehalem", Isa::sse4},      {"Dunnington", Isa::sse4},   {"Penryn", Isa::sse4},
      {"Barcelona", Isa::sse3},    {"Bobcat", Isa::sse3},       {"Core2", Isa::sse3},
      {"Prescott", Isa::sse3},     {"Atom", Isa::sse3},         {"Nano", Isa::sse3},
      {"Opteron_SSE3", Isa::sse3}, {"Opteron", Isa::sse2},      {"Athlon", Isa::sse2},
      {"Northwood", Isa::sse2},    {"Banias", Isa::sse2},       {"Katmai", Isa::unknown},
      {"Coppermine", Isa::unknown},
  };
  for (const auto& e : table)
    if (e.name == core) return e.isa;
  return Isa::unknown;
}

}  // namespace ctnn::ops
