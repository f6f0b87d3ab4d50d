// Packing of fp32 weights into per-ISA panels, the kernel table, and threaded dispatch of the packed GEMM/GEMV.
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/kernels/gemm.h>

#include <algorithm>
#include <cstring>

#include "kernels/gemm/sgemm_kernels.h"

namespace shrink::kernels {
namespace detail {

const SgemmKernels& sgemm_kernels(Isa isa) {
  static const SgemmKernels kTable[] = {
      {Isa::Scalar, kNrScalar, sgemm_panels_scalar, sgemv_panels_scalar, "f32-gemm-4x16-packed-scalar",
       "f32-gemv-4x16-packed-scalar"},
      {Isa::Avx2, kNrAvx2, sgemm_panels_avx2, sgemv_panels_avx2, "f32-gemm-6x16-packed-avx2",
       "f32-gemv-4x16-packed-avx2"},
      {Isa::Avx512, kNrAvx512, sgemm_panels_avx512, sgemv_panels_avx512, "f32-gemm-6x64-packed-avx512",
       "f32-gemv-4x64-packed-avx512"},
  };
  return kTable[static_cast<int>(isa)];
}

}  // namespace detail

namespace {

float load_as_f32(const void* w, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::F32: return static_cast<const float*>(w)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(w)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(w)[i]);
    default: break;
  }
  return 0.0f;
}

// Below this many multiply-adds a second thread costs more than it saves.
constexpr int64_t kSerialMacs = 1 << 16;

detail::SgemmArgs make_args(const PackedWeightsF32& w, const float* x, int64_t m, int64_t ldx, const float* bias,
                            float* y, int64_t ldy) {
  check(m >= 0 && ldx >= w.k() && ldy >= w.n(),
        "sgemm: m = {}, ldx = {}, ldy = {} do not fit weights [n = {}, k = {}]; expected m >= 0, ldx >= k, ldy >= n", m,
        ldx, ldy, w.n(), w.k());
  return {x, ldx, m, w.n(), w.k(), w.panels() ? w.panel(0) : nullptr, bias, y, ldy};
}

// k == 0: the product is empty and y is just the bias.
void fill_bias(int64_t m, int64_t n, const float* bias, float* y, int64_t ldy) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) y[i * ldy + j] = bias ? bias[j] : 0.0f;
}

void run_panels(detail::SgemmPanelsFn fn, const detail::SgemmArgs& a, int64_t panels) {
  if (a.m * a.n * a.k < kSerialMacs) {
    fn(a, 0, panels);
    return;
  }
  // About 8 chunks per thread: a static half each left one thread waiting ~15% of a BERT-base forward at the
  // closing barriers on the 2-vCPU VM (perf: libgomp spin), as one vCPU often runs slower than the other.
  const int64_t chunk = std::max<int64_t>(1, panels / (int64_t{num_threads()} * 8));
  parallel_for_dynamic(panels, chunk, [&](int64_t begin, int64_t end) { fn(a, begin, end); });
}

}  // namespace

int sgemm_panel_width(Isa isa) {
  return detail::sgemm_kernels(isa).nr;
}

bool isa_available(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return f.avx2 && f.fma && f.f16c;
    case Isa::Avx512: return f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  }
  return false;
}

PackedWeightsF32 PackedWeightsF32::pack(const void* w, DType dtype, int64_t n, int64_t k, int64_t ldw, Isa isa) {
  check(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16,
        "pack fp32 weights: dtype {} is not supported; expected F32, F16 or BF16 (quantized formats have their own "
        "Linear)",
        dtype_name(dtype));
  check(n >= 0 && k >= 0 && ldw >= k, "pack fp32 weights: shape [n = {}, k = {}] with row stride {} is invalid", n, k,
        ldw);
  check(isa_available(isa), "pack fp32 weights for {}: this CPU ({}) lacks that instruction set; use active_isa()",
        isa_name(isa), cpu_features().model);
  PackedWeightsF32 p;
  p.isa_ = isa;
  p.n_ = n;
  p.k_ = k;
  p.nr_ = sgemm_panel_width(isa);
  const int nr = p.nr_;
  const int64_t panels = p.panels();
  p.data_ = Tensor::empty(DType::F32, {panels * k * nr});
  float* dst = p.data_.data<float>();
  // Blocks of k keep the nr destination lines of a block in cache while each source row is read in order.
  constexpr int64_t kBlock = 256;
  parallel_for(panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t pi = begin; pi < end; ++pi) {
      float* panel = dst + pi * k * nr;
      const int64_t cols = std::min<int64_t>(nr, n - pi * nr);
      for (int64_t k0 = 0; k0 < k; k0 += kBlock) {
        const int64_t k1 = std::min(k, k0 + kBlock);
        for (int64_t j = 0; j < nr; ++j) {
          if (j >= cols) {
            for (int64_t kk = k0; kk < k1; ++kk) panel[kk * nr + j] = 0.0f;
            continue;
          }
          const int64_t row = (pi * nr + j) * ldw;
          if (dtype == DType::F32) {
            const float* src = static_cast<const float*>(w) + row;
            for (int64_t kk = k0; kk < k1; ++kk) panel[kk * nr + j] = src[kk];
          } else {
            for (int64_t kk = k0; kk < k1; ++kk) panel[kk * nr + j] = load_as_f32(w, dtype, row + kk);
          }
        }
      }
    }
  });
  return p;
}

void sgemm_packed_gemm(const PackedWeightsF32& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                       int64_t ldy) {
  const detail::SgemmArgs a = make_args(w, x, m, ldx, bias, y, ldy);
  if (m == 0 || w.n() == 0) return;
  if (w.k() == 0) return fill_bias(m, w.n(), bias, y, ldy);
  run_panels(detail::sgemm_kernels(w.isa()).gemm, a, w.panels());
}

void sgemv_packed(const PackedWeightsF32& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                  int64_t ldy) {
  check(m <= kGemvMaxRows, "sgemv_packed: m = {} rows; expected at most {} (use sgemm_packed)", m, kGemvMaxRows);
  const detail::SgemmArgs a = make_args(w, x, m, ldx, bias, y, ldy);
  if (m == 0 || w.n() == 0) return;
  if (w.k() == 0) return fill_bias(m, w.n(), bias, y, ldy);
  run_panels(detail::sgemm_kernels(w.isa()).gemv, a, w.panels());
}

void sgemm_packed(const PackedWeightsF32& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                  int64_t ldy) {
  if (m <= kGemvMaxRows)
    sgemv_packed(w, x, m, ldx, bias, y, ldy);
  else
    sgemm_packed_gemm(w, x, m, ldx, bias, y, ldy);
}

}  // namespace shrink::kernels
