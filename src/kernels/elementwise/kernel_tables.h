// The per-ISA kernel tables of the elementwise and attention families, defined in their ISA's translation unit
// (constant-initialised, so usable before main) and looked up by elementwise.cc / attention.cc.
#pragma once

#include <shrink/kernels/attention.h>
#include <shrink/kernels/elementwise.h>

namespace shrink::kernels::detail {

extern const ElementwiseKernels kElementwiseScalar;
extern const ElementwiseKernels kElementwiseAvx2;
extern const ElementwiseKernels kElementwiseAvx512;

extern const AttentionKernels kAttentionScalar;
extern const AttentionKernels kAttentionAvx2;
extern const AttentionKernels kAttentionAvx512;

// Throws shrink::Error naming the family and the CPU when `isa` cannot run here.
void check_isa_usable(Isa isa, const char* family);

}  // namespace shrink::kernels::detail
