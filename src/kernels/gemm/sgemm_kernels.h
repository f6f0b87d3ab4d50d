// Internal table of the packed fp32 GEMM/GEMV micro-kernels, one row per ISA (sgemm_packed.cc dispatches on it).
#pragma once

#include <shrink/core/cpu.h>

#include <cstdint>

namespace shrink::kernels::detail {

// One call computes output panels [panel_begin, panel_end) (columns panel*nr ..) for all m rows.
struct SgemmArgs {
  const float* x;
  int64_t ldx, m, n, k;
  const float* packed;  // panel p starts at packed + p * k * nr
  const float* bias;    // [n] or null
  float* y;
  int64_t ldy;
};

using SgemmPanelsFn = void (*)(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end);

struct SgemmKernels {
  Isa isa;
  int nr;                 // panel width of the packed layout
  SgemmPanelsFn gemm;     // register-blocked, cache-blocked over m and k
  SgemmPanelsFn gemv;     // m <= kGemvMaxRows; one pass over the panels
  const char* gemm_name;  // XNNPACK-style contract names, printed by benchmarks
  const char* gemv_name;
};

// Panel widths are fixed per ISA because packing happens once at load.
constexpr int kNrScalar = 16, kNrAvx2 = 16, kNrAvx512 = 64;

void sgemm_panels_scalar(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end);
void sgemv_panels_scalar(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end);
void sgemm_panels_avx2(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end);
void sgemv_panels_avx2(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end);
void sgemm_panels_avx512(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end);
void sgemv_panels_avx512(const SgemmArgs& a, int64_t panel_begin, int64_t panel_end);

const SgemmKernels& sgemm_kernels(Isa isa);

}  // namespace shrink::kernels::detail
