// Element types of stored tensors and the scalar conversions between them.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace bd {

enum class DType : uint8_t { F32, F16, BF16, U8, I8, I32, U32 };

size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);  // safetensors spelling: "F32", "BF16", ...
// Parses a safetensors dtype name; returns false for names bitdelta does not know.
bool parse_dtype(std::string_view name, DType* dtype);
inline bool is_float(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }

inline float bf16_to_f32(uint16_t bits) {
  uint32_t wide = uint32_t(bits) << 16;
  float value;
  std::memcpy(&value, &wide, 4);
  return value;
}

// Round to nearest even, as PyTorch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);  // round to nearest even, overflow to inf

// Converts n elements of a float dtype to F32 / from F32.
void to_f32(DType dtype, const void* src, float* dst, size_t n);
void from_f32(DType dtype, const float* src, void* dst, size_t n);

}  // namespace bd
