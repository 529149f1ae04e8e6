// out[T, O] (+)= in[T, I] · W[O, I]^T for BF16 W on AMX tiles.
//
// One tile instruction (TDPBF16PS) computes C[16, 16] += A[16, 32] · B[32, 16] from BF16 pairs
// into F32 sums: 8,192 multiply-adds, where AVX-512 does 16. Here
//   A = 16 rows of W × 32 columns, loaded straight from the matrix (row stride 2·I bytes): W is
//       never repacked, so the path needs no copy of the model;
//   B = the same 32 columns of x for 16 tokens, in the pair layout the unit reads
//       (B[p][t] = x[t, k + 2p], x[t, k + 2p + 1]), packed once per call;
//   C = the sums of 16 rows × 16 tokens, transposed into out[token, row] on the way out.
// x is F32: it is split into three BF16 terms, hi = bf16(x), mid = bf16(x − hi), lo =
// bf16(x − hi − mid), which together hold its 24-bit significand; W's BF16 values times each term
// are exact in F32, so the products are as accurate as F32 ones at 3 tile instructions per A.
// (An infinite or NaN x makes its token's row NaN: inf − inf in the split.)
// At 16 tokens the product still runs at the pace of reading W (62% of the measured bandwidth on
// 5632 × 2048, twice the AVX-512 tiles' rate: docs/benchmarks.md, "AMX for batched decode").
#include "kernels/matmul_amx.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include <omp.h>

#include "hwy/aligned_allocator.h"
#include "kernels/parallel.h"

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kernels/transpose_16x16.h"
#define BD_HAVE_AMX 1
#else
#define BD_HAVE_AMX 0
#endif

namespace bd {

namespace {

std::atomic<bool> g_amx_enabled{true};

#if BD_HAVE_AMX

// GCC 12 takes the undefined inputs of many AVX-512 intrinsics for uninitialized variables
// (GCC bug 105593, fixed in 13).
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

constexpr size_t kTileRows = 16;                            // rows of W (and tokens) per tile
constexpr size_t kTileColumns = 32;                         // BF16 columns of W per tile (64 bytes)
constexpr size_t kTileElements = kTileRows * kTileColumns;  // BF16 values in a 1 KiB tile
constexpr size_t kTerms = 3;                                // hi, mid, lo
constexpr size_t kCTiles = 4;                               // tiles 0–3 hold sums
constexpr size_t kPassBytes = size_t(5) << 18;              // 1.25 MiB of packed x per pass

// Linux's request for the tile registers' state (arch/x86/include/uapi/asm/prctl.h): without it
// the first tile instruction kills the process.
constexpr int kArchRequestXcompPermission = 0x1023;
constexpr int kXfeatureTileData = 18;

bool detect_amx() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool tile = edx & (1u << 24), tile_bf16 = edx & (1u << 22);
  if (!tile || !tile_bf16) return false;
  // Packing x uses AVX-512 (every AMX CPU has it; the check also covers an OS that left it off).
  if (!__builtin_cpu_supports("avx512f")) return false;
  return syscall(SYS_arch_prctl, kArchRequestXcompPermission, kXfeatureTileData) == 0;
}

// The tile configuration (palette 1): 16 rows each; A (tile 4) 64 bytes wide, the sums C (tiles
// 0–3) and x's terms B (tiles 5–7) 4 bytes per token of a group: with fewer than 16 tokens the
// unit neither reads nor computes the missing ones.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

__attribute__((target("amx-tile"))) void configure_tiles(size_t group_tokens) {
  TileConfig config;
  for (int tile = 0; tile < 8; ++tile) {
    config.bytes_per_row[tile] = uint16_t(tile == 4 ? 64 : 4 * group_tokens);
    config.rows[tile] = kTileRows;
  }
  // GCC 12's _tile_loadconfig tells the compiler it reads 8 bytes, which then drops the stores
  // to the rest: a memory barrier keeps them.
  asm volatile("" : : "r"(&config) : "memory");
  _tile_loadconfig(&config);
}

__attribute__((target("amx-tile"))) void release_tiles() {
  _tile_release();
}

// Packed x: per group of 16 tokens, per term, per block of 32 columns, one 1 KiB B tile.
size_t packed_index(size_t group, size_t term, size_t block, size_t blocks) {
  return ((group * kTerms + term) * blocks + block) * kTileElements;
}

// 32-bit lanes as GCC vectors: plain operators (GCC 12 warns about the undefined inputs of some
// AVX-512 shift intrinsics).
typedef uint32_t U32x16 __attribute__((vector_size(64)));
typedef float F32x16 __attribute__((vector_size(64)));

// The high halves of x rounded to BF16 (nearest, ties to even), as F32 bit patterns.
__attribute__((target("avx512f"))) U32x16 round_to_bf16(F32x16 x) {
  const U32x16 bits = (U32x16)x;
  return (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
}

// Columns [32·block, 32·block + 32) of the tokens of `group` (those below T; x rows I apart)
// as three BF16 terms into their B tiles. A token's 32 values become 16 pairs, pair p = the
// 32-bit lane p (column 2p in the low half, 2p + 1 in the high); the tile wants pair p of every
// token in its row p, hence the transpose.
__attribute__((target("avx512f"))) void pack_block(const float* x, size_t I, size_t T, size_t group,
                                                   size_t block, size_t blocks, uint16_t* packed) {
  const __m512i even_columns =
      _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd_columns =
      _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  __m512i pairs[kTerms][kTileRows];
  for (size_t t = 0; t < kTileRows; ++t) {
    const size_t token = group * kTileRows + t;
    if (token >= T) {  // padding: never stored to out
      for (size_t term = 0; term < kTerms; ++term) pairs[term][t] = _mm512_setzero_si512();
      continue;
    }
    const float* row = x + token * I + block * kTileColumns;
    const __m512 low = _mm512_loadu_ps(row), high = _mm512_loadu_ps(row + 16);
    F32x16 even = (F32x16)_mm512_permutex2var_ps(low, even_columns, high);
    F32x16 odd = (F32x16)_mm512_permutex2var_ps(low, odd_columns, high);
    for (size_t term = 0; term < kTerms; ++term) {
      const U32x16 even_rounded = round_to_bf16(even), odd_rounded = round_to_bf16(odd);
      pairs[term][t] = (__m512i)((even_rounded >> 16) | odd_rounded);
      even -= (F32x16)even_rounded;  // exact: the rest of the significand
      odd -= (F32x16)odd_rounded;
    }
  }
  for (size_t term = 0; term < kTerms; ++term) {
    transpose_16x16(pairs[term]);
    uint16_t* tile = packed + packed_index(group, term, block, blocks);
    for (size_t p = 0; p < kTileRows; ++p) _mm512_store_si512(tile + p * 32, pairs[term][p]);
  }
}

// The three terms of one B tile times A into sum tile C: same order for every kernel below, so
// that a token's sums do not depend on which kernel the batch size chose.
#define BD_AMX_TERMS(C)      \
  do {                       \
    _tile_dpbf16ps(C, 4, 5); \
    _tile_dpbf16ps(C, 4, 6); \
    _tile_dpbf16ps(C, 4, 7); \
  } while (0)

#define BD_AMX_LOAD_B(x_block, blocks)                          \
  do {                                                          \
    _tile_loadd(5, (x_block), 64);                              \
    _tile_loadd(6, (x_block) + (blocks)*kTileElements, 64);     \
    _tile_loadd(7, (x_block) + 2 * (blocks)*kTileElements, 64); \
  } while (0)

// sums[j][r][t] = Σ_i W[16j + r, i] · x[t, i] for row blocks j < row_blocks (≤ 2) of the
// 16-row blocks starting at w (row stride `stride` bytes) and the 16 tokens of one group.
__attribute__((target("amx-tile,amx-bf16"))) void row_blocks_times_group(
    const uint16_t* w, size_t stride, size_t row_blocks, const uint16_t* x_group, size_t blocks,
    float* sums) {
  _tile_zero(0);
  _tile_zero(1);
  const size_t block_rows_bytes = kTileRows * stride;
  for (size_t block = 0; block < blocks; ++block) {
    BD_AMX_LOAD_B(x_group + block * kTileElements, blocks);
    const char* a = reinterpret_cast<const char*>(w + block * kTileColumns);
    _tile_loadd(4, a, stride);
    BD_AMX_TERMS(0);
    if (row_blocks > 1) {
      _tile_loadd(4, a + block_rows_bytes, stride);
      BD_AMX_TERMS(1);
    }
  }
  _tile_stored(0, sums, 64);
  _tile_stored(1, sums + 256, 64);
}

// sums[g][r][t] = Σ_i W[r, i] · x[16g + t, i] for one 16-row block of W and token groups
// g < groups (≤ 4) from x_groups: each A tile is loaded once for all the groups.
__attribute__((target("amx-tile,amx-bf16"))) void row_block_times_groups(
    const uint16_t* w, size_t stride, const uint16_t* x_groups, size_t groups, size_t blocks,
    float* sums) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const size_t group_elements = kTerms * blocks * kTileElements;
  for (size_t block = 0; block < blocks; ++block) {
    _tile_loadd(4, w + block * kTileColumns, stride);
    const uint16_t* x_block = x_groups + block * kTileElements;
    BD_AMX_LOAD_B(x_block, blocks);
    BD_AMX_TERMS(0);
    if (groups > 1) {
      BD_AMX_LOAD_B(x_block + group_elements, blocks);
      BD_AMX_TERMS(1);
    }
    if (groups > 2) {
      BD_AMX_LOAD_B(x_block + 2 * group_elements, blocks);
      BD_AMX_TERMS(2);
    }
    if (groups > 3) {
      BD_AMX_LOAD_B(x_block + 3 * group_elements, blocks);
      BD_AMX_TERMS(3);
    }
  }
  _tile_stored(0, sums, 64);
  _tile_stored(1, sums + 256, 64);
  _tile_stored(2, sums + 512, 64);
  _tile_stored(3, sums + 768, 64);
}

#undef BD_AMX_TERMS
#undef BD_AMX_LOAD_B

// out[t, row0 + r] (+)= tile[r][t] for r < rows, t < tokens: a 16 × 16 block of C transposed.
void store_tile(const float* tile, size_t rows, size_t tokens, size_t row0, size_t O, float* out,
                bool accumulate) {
  for (size_t t = 0; t < tokens; ++t) {
    float* o = out + t * O + row0;
    for (size_t r = 0; r < rows; ++r) {
      const float sum = tile[r * kTileRows + t];
      o[r] = accumulate ? o[r] + sum : sum;
    }
  }
}

// A thread's packed x, kept between calls (a decode step makes hundreds of calls; allocating
// half a megabyte each time would fault its pages in again).
struct AmxScratch {
  hwy::AlignedFreeUniquePtr<uint16_t[]> packed_x;
  size_t packed_capacity = 0;

  uint16_t* packed(size_t elements) {
    if (elements > packed_capacity) {
      packed_x = hwy::AllocateAligned<uint16_t>(elements);
      packed_capacity = elements;
    }
    return packed_x.get();
  }
};

void multiply(float* out, const float* in, const uint16_t* w, size_t T, size_t O, size_t I,
              bool accumulate) {
  const size_t blocks = I / kTileColumns;
  const size_t groups = (T + kTileRows - 1) / kTileRows;
  const size_t full_blocks = O / kTileRows, tail = O % kTileRows;
  thread_local std::vector<uint16_t> tail_buffer;  // W's last O % 16 rows and zero rows to 16
  if (tail) {
    tail_buffer.assign(kTileRows * I, 0);
    std::memcpy(tail_buffer.data(), w + full_blocks * kTileRows * I, tail * I * 2);
  }
  const uint16_t* tail_rows = tail_buffer.data();  // (inside the region it would be per thread)
  // Units of work: one token group → 2 row blocks per unit (x's tiles shared by 32 rows; with 4,
  // 64 rows read side by side, 2048 × 5632 took 1.8 ms instead of 1.1 at 4 and 16 tokens); several
  // → one row block per unit, all groups (W's tile shared by up to 64 tokens).
  const size_t blocks_per_unit = groups == 1 ? 2 : 1;
  const size_t row_units = (full_blocks + blocks_per_unit - 1) / blocks_per_unit + (tail ? 1 : 0);
  // One group: the tiles are configured T tokens wide; several: 16, the last group padded.
  const size_t group_tokens = groups == 1 ? T : kTileRows;

  const size_t stride = I * 2;
#pragma omp parallel if (O * I >= size_t(kMinParallelElements))
  {
    // Every thread packs all of x for itself (a few microseconds): cheaper than making the
    // threads wait for each other, which costs tens on shared cores.
    thread_local AmxScratch scratch;
    uint16_t* packed = scratch.packed(groups * kTerms * blocks * kTileElements);
    for (size_t group = 0; group < groups; ++group) {
      for (size_t block = 0; block < blocks; ++block)
        pack_block(in, I, T, group, block, blocks, packed);
    }
    configure_tiles(group_tokens);
    alignas(64) float sums[kCTiles * kTileRows * kTileRows];
#pragma omp for schedule(dynamic, 1)
    for (int64_t unit = 0; unit < int64_t(row_units); ++unit) {
      const size_t first_block = size_t(unit) * blocks_per_unit;
      const bool is_tail = first_block >= full_blocks;
      const uint16_t* rows = is_tail ? tail_rows : w + first_block * kTileRows * I;
      const size_t row0 = (is_tail ? full_blocks : first_block) * kTileRows;
      if (groups == 1) {
        const size_t row_blocks =
            is_tail ? 1 : std::min(blocks_per_unit, full_blocks - first_block);
        row_blocks_times_group(rows, stride, row_blocks, packed, blocks, sums);
        for (size_t j = 0; j < row_blocks; ++j) {
          const size_t row_count = is_tail ? tail : kTileRows;
          store_tile(sums + j * 256, row_count, T, row0 + j * kTileRows, O, out, accumulate);
        }
        continue;
      }
      const size_t row_count = is_tail ? tail : kTileRows;
      for (size_t g0 = 0; g0 < groups; g0 += kCTiles) {
        const size_t group_count = std::min(kCTiles, groups - g0);
        row_block_times_groups(rows, stride, packed + packed_index(g0, 0, 0, blocks), group_count,
                               blocks, sums);
        for (size_t g = 0; g < group_count; ++g) {
          const size_t t0 = (g0 + g) * kTileRows;
          store_tile(sums + g * 256, row_count, std::min(kTileRows, T - t0), row0, O, out + t0 * O,
                     accumulate);
        }
      }
    }
    release_tiles();
  }
}

#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // BD_HAVE_AMX

}  // namespace

bool amx_available() {
#if BD_HAVE_AMX
  static const bool available = detect_amx();
  return available;
#else
  return false;
#endif
}

void set_amx_enabled(bool enabled) {
  g_amx_enabled = enabled;
}
bool amx_enabled() {
  return g_amx_enabled;
}

bool matmul_amx(float* out, const float* in, const TensorView& weight, int64_t T, bool accumulate) {
#if BD_HAVE_AMX
  if (weight.dtype != DType::BF16 || weight.shape.size() != 2) return false;
  const int64_t O = weight.dim(0), I = weight.dim(1);
  if (T < kAmxMinTokens || O < 1 || I < 1 || I % int64_t(kTileColumns) != 0) return false;
  if (!g_amx_enabled || !amx_available()) return false;
  // Passes of whole token groups, each reading W once: within a pass W's tiles serve all its
  // tokens, and its packed x (at most kPassBytes) stays in L2. 2048 × 5632 at 256 tokens: 17.5
  // ms in passes of 64 (2.1 MB of x each), 8.9 in passes of 32 (bench/matmul_bench `amx`).
  const int64_t groups_fit = int64_t(kPassBytes / (kTerms * 2 * kTileRows * size_t(I)));
  const int64_t pass_tokens =
      std::clamp<int64_t>(groups_fit * int64_t(kTileRows), int64_t(kTileRows), kAmxPassTokens);
  for (int64_t t0 = 0; t0 < T; t0 += pass_tokens) {
    const int64_t tokens = std::min(pass_tokens, T - t0);
    multiply(out + t0 * O, in + t0 * I, static_cast<const uint16_t*>(weight.data), size_t(tokens),
             size_t(O), size_t(I), accumulate);
  }
  return true;
#else
  (void)out, (void)in, (void)weight, (void)T, (void)accumulate;
  return false;
#endif
}

}  // namespace bd
