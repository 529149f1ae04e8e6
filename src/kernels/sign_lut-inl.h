// Packed-sign products by table lookup, per SIMD target (include after hwy/highway.h inside a
// foreach_target translation unit): defines BD_SIGN_LUT to 1 on the targets that have it (AVX2,
// and AVX-512 without VNNI, which runs the same 256-bit code), to 0 elsewhere.
#if defined(BD_KERNELS_SIGN_LUT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BD_KERNELS_SIGN_LUT_INL_H_
#undef BD_KERNELS_SIGN_LUT_INL_H_
#else
#define BD_KERNELS_SIGN_LUT_INL_H_
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "hwy/cache_control.h"
#include "hwy/highway.h"

#undef BD_SIGN_LUT
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3
#define BD_SIGN_LUT 1
#else
#define BD_SIGN_LUT 0
#endif

HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {

// Prefetches into L2, one 64-byte line per call, the bytes [next, end) that a caller streams after
// some vector work: the work then runs while DRAM delivers them (nothing when next = end).
struct LinePrefetcher {
  const char* next = nullptr;
  const char* end = nullptr;
  HWY_INLINE void One() {
    if (next < end) {
      __builtin_prefetch(next, 0, 2);
      next += 64;
    }
  }
};

}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if BD_SIGN_LUT
HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {

// Table lookups (AVX2; AVX-512 without VNNI runs the same code). Σ_{bit set} q over a group of 4
// columns takes one of 16 values, so each token's q becomes, per group, a table of those 16 sums
// (16-bit: |q| ≤ 8191 keeps a sum of 4 in range), split into low and high bytes; a vpshufb looks
// up 32 of them at once, indexed by nibbles of sign bits: 128 signs per instruction, against 16
// for a masked 16-bit multiply-add. The 16 lookups of a 128-bit lane share one table (one group
// of columns), so a lane must hold 16 rows' bits of the same columns: each tile of 16 sign rows
// is transposed to that order once, and serves every token of its job.
//
// Layout, per chunk k of 32 byte columns (256 columns) and c = 0..15: the 32 bytes
// tile[k][c] hold in lane L (= 0, 1) byte column 32k + 16L + c of the tile's rows, byte r for
// row r; the 128 bytes table[k][c] are four such vectors, lane L for the same byte column: the
// low bytes of the 16 sums of its low nibble's 4 columns, the low bytes of its high nibble's,
// then the high bytes of both.
constexpr size_t kTileRows = 16;
constexpr size_t kTileChunkBytes = 16 * 32;
constexpr size_t kTableChunkBytes = 16 * 128;
// The 16-bit sums of a run of lookups are moved to 32-bit ones after at most this many steps of
// the loop: each adds at most 2·255 to a low-byte sum (64·510 < 2^15) and 2·128 to a high one.
constexpr size_t kStepsPerFlush = 64;

HWY_INLINE size_t LutChunks(size_t I) {
  return (I + 255) / 256;
}

// A token's tables (LutChunks(I) · kTableChunkBytes bytes) from its q[I] (zero past I). Per byte
// column, lane n of a 16-bit vector sums the q of its 4 columns whose bit is set in n (both
// nibbles' groups at once); the low and the high bytes are then packed apart.
void BuildLutTables(const int16_t* HWY_RESTRICT q, size_t I, uint8_t* HWY_RESTRICT table) {
  const __m256i lane_index =
      _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m256i has_bit[4];  // lane n: all ones where bit j of n is set
  for (int j = 0; j < 4; ++j) {
    const __m256i bit = _mm256_set1_epi16(int16_t(1 << j));
    has_bit[j] = _mm256_cmpeq_epi16(_mm256_and_si256(lane_index, bit), bit);
  }
  const __m256i low_byte = _mm256_set1_epi16(0xFF);
  const size_t byte_columns = 32 * LutChunks(I);
  for (size_t column = 0; column < byte_columns; ++column) {
    int16_t value[8] = {0};  // q of the byte column's 8 columns
    for (size_t j = 0; j < 8 && 8 * column + j < I; ++j) value[j] = q[8 * column + j];
    __m256i sums[2];  // the low nibble's 4 columns, then the high nibble's
    for (int half = 0; half < 2; ++half) {
      sums[half] = _mm256_setzero_si256();
      for (int j = 0; j < 4; ++j)
        sums[half] = _mm256_add_epi16(
            sums[half], _mm256_and_si256(has_bit[j], _mm256_set1_epi16(value[4 * half + j])));
    }
    // Per lane the packs interleave 8 sums of each half; 0xD8 puts the halves back in order.
    const __m256i low =
        _mm256_permute4x64_epi64(_mm256_packus_epi16(_mm256_and_si256(sums[0], low_byte),
                                                     _mm256_and_si256(sums[1], low_byte)),
                                 0xD8);
    const __m256i high = _mm256_permute4x64_epi64(
        _mm256_packs_epi16(_mm256_srai_epi16(sums[0], 8), _mm256_srai_epi16(sums[1], 8)), 0xD8);
    const size_t k = column / 32, lane = column % 32 / 16, c = column % 16;
    uint8_t* vectors = table + (k * 16 + c) * 128 + 16 * lane;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(vectors), _mm256_castsi256_si128(low));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(vectors + 32), _mm256_extracti128_si256(low, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(vectors + 64), _mm256_castsi256_si128(high));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(vectors + 96), _mm256_extracti128_si256(high, 1));
  }
}

// tile (LutChunks(I) · kTileChunkBytes bytes, 32-byte aligned) from `rows` ≤ 16 sign rows; the
// missing rows, and the bytes past a row's end, are zero (no bit set). Per chunk, four rounds of
// interleaving register i with register i + 8 turn 16 rows of 16 bytes into 16 columns of 16 rows
// (each round rotates the 8-bit address row·16 + byte by one bit), in both lanes at once.
// kStream: the tile is written around the caches (non-temporal stores; the caller fences), for
// packing a whole adapter that the loader thread will not read again: on a shared L3 the steps'
// data stays put, and the writes need no reads for ownership.
template <bool kStream = false>
void TransposeTile(const uint8_t* HWY_RESTRICT bits, size_t row_bytes, size_t rows,
                   uint8_t* HWY_RESTRICT tile, LinePrefetcher* prefetcher = nullptr) {
  const size_t chunks = (row_bytes + 31) / 32;
  for (size_t k = 0; k < chunks; ++k) {
    if (prefetcher)
      for (int line = 0; line < 4; ++line) prefetcher->One();
    const size_t offset = 32 * k, available = std::min<size_t>(32, row_bytes - offset);
    __m256i v[16];
    const bool whole = rows == 16 && available == 32;
    // Fully unrolled, so that v stays in registers.
#pragma GCC unroll 16
    for (size_t r = 0; r < 16; ++r) {
      const uint8_t* from = bits + r * row_bytes + offset;
      // The same line two tiles ahead (usually in this thread's static share): one ahead left
      // the reads waiting on DRAM.
      if (k % 2 == 0) hwy::Prefetch(from + 32 * row_bytes);
      if (whole) {
        v[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from));
      } else if (r >= rows) {
        v[r] = _mm256_setzero_si256();
      } else if (available == 32) {
        v[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from));
      } else {
        alignas(32) uint8_t part[32] = {0};
        std::memcpy(part, from, available);
        v[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(part));
      }
    }
#pragma GCC unroll 4
    for (int round = 0; round < 4; ++round) {
      __m256i next[16];
#pragma GCC unroll 8
      for (size_t i = 0; i < 8; ++i) {
        next[2 * i] = _mm256_unpacklo_epi8(v[i], v[i + 8]);
        next[2 * i + 1] = _mm256_unpackhi_epi8(v[i], v[i + 8]);
      }
#pragma GCC unroll 16
      for (size_t i = 0; i < 16; ++i) v[i] = next[i];
    }
#pragma GCC unroll 16
    for (size_t c = 0; c < 16; ++c) {
      __m256i* to = reinterpret_cast<__m256i*>(tile + (k * 16 + c) * 32);
      if constexpr (kStream)
        _mm256_stream_si256(to, v[c]);
      else
        _mm256_store_si256(to, v[c]);
    }
  }
}

// plus[r] = Σ_{bit set in tile row r} q for r < 16, from the token's tables. Per step: the two
// nibbles of 16 rows' bytes in two byte columns look up their 4-column sums (low and high bytes),
// the low and the high nibble's are interleaved so that vpmaddubsw adds each row's pair, and the
// 16-bit results accumulate: lane L of element e is row e % 8 (then 8 + e % 8 in the second
// vector), for byte column 16L + c of the chunk. Every kStepsPerFlush steps the two lanes' 16-bit
// sums are widened and added into 32-bit ones per row, in registers (summing them through memory
// as 64-bit scalars cost a quarter of the loop's time): each flush adds at most 2·64·510 to a
// row, so they hold any I below 2^24 (check_sign_args allows 2^21). With a prefetcher, each step
// prefetches a line.
void LutPlusRows(const uint8_t* HWY_RESTRICT tile, const uint8_t* HWY_RESTRICT table, size_t chunks,
                 int64_t* HWY_RESTRICT plus, LinePrefetcher* prefetcher = nullptr) {
  const __m256i nibble = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi8(1);
  // 32-bit sums of rows 0–7 and 8–15, of the low and the high bytes.
  __m256i low_rows0 = _mm256_setzero_si256(), low_rows8 = low_rows0, high_rows0 = low_rows0,
          high_rows8 = low_rows0;
  const auto add_lanes = [](__m256i sums16) {  // the two lanes' 8 rows, sign-extended and added
    return _mm256_add_epi32(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(sums16)),
                            _mm256_cvtepi16_epi32(_mm256_extracti128_si256(sums16, 1)));
  };
  const size_t steps = chunks * 16;
  for (size_t first = 0; first < steps; first += kStepsPerFlush) {
    __m256i low0 = _mm256_setzero_si256(), low1 = low0, high0 = low0, high1 = low0;
    const size_t end = std::min(steps, first + kStepsPerFlush);
    for (size_t s = first; s < end; ++s) {
      if (prefetcher) prefetcher->One();
      const __m256i index = _mm256_load_si256(reinterpret_cast<const __m256i*>(tile + 32 * s));
      const __m256i low_nibbles = _mm256_and_si256(index, nibble);
      const __m256i high_nibbles = _mm256_and_si256(_mm256_srli_epi16(index, 4), nibble);
      const __m256i* tables = reinterpret_cast<const __m256i*>(table + 128 * s);
      const __m256i low_a = _mm256_shuffle_epi8(_mm256_load_si256(tables + 0), low_nibbles);
      const __m256i low_b = _mm256_shuffle_epi8(_mm256_load_si256(tables + 1), high_nibbles);
      const __m256i high_a = _mm256_shuffle_epi8(_mm256_load_si256(tables + 2), low_nibbles);
      const __m256i high_b = _mm256_shuffle_epi8(_mm256_load_si256(tables + 3), high_nibbles);
      // Low bytes are unsigned (first operand of vpmaddubsw), high bytes signed (second).
      low0 = _mm256_add_epi16(low0, _mm256_maddubs_epi16(_mm256_unpacklo_epi8(low_a, low_b), ones));
      low1 = _mm256_add_epi16(low1, _mm256_maddubs_epi16(_mm256_unpackhi_epi8(low_a, low_b), ones));
      high0 =
          _mm256_add_epi16(high0, _mm256_maddubs_epi16(ones, _mm256_unpacklo_epi8(high_a, high_b)));
      high1 =
          _mm256_add_epi16(high1, _mm256_maddubs_epi16(ones, _mm256_unpackhi_epi8(high_a, high_b)));
    }
    // A low sum is at most 64·510 < 2^15, so sign extension keeps it.
    low_rows0 = _mm256_add_epi32(low_rows0, add_lanes(low0));
    low_rows8 = _mm256_add_epi32(low_rows8, add_lanes(low1));
    high_rows0 = _mm256_add_epi32(high_rows0, add_lanes(high0));
    high_rows8 = _mm256_add_epi32(high_rows8, add_lanes(high1));
  }
  alignas(32) int32_t sums[4][8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(sums[0]), low_rows0);
  _mm256_store_si256(reinterpret_cast<__m256i*>(sums[1]), low_rows8);
  _mm256_store_si256(reinterpret_cast<__m256i*>(sums[2]), high_rows0);
  _mm256_store_si256(reinterpret_cast<__m256i*>(sums[3]), high_rows8);
  for (size_t r = 0; r < 8; ++r) {
    plus[r] = int64_t(sums[0][r]) + 256 * int64_t(sums[2][r]);
    plus[8 + r] = int64_t(sums[1][r]) + 256 * int64_t(sums[3][r]);
  }
}

}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();
#endif  // BD_SIGN_LUT

#endif  // BD_KERNELS_SIGN_LUT_INL_H_ toggle
