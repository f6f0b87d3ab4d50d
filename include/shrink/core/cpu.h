// Run-time CPU feature detection (CPUID + XGETBV) and the ISA level kernels dispatch on.
// SHRINK_ISA=scalar|avx2|avx512 caps the level.
#pragma once

#include <string>

namespace shrink {

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false, avxvnni = false;
  std::string model;  // brand string
};

const CpuFeatures& cpu_features();
// Highest level usable here, after the SHRINK_ISA cap. Throws shrink::Error on an unknown value.
Isa active_isa();
const char* isa_name(Isa isa);
// "avx512f avx512bw ... " for reports.
std::string cpu_flags_string();

}  // namespace shrink
