// Tensor storage, views and dtype conversion.
#include <shrink/core/error.h>
#include <shrink/core/tensor.h>

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

namespace shrink {

namespace {
constexpr size_t kHugePageBytes = size_t{2} << 20;
}  // namespace

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Tensor Tensor::empty(DType dtype, Shape shape) {
  for (int64_t d : shape) check(d >= 0, "tensor shape {}: dimensions must be non-negative", shape_str(shape));
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  size_t bytes = (t.nbytes() + 63) / 64 * 64;
  if (bytes == 0) return t;
  // Large tensors (packed weights, activations of long prompts) are streamed end to end: put them on 2 MiB
  // transparent huge pages, so a pass over them takes one TLB miss per 2 MiB instead of one per 4 KiB.
  const bool huge = bytes >= kHugePageBytes * 4;
  if (huge) bytes = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  void* p = std::aligned_alloc(huge ? kHugePageBytes : 64, bytes);
  if (!p) fail("out of memory allocating {} bytes for a tensor of shape {}", bytes, shape_str(t.shape_));
  if (huge) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without THP the pages stay 4 KiB
  t.owner_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.data_ = p;
  return t;
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t = empty(dtype, std::move(shape));
  if (t.nbytes()) std::memset(t.data<uint8_t>(), 0, t.nbytes());
  return t;
}

Tensor Tensor::view(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = data;
  t.owner_ = std::move(owner);
  return t;
}

Tensor Tensor::from_f32(const std::vector<float>& values, Shape shape) {
  check(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_f32: {} values do not fill shape {}",
        values.size(), shape_str(shape));
  Tensor t = empty(DType::F32, std::move(shape));
  if (!values.empty()) std::memcpy(t.data<float>(), values.data(), values.size() * 4);
  return t;
}

Tensor Tensor::reshape(Shape shape) const {
  check(shape_numel(shape) == numel(), "reshape from {} to {}: element counts differ", shape_str(shape_),
        shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(dtype_, shape_);
  if (nbytes()) std::memcpy(t.data<uint8_t>(), data_, nbytes());
  return t;
}

Tensor Tensor::to_f32() const {
  Tensor out = empty(DType::F32, shape_);
  float* o = out.data<float>();
  const int64_t n = numel();
  switch (dtype_) {
    case DType::F32:
      if (n) std::memcpy(o, data_, n * 4);
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) o[i] = f16_to_f32(data<uint16_t>()[i]);
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) o[i] = bf16_to_f32(data<uint16_t>()[i]);
      break;
    case DType::I8:
      for (int64_t i = 0; i < n; ++i) o[i] = data<int8_t>()[i];
      break;
    case DType::U8:
      for (int64_t i = 0; i < n; ++i) o[i] = data<uint8_t>()[i];
      break;
    case DType::I32:
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<float>(data<int32_t>()[i]);
      break;
    case DType::I64:
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<float>(data<int64_t>()[i]);
      break;
  }
  return out;
}

}  // namespace shrink
