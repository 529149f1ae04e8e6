// A non-owning view of a stored tensor: dtype, shape and the bytes (often inside an mmap).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace bd {

using Shape = std::vector<int64_t>;

inline int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const Shape& shape);  // "[4096, 11008]"

struct TensorView {
  DType dtype = DType::F32;
  Shape shape;
  const void* data = nullptr;

  int64_t numel() const { return shape_numel(shape); }
  size_t bytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape[i]; }
  template <typename T>
  const T* as() const { return static_cast<const T*>(data); }
};

// The tensor's values as F32 (copies; converts BF16/F16).
std::vector<float> to_f32(const TensorView& tensor);

}  // namespace bd
