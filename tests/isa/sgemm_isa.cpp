// ctnn's packed GEMM kernel (ops/sgemm.hpp) compiled for one instruction-set level: CMake builds
// this file once per x86-64 level with its -march, and once for aarch64 (tests/CMakeLists.txt).
// Packing and tile change with the vector width (SSE2 and NEON: packets of 4, panels packed one
// float at a time; AVX2: 8 and 6-column panels transposed in registers; AVX-512: 16 and 12),
// and a build with -march=native covers only the machine's own level. This file has no static
// initialisers: its code may use instructions the CPU lacks, and main.cpp (built for the
// machine) calls it only once the CPU has said it has them.
#include <string>

#include "ctnn/ops/cpu.hpp"
#include "isa/check.hpp"
#include "isa/kernel_check.hpp"

namespace ctnn_isa {

std::string describe() {
  namespace sg = ctnn::ops::detail::sgemm;
  return std::string(ctnn::ops::isa_name(ctnn::ops::compiled_isa())) + " (Eigen: " +
         Eigen::SimdInstructionSetsInUse() + "): packets of " + std::to_string(sg::kW) + " floats, a " +
         std::to_string(sg::kMr) + " x " + std::to_string(sg::kNr) + " tile";
}

long mismatches() { return kernel_mismatches(); }

}  // namespace ctnn_isa
