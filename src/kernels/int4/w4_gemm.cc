// W4A16 dispatch: the per-ISA kernel table, argument checks, threading of the GEMV over output rows, and the GEMM
// that runs the fp32 packed micro-kernel (kernels/gemm) on weight panels dequantized per call.
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/kernels/gemm.h>
#include <shrink/kernels/int4.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "kernels/gemm/sgemm_kernels.h"
#include "kernels/int4/w4_kernels.h"

namespace shrink::kernels {
namespace detail {

const W4Kernels& w4_kernels(Isa isa) {
  static const W4Kernels kTable[] = {
      {Isa::Scalar, kNrScalar, w4_gemv_rows_scalar, false, w4_panel_scalar, "w4-f32-gemv-1x1-scalar",
       "w4-f32-gemm-dq16-f32-4x16-packed-scalar"},
      {Isa::Avx2, kNrAvx2, w4_gemv_rows_avx2, false, w4_panel_avx2, "w4-f32-gemv-4x8-avx2",
       "w4-f32-gemm-dq16-f32-6x16-packed-avx2"},
      {Isa::Avx512, kNrAvx512, w4_gemv_rows_avx512, false, w4_panel_avx512, "w4-f32-gemv-4x16-avx512",
       "w4-f32-gemm-dq64-f32-6x64-packed-avx512"},
  };
  // The decode GEMV rounds x to int8 where that is what lets it keep up with memory (README): with VNNI on AVX-512
  // (3x fewer vector ops than fp32 FMA), and on AVX2 with vpmaddubsw. SHRINK_W4_GEMV=f32 keeps it exact.
  static const W4Kernels kVnni = [] {
    W4Kernels k = kTable[2];
    k.gemv_rows = w4_gemv_rows_avx512vnni;
    k.gemv_rounds_x = true;
    k.gemv_name = "w4-q8-gemv-4x16-avx512vnni";
    return k;
  }();
  static const W4Kernels kAvx2Q8 = [] {
    W4Kernels k = kTable[1];
    k.gemv_rows = w4_gemv_rows_q8_avx2;
    k.gemv_rounds_x = true;
    k.gemv_name = "w4-q8-gemv-4x8-avx2";
    return k;
  }();
  static const bool use_q8 = [] {
    const char* env = std::getenv("SHRINK_W4_GEMV");
    check(!env || std::string_view(env) == "f32" || std::string_view(env) == "q8",
          "SHRINK_W4_GEMV={}: expected f32 (exact fp32 GEMV) or q8 (x rounded to int8 per 32 values)", env ? env : "");
    return !(env && std::string_view(env) == "f32");
  }();
  if (isa == Isa::Avx512 && use_q8 && cpu_features().avx512vnni) return kVnni;
  if (isa == Isa::Avx2 && use_q8) return kAvx2Q8;
  return kTable[static_cast<int>(isa)];
}

namespace {

// A per-thread panel buffer that only grows: a fresh 0.5-1.5 MiB allocation per call would page-fault every time.
struct PanelBuffer {
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data;
  size_t floats = 0;

  float* get(size_t n) {
    if (n > floats) {
      const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
      data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      check(data != nullptr, "W4/BF16 GEMM: cannot allocate a {}-byte panel buffer", bytes);
      floats = n;
    }
    return data.get();
  }
};

}  // namespace

void gemm_on_filled_panels(Isa isa, int64_t n, int64_t k, int64_t kpad, const float* x, int64_t m, int64_t ldx,
                           const float* bias, float* y, int64_t ldy, PanelFillFn fill, const void* ctx) {
  const SgemmKernels& sk = sgemm_kernels(isa);
  const int nr = sk.nr;
  const int64_t panels = (n + nr - 1) / nr;
  auto run = [&](int64_t p0, int64_t p1) {
    thread_local PanelBuffer buffer;
    float* panel = buffer.get(static_cast<size_t>(kpad) * nr);
    for (int64_t p = p0; p < p1; ++p) {
      fill(ctx, p, panel);
      // One panel as a whole GEMM: n = this panel's columns, its y columns and bias slice.
      const SgemmArgs a{x,          ldx, m, std::min<int64_t>(nr, n - p * nr), k, panel, bias ? bias + p * nr : nullptr,
                        y + p * nr, ldy};
      sk.gemm(a, 0, 1);
    }
  };
  // Below ~64k multiply-adds a second thread costs more than it saves (as in sgemm_packed).
  if (m * n * k < (int64_t{1} << 16))
    run(0, panels);
  else
    parallel_for(panels, 1, run);
}

}  // namespace detail

namespace {

void check_w4(const W4Matrix& w, int64_t m, int64_t ldx, int64_t ldy, Isa isa, const char* what) {
  check(w.group == 32 || w.group == 64 || w.group == 128, "{}: W4 group {}; expected 32, 64 or 128", what, w.group);
  check(w.n > 0 && w.k > 0 && w.codes && w.scales_f16, "{}: W4 matrix [n = {}, k = {}] without codes or scales", what,
        w.n, w.k);
  check(m >= 0 && ldx >= w.k && ldy >= w.n,
        "{}: m = {}, ldx = {}, ldy = {} do not fit weights [n = {}, k = {}]; expected m >= 0, ldx >= k, ldy >= n", what,
        m, ldx, ldy, w.n, w.k);
  check(isa_available(isa), "{}: this CPU ({}) cannot run {} kernels; use active_isa()", what, cpu_features().model,
        isa_name(isa));
}

// Rows per thread below which a second thread costs more than it saves (~64 KiB of weights).
int64_t gemv_grain(const W4Matrix& w) {
  return std::max<int64_t>(16, (int64_t{64} << 10) / w.row_bytes());
}

}  // namespace

void w4_gemv_rows(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
                  int64_t o0, int64_t o1, Isa isa) {
  check_w4(w, m, ldx, ldy, isa, "w4_gemv_rows");
  check(m <= kGemvMaxRows && 0 <= o0 && o0 <= o1 && o1 <= w.n,
        "w4_gemv_rows: m = {}, rows [{}, {}) of {}; expected m <= {} and a range inside [0, n)", m, o0, o1, w.n,
        kGemvMaxRows);
  if (m == 0 || o0 == o1) return;
  detail::w4_kernels(isa).gemv_rows(w, x, m, ldx, bias, y, ldy, o0, o1);
}

void w4_gemv(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
             Isa isa) {
  check_w4(w, m, ldx, ldy, isa, "w4_gemv");
  check(m <= kGemvMaxRows, "w4_gemv: m = {} rows; expected at most {} (use w4_gemm)", m, kGemvMaxRows);
  if (m == 0) return;
  const detail::W4GemvRowsFn fn = detail::w4_kernels(isa).gemv_rows;
  parallel_for(w.n, gemv_grain(w), [&](int64_t o0, int64_t o1) { fn(w, x, m, ldx, bias, y, ldy, o0, o1); });
}

void w4_gemm(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
             Isa isa) {
  check_w4(w, m, ldx, ldy, isa, "w4_gemm");
  if (m == 0) return;
  struct Ctx {
    const W4Matrix* w;
    detail::W4PanelFn panel;
    int nr;
  };
  const detail::W4Kernels& kk = detail::w4_kernels(isa);
  const Ctx ctx{&w, kk.panel, kk.nr};
  const auto fill = [](const void* c, int64_t p, float* buffer) {
    const Ctx& cx = *static_cast<const Ctx*>(c);
    cx.panel(*cx.w, p * cx.nr, buffer);
  };
  detail::gemm_on_filled_panels(isa, w.n, w.k, w.groups() * w.group, x, m, ldx, bias, y, ldy, fill, &ctx);
}

void w4_matmul(const W4Matrix& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y, int64_t ldy,
               Isa isa) {
  if (m > kW4GemvPassMaxRows) return w4_gemm(w, x, m, ldx, bias, y, ldy, isa);
  for (int64_t i = 0; i < m; i += kGemvMaxRows)
    w4_gemv(w, x + i * ldx, std::min<int64_t>(kGemvMaxRows, m - i), ldx, bias, y + i * ldy, ldy, isa);
}

bool w4_gemv_rounds_x(Isa isa) {
  return detail::w4_kernels(isa).gemv_rounds_x;
}
const char* w4_gemv_name(Isa isa) {
  return detail::w4_kernels(isa).gemv_name;
}
const char* w4_gemm_name(Isa isa) {
  return detail::w4_kernels(isa).gemm_name;
}

}  // namespace shrink::kernels
