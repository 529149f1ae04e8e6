#include "core/tensor.h"

namespace bd {

std::string shape_str(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

std::vector<float> to_f32(const TensorView& tensor) {
  std::vector<float> values(size_t(tensor.numel()));
  to_f32(tensor.dtype, tensor.data, values.data(), values.size());
  return values;
}

}  // namespace bd
