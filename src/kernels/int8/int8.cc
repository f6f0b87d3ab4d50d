// INT8 kernels: the kernel table per Int8Isa, weight packing into VNNI panels, and the threaded drivers of the
// W8A8 GEMM/GEMV and the W8A16 GEMV/GEMM (include/shrink/kernels/int8.h).
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/kernels/gemm.h>
#include <shrink/kernels/quant.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "kernels/gemm/sgemm_kernels.h"
#include "kernels/int8/int8_kernels.h"
#include "kernels/same_input.h"

namespace shrink::kernels {
namespace detail {

const Int8Kernels& int8_kernels(Int8Isa isa) {
  static const Int8Kernels kTable[kInt8IsaCount] = {
      {Int8Isa::Scalar,
       gemm_u8s8_panels_scalar,
       w8a16_gemv_panels_scalar,
       nullptr,
       dequant_panel_scalar,
       Isa::Scalar,
       quant_dynamic_scalar,
       quant_static_scalar,
       {"qu8-s8-f32-gemm-1x1-vnnipack-scalar", "f32-qs8w-gemv-1x1-vnnipack-scalar",
        "f32-qs8w-gemm-dequant-f32-4x16-scalar"}},
      {Int8Isa::Avx2,
       gemm_u8s8_panels_avx2,
       w8a16_gemv_panels_avx2,
       w8a16_gemv_q8_panels_avx2,
       dequant_panel_avx2,
       Isa::Avx2,
       quant_dynamic_avx2,
       quant_static_avx2,
       {"qu8-s8-f32-gemm-4x16-vnnipack-avx2-maddubs", "f32-qs8w-gemv-4x16-vnnipack-avx2",
        "f32-qs8w-gemm-dequant-f32-6x16-avx2"}},
      {Int8Isa::AvxVnni,
       gemm_u8s8_panels_avxvnni,
       w8a16_gemv_panels_avx2,
       w8a16_gemv_q8_panels_avx2,
       dequant_panel_avx2,
       Isa::Avx2,
       quant_dynamic_avx2,
       quant_static_avx2,
       {"qu8-s8-f32-gemm-6x16-vnnipack-avxvnni", "f32-qs8w-gemv-4x16-vnnipack-avx2",
        "f32-qs8w-gemm-dequant-f32-6x16-avx2"}},
      {Int8Isa::Avx512,
       gemm_u8s8_panels_avx2,
       w8a16_gemv_panels_avx512,
       nullptr,
       dequant_panel_avx512,
       Isa::Avx512,
       quant_dynamic_avx512,
       quant_static_avx512,
       {"qu8-s8-f32-gemm-4x16-vnnipack-avx2-maddubs", "f32-qs8w-gemv-4x64-vnnipack-avx512",
        "f32-qs8w-gemm-dequant-f32-6x64-avx512"}},
      {Int8Isa::Avx512Vnni,
       gemm_u8s8_panels_avx512vnni,
       w8a16_gemv_panels_avx512,
       nullptr,
       dequant_panel_avx512,
       Isa::Avx512,
       quant_dynamic_avx512,
       quant_static_avx512,
       {"qu8-s8-f32-gemm-6x64-vnnipack-avx512vnni", "f32-qs8w-gemv-4x64-vnnipack-avx512",
        "f32-qs8w-gemm-dequant-f32-6x64-avx512"}},
  };
  const int i = static_cast<int>(isa);
  check(i >= 0 && i < kInt8IsaCount, "int8 kernels: unknown kernel set {}", i);
  check(int8_isa_available(isa), "int8 kernels '{}': this CPU ({}) lacks that instruction set; use int8_isa_for()",
        int8_isa_name(isa), cpu_features().model);
  return kTable[i];
}

}  // namespace detail

namespace {

// Below this many multiply-adds a second thread costs more than it saves.
constexpr int64_t kSerialMacs = 1 << 16;

int64_t round_up4(int64_t k) {
  return (k + kInt8Kg - 1) / kInt8Kg * kInt8Kg;
}

template <class Fn>
void run_panels(int64_t macs, int64_t panels, Fn&& fn) {
  if (macs < kSerialMacs)
    fn(int64_t{0}, panels);
  else
    parallel_for(panels, 1, fn);
}

// Like run_panels for the GEMMs, but with fn(p0, p1, r0, r1) over panels and row ranges: when there are fewer panels
// than threads the rows are split too, in blocks of a multiple of 12 rows (whole 4- and 6-row tiles).
// A [544 x 64] x [64 x 64] ViT projection is one 64-column panel: by panels alone one thread did all of it.
template <class Fn>
void run_panel_rows(int64_t macs, int64_t panels, int64_t m, Fn&& fn) {
  const int64_t threads = num_threads();
  if (macs < kSerialMacs || threads <= 1 || panels >= threads || m < 24) {
    run_panels(macs, panels, [&](int64_t p0, int64_t p1) { fn(p0, p1, int64_t{0}, m); });
    return;
  }
  const int64_t want = (2 * threads + panels - 1) / panels;  // row blocks per panel
  const int64_t rows = std::max<int64_t>(12, ((m + want - 1) / want + 11) / 12 * 12);
  const int64_t blocks = (m + rows - 1) / rows;
  // Units are (panel, row block), panel-major: a thread's contiguous units share panels.
  parallel_for(panels * blocks, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1;) {
      const int64_t p = u / blocks, last = std::min(u1, (p + 1) * blocks);
      fn(p, p + 1, (u % blocks) * rows, std::min(m, ((last - 1) % blocks + 1) * rows));
      u = last;
    }
  });
}

// The same GEMM on rows [r0, r1) only.
detail::Int8GemmArgs row_slice(detail::Int8GemmArgs g, int64_t r0, int64_t r1) {
  g.a += r0 * g.lda;
  g.m = r1 - r0;
  if (g.c) g.c += r0 * g.ldc;
  if (g.y) g.y += r0 * g.ldy;
  if (g.a_scale) g.a_scale += r0 * g.a_scale_stride;
  return g;
}

}  // namespace

const char* int8_isa_name(Int8Isa isa) {
  switch (isa) {
    case Int8Isa::Scalar: return "scalar";
    case Int8Isa::Avx2: return "avx2";
    case Int8Isa::AvxVnni: return "avxvnni";
    case Int8Isa::Avx512: return "avx512";
    case Int8Isa::Avx512Vnni: return "avx512vnni";
  }
  return "?";
}

bool int8_isa_available(Int8Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Int8Isa::Scalar: return true;
    case Int8Isa::Avx2: return isa_available(Isa::Avx2);
    case Int8Isa::AvxVnni: return isa_available(Isa::Avx2) && f.avxvnni;
    case Int8Isa::Avx512: return isa_available(Isa::Avx512);
    case Int8Isa::Avx512Vnni: return isa_available(Isa::Avx512) && f.avx512vnni;
  }
  return false;
}

Int8Isa int8_isa_for(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      if (int8_isa_available(Int8Isa::Avx512Vnni)) return Int8Isa::Avx512Vnni;
      if (int8_isa_available(Int8Isa::Avx512)) return Int8Isa::Avx512;
      [[fallthrough]];
    case Isa::Avx2:
      if (int8_isa_available(Int8Isa::AvxVnni)) return Int8Isa::AvxVnni;
      if (int8_isa_available(Int8Isa::Avx2)) return Int8Isa::Avx2;
      [[fallthrough]];
    case Isa::Scalar: break;
  }
  return Int8Isa::Scalar;
}

Int8KernelNames int8_kernel_names(Int8Isa isa) {
  Int8KernelNames names = detail::int8_kernels(isa).names;
  if (w8a16_gemv_rounds_x(isa)) names.w8a16_gemv = "f32q8-qs8w-gemv-1x64-vnnipack-avx2-maddubs";
  return names;
}

PackedWeightsS8 PackedWeightsS8::pack(const int8_t* w, const float* scale, int64_t n, int64_t k, int64_t ldw) {
  check(n > 0 && k > 0 && ldw >= k, "pack int8 weights: shape [n = {}, k = {}] with row stride {} is invalid", n, k,
        ldw);
  // int32 sums: |a w| <= 255 * 127 per product; with k <= 32768 the raw sum, the zero-point term and their
  // difference all stay inside int32.
  check(k <= 32768, "pack int8 weights: k = {} input features; the int32 accumulators support at most 32768", k);
  PackedWeightsS8 p;
  p.n_ = n;
  p.k_ = k;
  const int64_t kpad = p.kpad(), panels = p.panels();
  p.data_ = Tensor::zeros(DType::I8, {panels * kpad * kInt8Nr});
  p.wsum_.assign(static_cast<size_t>(panels * kInt8Nr), 0);
  p.scale_.assign(static_cast<size_t>(panels * kInt8Nr), 0.f);
  int8_t* dst = p.data_.data<int8_t>();
  std::vector<int64_t> bad(static_cast<size_t>(panels), -1);
  parallel_for(panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t pi = begin; pi < end; ++pi) {
      int8_t* panel = dst + pi * kpad * kInt8Nr;
      const int64_t cols = std::min<int64_t>(kInt8Nr, n - pi * kInt8Nr);
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t col = pi * kInt8Nr + c;
        const int8_t* src = w + col * ldw;
        int32_t sum = 0;
        for (int64_t kk = 0; kk < k; ++kk) {
          if (src[kk] == -128) bad[static_cast<size_t>(pi)] = col;
          panel[((kk / kInt8Kg) * kInt8Nr + c) * kInt8Kg + kk % kInt8Kg] = src[kk];
          sum += src[kk];
        }
        p.wsum_[static_cast<size_t>(col)] = sum;
        p.scale_[static_cast<size_t>(col)] = scale[col];
      }
    }
  });
  for (int64_t b : bad)
    if (b >= 0)
      fail(
          "pack int8 weights: row {} holds -128; the W8 format is symmetric in [-127, 127]. Re-quantize the layer "
          "with shrink quantize",
          b);
  return p;
}

void PackedWeightsS8::unpack(int8_t* w, int64_t ldw) const {
  for (int64_t col = 0; col < n_; ++col) {
    const int8_t* panel = this->panel(col / kInt8Nr);
    const int64_t c = col % kInt8Nr;
    for (int64_t kk = 0; kk < k_; ++kk)
      w[col * ldw + kk] = panel[((kk / kInt8Kg) * kInt8Nr + c) * kInt8Kg + kk % kInt8Kg];
  }
}

void quantize_a8_dynamic(Int8Isa isa, const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq,
                         float* scales) {
  check(k > 0 && ldx >= k && ldq >= round_up4(k),
        "quantize_a8_dynamic: k = {}, ldx = {}, ldq = {}; expected k > 0, "
        "ldx >= k, ldq >= k rounded up to 4",
        k, ldx, ldq);
  detail::int8_kernels(isa).quant_dynamic(x, m, k, ldx, q, ldq, scales);
}

void quantize_a8_static(Int8Isa isa, const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zero_point,
                        uint8_t* q, int64_t ldq) {
  check(k > 0 && ldx >= k && ldq >= round_up4(k),
        "quantize_a8_static: k = {}, ldx = {}, ldq = {}; expected k > 0, "
        "ldx >= k, ldq >= k rounded up to 4",
        k, ldx, ldq);
  check(scale > 0.f && std::isfinite(scale) && zero_point >= 0 && zero_point <= 255,
        "quantize_a8_static: scale {} and zero point {}; expected a positive finite scale and a zero point in [0, 255]",
        scale, zero_point);
  detail::int8_kernels(isa).quant_static(x, m, k, ldx, scale, zero_point, q, ldq);
}

void gemm_u8s8s32(Int8Isa isa, const PackedWeightsS8& w, const uint8_t* a, int64_t m, int64_t lda, int32_t* c,
                  int64_t ldc) {
  check(m >= 0 && lda >= w.kpad() && ldc >= w.n(),
        "gemm_u8s8s32: m = {}, lda = {}, ldc = {} do not fit weights "
        "[n = {}, k = {}]; expected lda >= k rounded up to 4, ldc >= n",
        m, lda, ldc, w.n(), w.k());
  if (m == 0) return;
  detail::Int8GemmArgs g{a,   lda,     m, w.data(), w.kpad(), w.n(), w.wsum(), w.scale(), c,
                         ldc, nullptr, 0, nullptr,  0,        0,     nullptr,  0,         w.n()};
  const auto fn = detail::int8_kernels(isa).gemm;
  run_panel_rows(m * w.n() * w.k(), w.panels(), m,
                 [&](int64_t p0, int64_t p1, int64_t r0, int64_t r1) { fn(row_slice(g, r0, r1), p0, p1); });
}

namespace {

detail::Int8GemmArgs w8a8_args(const PackedWeightsS8& w, const A8Rows& a, int64_t m, const float* bias, float* y,
                               int64_t ldy, int64_t col0, int64_t col1) {
  check(m >= 0 && a.ldq >= w.kpad() && ldy >= w.n() && col0 >= 0 && col1 <= w.n(),
        "gemm_u8s8_f32: m = {}, ldq = {}, ldy = {}, columns [{}, {}) do not fit weights [n = {}, k = {}]", m, a.ldq,
        ldy, col0, col1, w.n(), w.k());
  return {a.q, a.ldq, m,   w.data(), w.kpad(),       w.n(),        w.wsum(), w.scale(), nullptr,
          0,   y,     ldy, a.scale,  a.scale_stride, a.zero_point, bias,     col0,      col1};
}

}  // namespace

void gemm_u8s8_f32(Int8Isa isa, const PackedWeightsS8& w, const A8Rows& a, int64_t m, const float* bias, float* y,
                   int64_t ldy) {
  const detail::Int8GemmArgs g = w8a8_args(w, a, m, bias, y, ldy, 0, w.n());
  if (m == 0) return;
  const auto fn = detail::int8_kernels(isa).gemm;
  run_panel_rows(m * w.n() * w.k(), w.panels(), m,
                 [&](int64_t p0, int64_t p1, int64_t r0, int64_t r1) { fn(row_slice(g, r0, r1), p0, p1); });
}

void gemm_u8s8_f32_cols(Int8Isa isa, const PackedWeightsS8& w, const A8Rows& a, int64_t m, const float* bias, float* y,
                        int64_t ldy, int64_t col0, int64_t col1) {
  const detail::Int8GemmArgs g = w8a8_args(w, a, m, bias, y, ldy, col0, col1);
  if (m == 0 || col1 <= col0) return;
  detail::int8_kernels(isa).gemm(g, col0 / kInt8Nr, (col1 + kInt8Nr - 1) / kInt8Nr);
}

namespace {

// x rows readable up to kpad: a zero-padded copy when k is not a multiple of 4 (thread-local, reused).
const float* padded_x(const PackedWeightsS8& w, const float* x, int64_t m, int64_t& ldx) {
  if (w.k() % kInt8Kg == 0) return x;
  thread_local std::vector<float> buf;
  const int64_t kpad = w.kpad();
  buf.assign(static_cast<size_t>(m * kpad), 0.f);
  for (int64_t i = 0; i < m; ++i) std::memcpy(&buf[i * kpad], x + i * ldx, w.k() * sizeof(float));
  ldx = kpad;
  return buf.data();
}

}  // namespace

namespace {

bool w8_gemv_q8_allowed() {
  static const bool allowed = [] {
    const char* env = std::getenv("SHRINK_W8_GEMV");
    check(!env || std::string_view(env) == "f32" || std::string_view(env) == "q8",
          "SHRINK_W8_GEMV={}: expected f32 (exact fp32 W8A16 GEMV) or q8 (x rounded to int8 per 32 values)",
          env ? env : "");
    return !(env && std::string_view(env) == "f32");
  }();
  return allowed;
}

// x rounded per 32 values in the layout of W8A16Q8Args, for this thread, redone only when x changed
// (kernels/same_input.h, as the W4 q8 GEMV does).
struct PreparedQ8 {
  std::vector<uint8_t> xq;
  std::vector<float> dx;
  std::vector<int8_t> q;
  int64_t ldxq = 0, lddx = 0;
  detail::SameInput input;  // the x rounded; tag: kpad
};

const PreparedQ8& prepared_q8(const float* x, int64_t m, int64_t ldx, int64_t k, int64_t kpad) {
  thread_local PreparedQ8 p;
  if (p.input.same(x, m, ldx, k, kpad)) return p;
  p.ldxq = kpad * 2;
  p.lddx = (kpad + 31) / 32;
  p.xq.assign(static_cast<size_t>(m * p.ldxq), 0);
  p.dx.assign(static_cast<size_t>(m * p.lddx), 0.f);
  p.q.assign(static_cast<size_t>(kpad), 0);
  for (int64_t r = 0; r < m; ++r) {
    quantize_row_q8_32_ref(x + r * ldx, k, p.q.data(), p.dx.data() + r * p.lddx);
    uint8_t* o = p.xq.data() + r * p.ldxq;
    for (int64_t i = 0; i < kpad; ++i) {  // per k group of 4: |q| then q
      const int8_t v = p.q[static_cast<size_t>(i)];
      o[(i / kInt8Kg) * 2 * kInt8Kg + i % kInt8Kg] = static_cast<uint8_t>(v < 0 ? -v : v);
      o[(i / kInt8Kg) * 2 * kInt8Kg + kInt8Kg + i % kInt8Kg] = static_cast<uint8_t>(v);
    }
  }
  p.input.remember(x, m, ldx, k, kpad);
  return p;
}

// The W8A16 GEMV of panels [p0, p1): the q8 kernel where the set has one (and SHRINK_W8_GEMV allows), else exact.
template <class Run>
void w8a16_gemv(const detail::Int8Kernels& kt, const PackedWeightsS8& w, const float* x, int64_t m, int64_t ldx,
                const float* bias, float* y, int64_t ldy, int64_t col0, int64_t col1, Run&& run) {
  const detail::W8A16Args args{x, ldx, m, w.data(), w.kpad(), w.n(), w.scale(), bias, y, ldy, col0, col1};
  if (kt.w8a16_gemv_q8 && w8_gemv_q8_allowed()) {
    const PreparedQ8& p = prepared_q8(x, m, ldx, w.k(), w.kpad());
    const detail::W8A16Q8Args g{args, p.xq.data(), p.ldxq, p.dx.data(), p.lddx};
    run([&](int64_t p0, int64_t p1) { kt.w8a16_gemv_q8(g, p0, p1); });
    return;
  }
  detail::W8A16Args g = args;
  g.x = padded_x(w, x, m, g.ldx);
  run([&](int64_t p0, int64_t p1) { kt.w8a16_gemv(g, p0, p1); });
}

}  // namespace

bool w8a16_gemv_rounds_x(Int8Isa isa) {
  return detail::int8_kernels(isa).w8a16_gemv_q8 != nullptr && w8_gemv_q8_allowed();
}

void gemv_w8a16_cols(Int8Isa isa, const PackedWeightsS8& w, const float* x, int64_t m, int64_t ldx, const float* bias,
                     float* y, int64_t ldy, int64_t col0, int64_t col1) {
  check(m >= 0 && m <= kGemvMaxRows && ldx >= w.k() && ldy >= w.n() && col0 >= 0 && col1 <= w.n(),
        "gemv_w8a16: m = {}, ldx = {}, ldy = {}, columns [{}, {}) do not fit weights [n = {}, k = {}] (m <= {})", m,
        ldx, ldy, col0, col1, w.n(), w.k(), kGemvMaxRows);
  if (m == 0 || col1 <= col0) return;
  w8a16_gemv(detail::int8_kernels(isa), w, x, m, ldx, bias, y, ldy, col0, col1,
             [&](auto&& fn) { fn(col0 / kInt8Nr, (col1 + kInt8Nr - 1) / kInt8Nr); });
}

void gemm_w8a16(Int8Isa isa, const PackedWeightsS8& w, const float* x, int64_t m, int64_t ldx, const float* bias,
                float* y, int64_t ldy) {
  check(m >= 0 && ldx >= w.k() && ldy >= w.n(),
        "gemm_w8a16: m = {}, ldx = {}, ldy = {} do not fit weights [n = {}, "
        "k = {}]",
        m, ldx, ldy, w.n(), w.k());
  if (m == 0) return;
  const detail::Int8Kernels& kt = detail::int8_kernels(isa);
  if (m <= kGemvMaxRows) {
    w8a16_gemv(kt, w, x, m, ldx, bias, y, ldy, 0, w.n(),
               [&](auto&& fn) { run_panels(m * w.n() * w.k(), w.panels(), fn); });
    return;
  }
  // Each panel is dequantized once (scales folded in) into the fp32 micro-kernel's layout and multiplied by all m
  // rows there: the dequantization is 1/m of the multiply-adds.
  const detail::SgemmKernels& f32 = detail::sgemm_kernels(kt.f32_isa);
  const int nr = f32.nr;
  const int64_t k = w.k();
  run_panel_rows(m * w.n() * k, w.panels(), m, [&](int64_t p0, int64_t p1, int64_t r0, int64_t r1) {
    thread_local Tensor buf;
    if (buf.raw() == nullptr || buf.numel() < k * kInt8Nr) buf = Tensor::empty(DType::F32, {k * kInt8Nr});
    float* panel = buf.data<float>();
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t col = p * kInt8Nr, cols = std::min<int64_t>(kInt8Nr, w.n() - col);
      kt.dequant_panel(w.panel(p), k, w.scale() + col, nr, panel);
      const detail::SgemmArgs a{x + r0 * ldx,       ldx, r1 - r0, cols, k, panel, bias ? bias + col : nullptr,
                                y + r0 * ldy + col, ldy};
      f32.gemm(a, 0, (cols + nr - 1) / nr);
    }
  });
}

}  // namespace shrink::kernels
