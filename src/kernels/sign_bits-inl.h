// Packed sign bits <-> Highway masks, per SIMD target (include after hwy/highway.h, inside a
// foreach_target translation unit). The bit layout is sign_matmul.h's.
//
// Highway's LoadMaskBits may read, and StoreMaskBits may write, 8 bytes at the pointer, more
// than the (N + 7) / 8 bytes a vector's lanes need; and a sign row can end at the last byte of a
// mapped file (the next page unmapped). So both go through a local 8-byte word, and only the
// bytes the lanes own are copied from or to the row (a register move on x86).
#if defined(BD_KERNELS_SIGN_BITS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BD_KERNELS_SIGN_BITS_INL_H_
#undef BD_KERNELS_SIGN_BITS_INL_H_
#else
#define BD_KERNELS_SIGN_BITS_INL_H_
#endif

#include <cstdint>
#include <cstring>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Lanes [i, i + N) of a sign row as a mask, set where S = +1. i is a multiple of N, so for
// N >= 8 the lanes start on a byte and own N / 8 whole bytes (at most 8: 64 float lanes);
// narrower vectors take their bits from inside one byte.
template <class DF>
HWY_INLINE hn::Mask<DF> LoadSignMask(DF df, const uint8_t* HWY_RESTRICT row_bits, size_t i) {
  const size_t N = hn::Lanes(df);
  uint64_t word = 0;
  if (N >= 8)
    std::memcpy(&word, row_bits + i / 8, N / 8);
  else
    word = uint8_t(row_bits[i / 8] >> (i % 8));
  return hn::LoadMaskBits(df, reinterpret_cast<const uint8_t*>(&word));
}

// Writes the mask of lanes [j, j + N) into a zeroed sign row (the same lane-to-bit layout).
template <class DF>
HWY_INLINE void StoreSignMask(DF df, hn::Mask<DF> positive, uint8_t* HWY_RESTRICT row_bits,
                              size_t j) {
  const size_t N = hn::Lanes(df);
  uint64_t word = 0;
  hn::StoreMaskBits(df, positive, reinterpret_cast<uint8_t*>(&word));
  if (N >= 8)
    std::memcpy(row_bits + j / 8, &word, N / 8);
  else
    row_bits[j / 8] |= uint8_t(word << (j % 8));
}

}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BD_KERNELS_SIGN_BITS_INL_H_ toggle
