// Packed-sign products by table lookup, per SIMD target (include after hwy/highway.h inside a
// foreach_target translation unit): defines BD_SIGN_LUT to 1 on the targets that have it, to 0
// elsewhere. Two kernels with one interface (tiles of sign rows transposed once, a token's tables
// of 4-column sums, LutPlusRows): 256-bit vpshufb on AVX2 (and on AVX-512 without VBMI and VNNI,
// Highway's AVX3 target, e.g. Skylake-X and Cascade Lake, which runs the same code), 512-bit
// vpermb with vpdpbusd on AVX3_DL (VBMI and VNNI: Ice Lake, Sapphire Rapids, Zen 4 and later).
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
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
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

// The 16 sums of each nibble's 4 columns of byte column `column` of q[I] (zero past I), as 16-bit
// lanes: lane n of sums[0] sums the q of columns 8·column + j whose bit j of n is set (j < 4), of
// sums[1] columns 8·column + 4 + j. |q| ≤ 8191 keeps every sum in 16 bits.
HWY_INLINE void NibbleSums(const int16_t* HWY_RESTRICT q, size_t I, size_t column,
                           __m256i sums[2]) {
  const __m256i lane_index =
      _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int16_t value[8] = {0};  // q of the byte column's 8 columns
  for (size_t j = 0; j < 8 && 8 * column + j < I; ++j) value[j] = q[8 * column + j];
  for (int half = 0; half < 2; ++half) {
    sums[half] = _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j) {
      const __m256i bit = _mm256_set1_epi16(int16_t(1 << j));
      const __m256i has_bit = _mm256_cmpeq_epi16(_mm256_and_si256(lane_index, bit), bit);
      sums[half] = _mm256_add_epi16(
          sums[half], _mm256_and_si256(has_bit, _mm256_set1_epi16(value[4 * half + j])));
    }
  }
}

}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();
#endif  // BD_SIGN_LUT

#if BD_SIGN_LUT && HWY_TARGET == HWY_AVX3_DL
#include "kernels/transpose_16x16.h"
HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {
// GCC 12 takes the undefined inputs of many AVX-512 intrinsics for uninitialized variables
// (GCC bug 105593, fixed in 13).
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// 512-bit lookups. vpermb looks up 64 bytes at once in a 64-byte table, so one table register
// holds the 16 sums of 4 groups of columns, and each byte of the index picks its group by bits
// 4–5. A tile keeps, per chunk of 32 columns (4 byte columns), the 4 bytes of each of 16 rows
// together, byte 4r + g = row r's byte column g: the low nibbles, with g·16 added, index the
// low-nibble groups' tables, and the high nibbles the high ones'. The low bytes of the looked-up
// sums (unsigned) and their high bytes (signed) then go through vpdpbusd against ones, which adds
// each row's 4 bytes into its 32-bit lane: per 512 signs of 16 rows, 3 index operations, 4
// lookups and 4 multiply-adds, where the sign-times-byte multiply-adds took 32 (5632 × 2048,
// 16 users' signs packed ahead: 1.32–1.38 ms against 1.71–1.74, docs/benchmarks.md, session 16).
//
// Layout, per tile of 32 rows and chunk k of 32 columns: 128 bytes, rows 0–15 then rows 16–31,
// each 16 rows' bytes 4k .. 4k + 3 in row order. A token's tables per chunk: 256 bytes, four
// 64-byte vectors, byte 16g + n of: the low bytes of the low nibbles' sums (NibbleSums) of byte
// column 4k + g, the low bytes of the high nibbles' sums, then the high bytes of both. Two halves
// of 16 rows per call share each chunk's tables and the loop around them (one tile of 16 rows
// per call ran 1.6× slower in a throwaway probe).
constexpr size_t kTileRows = 32;
constexpr size_t kTileChunkBytes = 128;
constexpr size_t kTableChunkBytes = 256;
// The lookups of a tile read 2 of its lines per chunk: as many lines of what the caller streams
// next are prefetched with them.
constexpr int kPrefetchLinesPerStep = 2;

HWY_INLINE size_t LutChunks(size_t I) {
  return (I + 31) / 32;
}

// A token's tables (LutChunks(I) · kTableChunkBytes bytes) from its q[I].
void BuildLutTables(const int16_t* HWY_RESTRICT q, size_t I, uint8_t* HWY_RESTRICT table) {
  const size_t byte_columns = 4 * LutChunks(I);
  for (size_t column = 0; column < byte_columns; ++column) {
    __m256i sums[2];
    NibbleSums(q, I, column, sums);
    uint8_t* vectors = table + column / 4 * kTableChunkBytes + 16 * (column % 4);
    for (int half = 0; half < 2; ++half) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(vectors + 64 * half),
                       _mm256_cvtepi16_epi8(sums[half]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(vectors + 128 + 64 * half),
                       _mm256_cvtepi16_epi8(_mm256_srai_epi16(sums[half], 8)));
    }
  }
}

// tile (LutChunks(I) · kTileChunkBytes bytes, 64-byte aligned) from `rows` ≤ 32 sign rows; the
// missing rows, and the bytes past a row's end, are zero (no bit set). Per 64 bytes of 16 rows,
// a 16 × 16 transpose of 4-byte lanes gives 16 chunks' vectors. Masked loads read no byte past a
// row's end (a row may end a mapped file). kStream: written around the caches (TransposeTile of
// the AVX2 kernel says why).
template <bool kStream = false>
void TransposeTile(const uint8_t* HWY_RESTRICT bits, size_t row_bytes, size_t rows,
                   uint8_t* HWY_RESTRICT tile, LinePrefetcher* prefetcher = nullptr) {
  const size_t chunks = (row_bytes + 3) / 4;
  for (size_t group = 0; group * 16 < chunks; ++group) {
    const size_t offset = 64 * group, available = std::min<size_t>(64, row_bytes - offset);
    const __mmask64 present = available == 64 ? ~__mmask64{0} : (__mmask64{1} << available) - 1;
    const size_t group_chunks = std::min<size_t>(16, chunks - 16 * group);
    for (size_t half = 0; half < 2; ++half) {
      if (prefetcher)
        for (int line = 0; line < 4; ++line) prefetcher->One();
      __m512i v[16];
      for (size_t r = 0; r < 16; ++r) {
        const size_t row = 16 * half + r;
        const uint8_t* from = bits + row * row_bytes + offset;
        if (row >= rows) {
          v[r] = _mm512_setzero_si512();
          continue;
        }
        hwy::Prefetch(from + kTileRows * row_bytes);  // the next tile's line
        v[r] = _mm512_maskz_loadu_epi8(present, from);
      }
      transpose_16x16(v);
      for (size_t c = 0; c < group_chunks; ++c) {
        __m512i* to =
            reinterpret_cast<__m512i*>(tile + (16 * group + c) * kTileChunkBytes + 64 * half);
        if constexpr (kStream)
          _mm512_stream_si512(to, v[c]);
        else
          _mm512_store_si512(to, v[c]);
      }
    }
  }
}

// plus[r] = Σ_{bit set in tile row r} q for r < 32, from the token's tables. Each 32-bit lane
// adds at most 2·4·255 per chunk: no overflow below 2^21 columns. With a prefetcher, each chunk
// prefetches kPrefetchLinesPerStep lines. A function of its own with VNNI added to the target's
// features (Highway 1.0's AVX3_DL leaves it out).
__attribute__((target(HWY_TARGET_STR ",avx512vnni"))) void LutPlusRows(
    const uint8_t* HWY_RESTRICT tile, const uint8_t* HWY_RESTRICT table, size_t chunks,
    int64_t* HWY_RESTRICT plus, LinePrefetcher* prefetcher = nullptr) {
  const __m512i nibble = _mm512_set1_epi8(0x0F), ones = _mm512_set1_epi8(1);
  const __m512i group = _mm512_set1_epi32(0x30201000);  // byte 4r + g: g·16
  constexpr int kOr = 0xEA;                             // vpternlogd: (a & b) | c
  // Per half and nibble its own sums, so that no two vpdpbusd of a chunk wait on each other.
  __m512i low[2][2], high[2][2];
#pragma GCC unroll 2
  for (int half = 0; half < 2; ++half)
#pragma GCC unroll 2
    for (int n = 0; n < 2; ++n) low[half][n] = high[half][n] = _mm512_setzero_si512();
  for (size_t k = 0; k < chunks; ++k) {
    if (prefetcher)
      for (int line = 0; line < kPrefetchLinesPerStep; ++line) prefetcher->One();
    const __m512i* tables = reinterpret_cast<const __m512i*>(table + k * kTableChunkBytes);
    const __m512i low_a = _mm512_load_si512(tables), low_b = _mm512_load_si512(tables + 1);
    const __m512i high_a = _mm512_load_si512(tables + 2), high_b = _mm512_load_si512(tables + 3);
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {  // unrolled, so that the sums stay in registers
      const __m512i bytes = _mm512_load_si512(tile + k * kTileChunkBytes + 64 * half);
      const __m512i index_a = _mm512_ternarylogic_epi32(bytes, nibble, group, kOr);
      const __m512i index_b =
          _mm512_ternarylogic_epi32(_mm512_srli_epi16(bytes, 4), nibble, group, kOr);
      // Low bytes unsigned (first operand of vpdpbusd), high bytes signed (second).
      __m512i* l = low[half];
      __m512i* h = high[half];
      l[0] = _mm512_dpbusd_epi32(l[0], _mm512_permutexvar_epi8(index_a, low_a), ones);
      l[1] = _mm512_dpbusd_epi32(l[1], _mm512_permutexvar_epi8(index_b, low_b), ones);
      h[0] = _mm512_dpbusd_epi32(h[0], ones, _mm512_permutexvar_epi8(index_a, high_a));
      h[1] = _mm512_dpbusd_epi32(h[1], ones, _mm512_permutexvar_epi8(index_b, high_b));
    }
  }
  for (int half = 0; half < 2; ++half) {
    alignas(64) int32_t low_sums[16], high_sums[16];
    _mm512_store_si512(low_sums, _mm512_add_epi32(low[half][0], low[half][1]));
    _mm512_store_si512(high_sums, _mm512_add_epi32(high[half][0], high[half][1]));
    for (size_t r = 0; r < 16; ++r)
      plus[16 * half + r] = int64_t(low_sums[r]) + 256 * int64_t(high_sums[r]);
  }
}

#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#elif BD_SIGN_LUT
HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {

// Table lookups (AVX2; AVX-512 without VBMI and VNNI runs the same code). Σ_{bit set} q over a
// group of 4 columns takes one of 16 values, so each token's q becomes, per group, a table of those
// 16 sums (16-bit: |q| ≤ 8191 keeps a sum of 4 in range), split into low and high bytes; a vpshufb
// looks up 32 of them at once, indexed by nibbles of sign bits: 128 signs per instruction, against
// 16 for a masked 16-bit multiply-add. The 16 lookups of a 128-bit lane share one table (one group
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
// Each step reads one 32-byte half-line of the tile: one line of what the caller streams next
// is prefetched with it.
constexpr int kPrefetchLinesPerStep = 1;

HWY_INLINE size_t LutChunks(size_t I) {
  return (I + 255) / 256;
}

// A token's tables (LutChunks(I) · kTableChunkBytes bytes) from its q[I] (zero past I). Per byte
// column, lane n of a 16-bit vector sums the q of its 4 columns whose bit is set in n (both
// nibbles' groups at once); the low and the high bytes are then packed apart.
void BuildLutTables(const int16_t* HWY_RESTRICT q, size_t I, uint8_t* HWY_RESTRICT table) {
  const __m256i low_byte = _mm256_set1_epi16(0xFF);
  const size_t byte_columns = 32 * LutChunks(I);
  for (size_t column = 0; column < byte_columns; ++column) {
    __m256i sums[2];  // the low nibble's 4 columns, then the high nibble's
    NibbleSums(q, I, column, sums);
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
      if (prefetcher)
        for (int line = 0; line < kPrefetchLinesPerStep; ++line) prefetcher->One();
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
