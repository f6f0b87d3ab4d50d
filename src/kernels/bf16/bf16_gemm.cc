// BF16-weight dispatch: the per-ISA kernel table, argument checks, threading of the GEMV over output rows, and the
// GEMM on panels converted per call (the driver shared with W4 in kernels/int4/w4_kernels.h).
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/kernels/bf16.h>
#include <shrink/kernels/gemm.h>

#include <algorithm>

#include "kernels/bf16/bf16_kernels.h"
#include "kernels/gemm/sgemm_kernels.h"
#include "kernels/int4/w4_kernels.h"

namespace shrink::kernels {
namespace detail {

const Bf16Kernels& bf16_kernels(Isa isa) {
  static const Bf16Kernels kTable[] = {
      {Isa::Scalar, kNrScalar, bf16_gemv_rows_scalar, bf16_panel_scalar, "bf16-f32-gemv-1x1-scalar",
       "bf16-f32-gemm-cvt16-f32-4x16-packed-scalar"},
      {Isa::Avx2, kNrAvx2, bf16_gemv_rows_avx2, bf16_panel_avx2, "bf16-f32-gemv-4x8-avx2",
       "bf16-f32-gemm-cvt16-f32-6x16-packed-avx2"},
      {Isa::Avx512, kNrAvx512, bf16_gemv_rows_avx512, bf16_panel_avx512, "bf16-f32-gemv-4x16-avx512",
       "bf16-f32-gemm-cvt64-f32-6x64-packed-avx512"},
  };
  return kTable[static_cast<int>(isa)];
}

}  // namespace detail

namespace {

void check_bf16(const Bf16Matrix& w, int64_t m, int64_t ldx, int64_t ldy, Isa isa, const char* what) {
  check(w.n > 0 && w.k > 0 && w.ld >= w.k && w.w, "{}: BF16 matrix [n = {}, k = {}] with row stride {} is invalid",
        what, w.n, w.k, w.ld);
  check(m >= 0 && ldx >= w.k && ldy >= w.n,
        "{}: m = {}, ldx = {}, ldy = {} do not fit weights [n = {}, k = {}]; expected m >= 0, ldx >= k, ldy >= n", what,
        m, ldx, ldy, w.n, w.k);
  check(isa_available(isa), "{}: this CPU ({}) cannot run {} kernels; use active_isa()", what, cpu_features().model,
        isa_name(isa));
}

}  // namespace

void bf16_gemv_rows(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                    int64_t ldy, int64_t o0, int64_t o1, Isa isa) {
  check_bf16(w, m, ldx, ldy, isa, "bf16_gemv_rows");
  check(m <= kGemvMaxRows && 0 <= o0 && o0 <= o1 && o1 <= w.n,
        "bf16_gemv_rows: m = {}, rows [{}, {}) of {}; expected m <= {} and a range inside [0, n)", m, o0, o1, w.n,
        kGemvMaxRows);
  if (m == 0 || o0 == o1) return;
  detail::bf16_kernels(isa).gemv_rows(w, x, m, ldx, bias, y, ldy, o0, o1);
}

void bf16_gemv(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
               Isa isa) {
  check_bf16(w, m, ldx, ldy, isa, "bf16_gemv");
  check(m <= kGemvMaxRows, "bf16_gemv: m = {} rows; expected at most {} (use bf16_gemm)", m, kGemvMaxRows);
  if (m == 0) return;
  const detail::Bf16GemvRowsFn fn = detail::bf16_kernels(isa).gemv_rows;
  // ~64 KiB of weights per thread at least: below that a second thread costs more than it saves.
  const int64_t grain = std::max<int64_t>(16, (int64_t{32} << 10) / w.k);
  parallel_for(w.n, grain, [&](int64_t o0, int64_t o1) { fn(w, x, m, ldx, bias, y, ldy, o0, o1); });
}

void bf16_gemm(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
               Isa isa) {
  check_bf16(w, m, ldx, ldy, isa, "bf16_gemm");
  if (m == 0) return;
  struct Ctx {
    const Bf16Matrix* w;
    detail::Bf16PanelFn panel;
    int nr;
  };
  const detail::Bf16Kernels& kk = detail::bf16_kernels(isa);
  const Ctx ctx{&w, kk.panel, kk.nr};
  const auto fill = [](const void* c, int64_t p, float* buffer) {
    const Ctx& cx = *static_cast<const Ctx*>(c);
    cx.panel(*cx.w, p * cx.nr, buffer);
  };
  detail::gemm_on_filled_panels(isa, w.n, w.k, detail::bf16_panel_k(w.k), x, m, ldx, bias, y, ldy, fill, &ctx);
}

void bf16_matmul(const Bf16Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
                 Isa isa) {
  if (m <= kGemvMaxRows)
    bf16_gemv(w, x, m, ldx, bias, y, ldy, isa);
  else
    bf16_gemm(w, x, m, ldx, bias, y, ldy, isa);
}

const char* bf16_gemv_name(Isa isa) {
  return detail::bf16_kernels(isa).gemv_name;
}
const char* bf16_gemm_name(Isa isa) {
  return detail::bf16_kernels(isa).gemm_name;
}

}  // namespace shrink::kernels
