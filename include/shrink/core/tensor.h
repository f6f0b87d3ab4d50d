// Tensor: a typed, shaped view of bytes plus a handle that keeps them alive (aligned heap
// storage or a mmap'd file). The one tensor type of shrink; row-major, contiguous.
#pragma once

#include <shrink/core/dtype.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace shrink {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  // 64-byte aligned, uninitialised / zero-filled storage.
  static Tensor empty(DType dtype, Shape shape);
  static Tensor zeros(DType dtype, Shape shape);
  // A view of bytes owned by `owner` (e.g. a MappedFile); no copy.
  static Tensor view(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner);
  static Tensor from_f32(const std::vector<float>& values, Shape shape);

  bool defined() const { return data_ != nullptr || numel() == 0; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  template <typename T>
  T* data() {
    return static_cast<T*>(const_cast<void*>(data_));
  }
  template <typename T>
  const T* data() const {
    return static_cast<const T*>(data_);
  }
  const void* raw() const { return data_; }

  // Same bytes, new shape (numel must match).
  Tensor reshape(Shape shape) const;
  // Converted copy in F32 (from F32/F16/BF16/I8/U8/I32/I64); F32 input is copied too.
  Tensor to_f32() const;
  Tensor clone() const;

 private:
  DType dtype_ = DType::F32;
  Shape shape_;
  const void* data_ = nullptr;
  std::shared_ptr<const void> owner_;
};

// Named tensors as stored in checkpoints (Hugging Face names), sorted by name.
using TensorMap = std::map<std::string, Tensor>;

}  // namespace shrink
