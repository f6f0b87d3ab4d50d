// fp32 dense GEMM/GEMV: y[m][n] = x[m][k] * W^T (+ bias), W in Hugging Face layout [n][k].
// Backends: own packed kernels (scalar / AVX2 / AVX-512, one weight copy for GEMM and GEMV) and oneDNN matmul.
#pragma once

#include <shrink/core/cpu.h>
#include <shrink/core/dtype.h>
#include <shrink/core/tensor.h>

#include <cstdint>
#include <memory>
#include <string>

namespace shrink::kernels {

// Scalar reference with double accumulation (tests compare every kernel with it).
// y[i][j] = sum_p x[i][p] * w[j][p] + (bias ? bias[j] : 0).
void sgemm_ref(int64_t m, int64_t n, int64_t k, const float* x, int64_t ldx, const float* w, int64_t ldw,
               const float* bias, float* y, int64_t ldy);

// Up to this many rows, sgemm_packed streams the weights once (GEMV: decode, tiny batches).
constexpr int64_t kGemvMaxRows = 4;

// Weights packed for one ISA's micro-kernel: ceil(n / nr) panels, each [k][nr] contiguous (columns past n
// zero), 64-byte aligned. Both the GEMM micro-kernel and the GEMV read this layout, so a model keeps one copy.
class PackedWeightsF32 {
 public:
  PackedWeightsF32() = default;
  // w: [n][k] with row stride ldw elements, dtype F32, F16 or BF16 (converted with core/dtype.h).
  static PackedWeightsF32 pack(const void* w, DType dtype, int64_t n, int64_t k, int64_t ldw, Isa isa);

  Isa isa() const { return isa_; }
  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  int nr() const { return nr_; }
  int64_t panels() const { return nr_ ? (n_ + nr_ - 1) / nr_ : 0; }
  const float* panel(int64_t p) const { return data_.data<float>() + p * k_ * nr_; }
  size_t bytes() const { return data_.nbytes(); }

 private:
  Isa isa_ = Isa::Scalar;
  int64_t n_ = 0, k_ = 0;
  int nr_ = 0;
  Tensor data_;
};

// True when this CPU can run the kernels of `isa` (ignores the SHRINK_ISA cap; tests use it to skip).
bool isa_available(Isa isa);

// Panel width of the packed layout for an ISA (scalar 16, AVX2 16, AVX-512 64).
int sgemm_panel_width(Isa isa);

// y = x W^T + bias on packed weights, threaded over panels on the process pool. Picks the GEMV for
// m <= kGemvMaxRows and the register-blocked GEMM otherwise. bias may be null.
void sgemm_packed(const PackedWeightsF32& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                  int64_t ldy);
// The two paths by name (tests and benchmarks pin one). sgemv_packed needs m <= kGemvMaxRows.
void sgemm_packed_gemm(const PackedWeightsF32& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                       int64_t ldy);
void sgemv_packed(const PackedWeightsF32& w, const float* x, int64_t m, int64_t ldx, const float* bias, float* y,
                  int64_t ldy);

// oneDNN matmul (libdnnl, same OpenMP pool). Weights are reordered once to the blocked layout the primitive
// for m = kDnnlPlanRows prefers; primitives for other m are created on first use with that layout and cached.
class DnnlMatmulF32 {
 public:
  static constexpr int64_t kDnnlPlanRows = 128;
  // w: [n][k] F32 with row stride ldw; bias [n] or null. Both are copied.
  DnnlMatmulF32(const float* w, int64_t n, int64_t k, int64_t ldw, const float* bias);
  ~DnnlMatmulF32();
  DnnlMatmulF32(const DnnlMatmulF32&) = delete;
  DnnlMatmulF32& operator=(const DnnlMatmulF32&) = delete;

  // x: [m][k] (row stride k), y: [m][n] (row stride n). Thread-safe.
  void run(const float* x, int64_t m, float* y) const;
  // oneDNN's implementation name for this m, e.g. "brg:avx512_core".
  std::string impl_name(int64_t m) const;
  size_t bytes() const;
  int64_t n() const;
  int64_t k() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shrink::kernels
