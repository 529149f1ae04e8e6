// A 16 × 16 transpose of 32-bit lanes in AVX-512 registers (x86 only), for the kernels that turn
// a block of rows into columns: matmul_amx (x's BF16 pairs into B tiles) and the 512-bit sign
// lookups (16 sign rows' 4-byte groups into one register per group).
#pragma once

#include <immintrin.h>

namespace bd {

// GCC 12 takes the undefined inputs of many AVX-512 intrinsics for uninitialized variables
// (GCC bug 105593, fixed in 13).
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// rows[p] lane t = rows[t] lane p: pairs within 128-bit lanes, then quadruples, then the 128-bit
// lanes themselves. Always inlined, so that the rows stay in registers (a call spills all 16).
inline __attribute__((always_inline, target("avx512f"))) void transpose_16x16(__m512i rows[16]) {
  __m512i pairs[16], quads[16];
  for (int i = 0; i < 8; ++i) {
    pairs[2 * i] = _mm512_unpacklo_epi32(rows[2 * i], rows[2 * i + 1]);
    pairs[2 * i + 1] = _mm512_unpackhi_epi32(rows[2 * i], rows[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // quads[4i + j], 128-bit lane L: column 4L + j of rows 4i..4i+3
    quads[4 * i] = _mm512_unpacklo_epi64(pairs[4 * i], pairs[4 * i + 2]);
    quads[4 * i + 1] = _mm512_unpackhi_epi64(pairs[4 * i], pairs[4 * i + 2]);
    quads[4 * i + 2] = _mm512_unpacklo_epi64(pairs[4 * i + 1], pairs[4 * i + 3]);
    quads[4 * i + 3] = _mm512_unpackhi_epi64(pairs[4 * i + 1], pairs[4 * i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512i rows_0_7_lanes_01 = _mm512_shuffle_i32x4(quads[j], quads[4 + j], 0x44);
    const __m512i rows_0_7_lanes_23 = _mm512_shuffle_i32x4(quads[j], quads[4 + j], 0xEE);
    const __m512i rows_8_15_lanes_01 = _mm512_shuffle_i32x4(quads[8 + j], quads[12 + j], 0x44);
    const __m512i rows_8_15_lanes_23 = _mm512_shuffle_i32x4(quads[8 + j], quads[12 + j], 0xEE);
    rows[j] = _mm512_shuffle_i32x4(rows_0_7_lanes_01, rows_8_15_lanes_01, 0x88);
    rows[4 + j] = _mm512_shuffle_i32x4(rows_0_7_lanes_01, rows_8_15_lanes_01, 0xDD);
    rows[8 + j] = _mm512_shuffle_i32x4(rows_0_7_lanes_23, rows_8_15_lanes_23, 0x88);
    rows[12 + j] = _mm512_shuffle_i32x4(rows_0_7_lanes_23, rows_8_15_lanes_23, 0xDD);
  }
}

#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace bd
