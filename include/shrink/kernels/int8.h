// INT8 Linear kernels: int8 weights [n][k] repacked once into VNNI panels that both the u8s8 integer GEMM/GEMV
// (W8A8) and the int8 -> fp32 GEMV/GEMM (W8A16) read, and per-token / static A8 activation quantization.
#pragma once

#include <shrink/core/cpu.h>
#include <shrink/core/tensor.h>

#include <cstdint>
#include <vector>

namespace shrink::kernels {

// Kernel sets, one per instruction-set family (src/kernels/int8/README.md has what each one does and measures).
enum class Int8Isa : int { Scalar = 0, Avx2 = 1, AvxVnni = 2, Avx512 = 3, Avx512Vnni = 4 };
constexpr int kInt8IsaCount = 5;

const char* int8_isa_name(Int8Isa isa);  // "scalar", "avx2", "avxvnni", "avx512", "avx512vnni"
bool int8_isa_available(Int8Isa isa);    // this CPU can run it (ignores SHRINK_ISA; tests skip on false)
Int8Isa int8_isa_for(Isa isa);           // the best set within an ISA level (pass active_isa())

// Panel layout: ceil(n / 64) panels of kpad / 4 groups; group g of panel p holds, for its 64 output columns in
// order, the 4 weights w[col][4g .. 4g+3] (256 bytes: one int32 lane of a VNNI dot per column). Columns past n and
// k values past k are zero.
constexpr int kInt8Nr = 64;
constexpr int kInt8Kg = 4;

class PackedWeightsS8 {
 public:
  PackedWeightsS8() = default;
  // w: [n][k] int8 with row stride ldw, every value in [-127, 127] (the W8 format; -128 is refused: the AVX2
  // kernels' sign trick cannot represent it); scale: [n] per-output-column fp32 scales (w = q * scale).
  // k <= 32768 (int32 accumulators).
  static PackedWeightsS8 pack(const int8_t* w, const float* scale, int64_t n, int64_t k, int64_t ldw);

  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  int64_t kpad() const { return (k_ + kInt8Kg - 1) / kInt8Kg * kInt8Kg; }
  int64_t panels() const { return (n_ + kInt8Nr - 1) / kInt8Nr; }
  const int8_t* panel(int64_t p) const { return data_.data<int8_t>() + p * kpad() * kInt8Nr; }
  const int8_t* data() const { return data_.data<int8_t>(); }
  const int32_t* wsum() const { return wsum_.data(); }  // [panels * 64]: sum over k of each column (0 past n)
  const float* scale() const { return scale_.data(); }  // [panels * 64] (0 past n)
  // The original [n][k] rows (row stride ldw), exactly.
  void unpack(int8_t* w, int64_t ldw) const;
  size_t bytes() const { return data_.nbytes() + (wsum_.size() + scale_.size()) * 4; }

 private:
  int64_t n_ = 0, k_ = 0;
  Tensor data_;
  std::vector<int32_t> wsum_;
  std::vector<float> scale_;
};

// ---- Activations (A8). q: [m][ldq] bytes, ldq >= round_up(k, 4); bytes k .. round_up(k, 4) - 1 of a row are set
// to the zero point (they meet zero weights). Same float operations as the references of quant.h, so the codes
// match quantize_row_a8_dynamic_ref / quantize_row_u8_ref exactly. On the calling thread.
void quantize_a8_dynamic(Int8Isa isa, const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq,
                         float* scales);
void quantize_a8_static(Int8Isa isa, const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zero_point,
                        uint8_t* q, int64_t ldq);

// ---- W8A8: u8 x s8 -> s32. Quantized activations of the m rows with per-row (a_scale_stride 1) or one
// (stride 0) scale and a zero point.
struct A8Rows {
  const uint8_t* q;
  int64_t ldq;
  const float* scale;
  int64_t scale_stride;
  int32_t zero_point;
};

// Raw integer products c[i][j] = sum_k a[i][k] * w[j][k] (no zero point): the core that dot_u8s8_ref pins exactly.
// Threaded over panels.
void gemm_u8s8s32(Int8Isa isa, const PackedWeightsS8& w, const uint8_t* a, int64_t m, int64_t lda, int32_t* c,
                  int64_t ldc);
// y[i][j] = a_scale[i] * w_scale[j] * (sum_k a[i][k] w[j][k] - zp * wsum[j]) + bias[j] (bias may be null).
// Threaded over panels; columns [col0, col1) only, on the calling thread, for the _cols variant.
void gemm_u8s8_f32(Int8Isa isa, const PackedWeightsS8& w, const A8Rows& a, int64_t m, const float* bias, float* y,
                   int64_t ldy);
void gemm_u8s8_f32_cols(Int8Isa isa, const PackedWeightsS8& w, const A8Rows& a, int64_t m, const float* bias, float* y,
                        int64_t ldy, int64_t col0, int64_t col1);

// ---- W8A16: fp32 activations, int8 weights converted in registers.
// y = x * (w * scale)^T + bias. m <= 4: streaming GEMV; larger m: each panel dequantized once to fp32 and run by
// the fp32 GEMM micro-kernel of kernels/gemm. Threaded over panels.
void gemm_w8a16(Int8Isa isa, const PackedWeightsS8& w, const float* x, int64_t m, int64_t ldx, const float* bias,
                float* y, int64_t ldy);
// The GEMV (m <= 4) rounds x to int8 per 32 values (quantize_row_q8_32_ref, llama.cpp's Q8_0 activations) and
// dots in integers on sets where the exact GEMV is compute-bound (AVX2, AVX-VNNI): this says whether `isa` does.
// SHRINK_W8_GEMV=f32 keeps the exact fp32 GEMV. The GEMM (m > 4) is always exact.
bool w8a16_gemv_rounds_x(Int8Isa isa);
// The GEMV (m <= 4) over columns [col0, col1) on the calling thread.
void gemv_w8a16_cols(Int8Isa isa, const PackedWeightsS8& w, const float* x, int64_t m, int64_t ldx, const float* bias,
                     float* y, int64_t ldy, int64_t col0, int64_t col1);

// Contract names of the kernels of a set (benchmarks print them).
struct Int8KernelNames {
  const char* gemm;
  const char* w8a16_gemv;
  const char* w8a16_gemm;
};
Int8KernelNames int8_kernel_names(Int8Isa isa);

}  // namespace shrink::kernels
