// Linear: y[m, out] = x[m, in] * W^T + b. One interface for every weight format (fp32 dense now;
// int8, int4-group, sparse, low-rank later). W is given in Hugging Face nn.Linear layout [out, in].
#pragma once

#include <shrink/core/tensor.h>

#include <cstdint>
#include <memory>
#include <string>

namespace shrink {

struct PackedLinear;  // ops/qlinear.h

class Linear {
 public:
  virtual ~Linear() = default;
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  // x: [m][in] row-major, y: [m][out] row-major (overwritten). Threaded on the process pool.
  virtual void forward(const float* x, int64_t m, float* y) const = 0;
  virtual std::string scheme() const = 0;   // "f32", ...
  virtual size_t weight_bytes() const = 0;  // bytes the weights (+bias) occupy in memory
  // The packed tensors a quantized layer is saved as (ops/qlinear.h); null for layers that are the checkpoint's
  // own dense weights (a saver writes those tensors unchanged).
  virtual const PackedLinear* packed() const { return nullptr; }
  // GEMV-sized calls (m <= 4): only output features [o0, o1) of y ([m][out], row-major), on the calling thread, no
  // threading inside. Lets a model run several linears that read the same x in one parallel region (q/k/v,
  // gate/up). Returns false when the layer cannot; callers then use forward().
  virtual bool forward_rows(const float* /*x*/, int64_t /*m*/, float* /*y*/, int64_t /*o0*/, int64_t /*o1*/) const {
    return false;
  }
  // Frees what the layer can rebuild from its source on the next call (the dense layer's packed copy of its
  // weights); sequential calibration calls it on a finished block so a model larger than RAM stays bounded. Not while
  // another thread runs this layer. Other layers keep everything (no-op).
  virtual void release_packed() {}

 protected:
  int64_t in_ = 0, out_ = 0;
};

// Dense fp32 linear from a [out, in] weight of dtype F32/F16/BF16 and an optional bias [out]. Picks GEMV for m <= 4
// (decode) and a packed GEMM for batches. The layer keeps `weight` (a view: for a loaded model, of the mapped file)
// and converts/packs it on its first call, thread-safely, so loading a model costs no memory for its linears;
// release_packed() drops the packed copy again. weight_bytes() is the packed size whether packed yet or not.
std::unique_ptr<Linear> make_dense_linear(const Tensor& weight, const Tensor* bias = nullptr);

// Which fp32 GEMM runs batches (m > 4; smaller m always use the streaming GEMV on the packed weights).
// Auto follows the measured table in src/kernels/gemm/README.md; SHRINK_DENSE_GEMM=packed|onednn overrides it.
enum class DenseGemm { Auto, Packed, OneDnn };
std::unique_ptr<Linear> make_dense_linear(const Tensor& weight, const Tensor* bias, DenseGemm gemm);

}  // namespace shrink
