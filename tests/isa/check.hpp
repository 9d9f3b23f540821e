// The interface between tests/isa/main.cpp (built for the machine) and sgemm_isa.cpp (built for
// one x86-64 level, called only where the CPU has it, or for aarch64). main.cpp must not compile
// kernel_check.hpp itself: its inline functions would then exist built for two levels, and the
// linker would keep either.
#pragma once

#include <string>

namespace ctnn_isa {
std::string describe();  // the instruction sets and the kernel's tile at this level
long mismatches();       // elements that differ from the kernel's stated order of sums
}  // namespace ctnn_isa
