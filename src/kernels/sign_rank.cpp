// Bit-sliced order statistics over packed sign rows (sign_rank.h). Each contribution's row is
// copied once into 64-bit words padded to whole vectors; a vector of words (512 coordinates on
// AVX-512) is then walked through all n contributions with its counters in registers.
#include "kernels/sign_rank.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/sign_rank.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/sign_bits-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bd::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DU = hn::ScalableTag<uint64_t>;
using VU = hn::Vec<DU>;
using DF = hn::ScalableTag<float>;
using DD = hn::ScalableTag<double>;

// A thread's reusable scratch words (slot 0: rows, 1: index table or survivor masks, 2: lookup
// tables and indices of MaskSums), vector aligned: the kernels run once per block, and fresh
// allocations of block size come from mmap, whose every page costs a fault on first touch.
uint64_t* Scratch(size_t slot, size_t count) {
  static thread_local hwy::AlignedFreeUniquePtr<uint64_t[]> buffers[3];
  static thread_local size_t sizes[3] = {0, 0, 0};
  if (sizes[slot] < count) {
    buffers[slot] = hwy::AllocateAligned<uint64_t>(count);
    sizes[slot] = count;
  }
  return buffers[slot].get();
}

// The contributions' rows as 64-bit words (bit j of word w: coordinate 64w + j; little-endian,
// so byte b holds bits 8b .. 8b + 7), vector aligned and padded with zeros to a whole number of
// vectors: the rows themselves when the caller laid them out so (SignRankRows::padded), else
// copies (sign_rank_padded_stride apart). The kernels walk all n rows a vector at a time.
struct Words {
  std::vector<const uint64_t*> rows;
  size_t used = 0;  // words per row the kernels walk: whole vectors
  const uint64_t* row(size_t k) const { return rows[k]; }
};

// Words [w0, w0 + N) of row k, with a prefetch of the same row 512 bytes ahead: the kernels walk
// n rows side by side, more streams than the hardware prefetcher follows.
HWY_INLINE VU LoadRow(const Words& words, size_t k, size_t w0) {
  hwy::Prefetch(words.row(k) + w0 + 64);
  return hn::Load(DU(), words.row(k) + w0);
}

Words ReadWords(const SignRankRows& rows) {
  const size_t N = hn::Lanes(DU());
  const size_t row_bytes = size_t(rows.cols + 7) / 8, words = size_t(rows.cols + 63) / 64;
  Words out;
  out.used = std::max<size_t>(N, (words + N - 1) / N * N);
  out.rows.resize(size_t(rows.n));
  if (rows.padded) {
    for (size_t k = 0; k < size_t(rows.n); ++k)
      out.rows[k] = reinterpret_cast<const uint64_t*>(rows.bits[k]);
    return out;
  }
  const size_t stride = size_t(sign_rank_padded_stride(int64_t(row_bytes))) / sizeof(uint64_t);
  uint64_t* data = Scratch(0, size_t(rows.n) * stride);
  for (size_t k = 0; k < size_t(rows.n); ++k) {
    uint64_t* copy = data + k * stride;
    std::memcpy(copy, rows.bits[k], row_bytes);
    std::memset(reinterpret_cast<uint8_t*>(copy) + row_bytes, 0,
                stride * sizeof(uint64_t) - row_bytes);
    out.rows[k] = copy;
  }
  return out;
}

// A constant c as B bit planes: plane b is all ones where bit b of c is set.
template <size_t B>
struct Constant {
  VU bits[B];
  explicit Constant(uint64_t c) {
#pragma GCC unroll 16
    for (size_t b = 0; b < B; ++b) bits[b] = hn::Set(DU(), (c >> b) & 1 ? ~uint64_t(0) : 0);
  }
};

// count += 1 in the lanes (bits) of `add`.
template <size_t B>
HWY_INLINE void Increment(VU* count, VU add) {
#pragma GCC unroll 16
  for (size_t b = 0; b < B; ++b) {
    const VU carry = hn::And(count[b], add);
    count[b] = hn::Xor(count[b], add);
    add = carry;
  }
}

// count −= 1 in the lanes of `take`; returns the lanes that went from 0 to −1 (the borrow out
// of the top plane). A counter started at c borrows out at the (c + 1)-th decrement, and not
// again while fewer than 2^B decrements follow.
template <size_t B>
HWY_INLINE VU Decrement(VU* count, VU take) {
#pragma GCC unroll 16
  for (size_t b = 0; b < B; ++b) {
    const VU borrow = hn::AndNot(count[b], take);
    count[b] = hn::Xor(count[b], take);
    take = borrow;
  }
  return take;
}

// (sum, carry) of a + b + c, bitwise.
HWY_INLINE void FullAdd(VU a, VU b, VU c, VU& sum, VU& carry) {
  const VU half = hn::Xor(a, b);
  sum = hn::Xor(half, c);
  carry = hn::Or(hn::And(a, b), hn::And(half, c));
}

// total = the number of set bits (clear bits when `clear`) in rows [0, count) at each lane of
// one vector of words, as B ≥ 4 bit planes: eight rows at a time by carry-save adders into a
// 4-bit count, then added into the total (about 6 operations a row against 2B for an increment
// per row), the rest one increment each.
template <size_t B>
HWY_INLINE void CountRows(const Words& words, size_t w0, size_t count, bool clear, VU* total) {
  const DU du;
#pragma GCC unroll 16
  for (size_t b = 0; b < B; ++b) total[b] = hn::Zero(du);
  auto row = [&](size_t i) {
    const VU x = LoadRow(words, i, w0);
    return clear ? hn::Not(x) : x;
  };
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    VU s0, c0, s1, c1, bit0, c3, t, c4;
    FullAdd(row(i), row(i + 1), row(i + 2), s0, c0);
    FullAdd(row(i + 3), row(i + 4), row(i + 5), s1, c1);
    const VU a6 = row(i + 6), a7 = row(i + 7);
    FullAdd(s0, s1, hn::Xor(a6, a7), bit0, c3);  // weight 1; c3 weight 2
    FullAdd(c0, c1, hn::And(a6, a7), t, c4);     // weight 2; c4 weight 4
    const VU c5 = hn::And(t, c3);                // weight 4
    const VU block[4] = {bit0, hn::Xor(t, c3), hn::Xor(c4, c5), hn::And(c4, c5)};
    VU carry = hn::Zero(du);
#pragma GCC unroll 16
    for (size_t b = 0; b < B; ++b) {
      VU sum;
      if (b < 4) {
        FullAdd(total[b], block[b], carry, sum, carry);
      } else {
        sum = hn::Xor(total[b], carry);
        carry = hn::And(total[b], carry);
      }
      total[b] = sum;
    }
  }
  for (; i < count; ++i) Increment<B>(total, row(i));
}

// count = c − seen, bit-sliced (seen ≤ c in every lane).
template <size_t B>
HWY_INLINE void SubtractFrom(uint64_t c, const VU* seen, VU* count) {
  const Constant<B> a(c);
  VU borrow = hn::Zero(DU());
#pragma GCC unroll 16
  for (size_t b = 0; b < B; ++b) {
    const VU differ = hn::Xor(a.bits[b], seen[b]);
    count[b] = hn::Xor(differ, borrow);
    borrow = hn::Or(hn::AndNot(a.bits[b], seen[b]), hn::AndNot(differ, borrow));
  }
}

// Where ascending ranks r (and r + 1 when `two`) of each coordinate of one vector of words lie:
// the index of the contribution holding the value, as B bit planes (index[(s · B + b) · N + u]:
// bit b of the indices of word u for rank r + s), and whether the value is negative
// (negative[s · N + u]). The rank-r value is the negative one of the contribution with r
// negatives before it, or the positive one of the contribution with n − 1 − r positives before
// it; exactly one of the two exists. Each is found by a counter started at that number and
// counted down on the values of its sign: the lane borrows out at that contribution. Rank r + 1
// is the next negative after rank r's, or the positive just before rank r's (the one with
// n − 2 − r positives before it, found by the counter, rank r's then being the next positive).
// One pass over the contributions per sign keeps a counter's planes in registers (AVX2 has 16);
// hits[(s · n + i) · N + u]: where contribution i holds rank r + s. As a lane hits once per
// rank, bit b of its index is the OR of its hits at the contributions whose bit b is set.
// No contribution before the one with c values of a sign before it can be that one, so each
// pass first counts the signs of its first c contributions (CountRows, cheaper than the
// counter's decrements) and starts its counter at c less that count.
template <size_t B>
void FindRanks(const Words& words, size_t w0, size_t n, size_t r, bool two, uint64_t* hits,
               uint64_t* index, uint64_t* negative) {
  const DU du;
  const size_t N = hn::Lanes(du);
  const VU none = hn::Zero(du);
  uint64_t* low_hits = hits;
  uint64_t* high_hits = hits + n * N;
  // Where each pass starts; neither hits before, and the hits below first_hit are never read.
  const size_t positive_start = two ? n - 2 - r : n - 1 - r;
  const size_t first_hit = std::min(r, positive_start);
  {  // the negatives: rank r's, then the next one (rank r + 1's)
    VU count[B], seen[B];
    CountRows<B>(words, w0, r, true, seen);
    SubtractFrom<B>(r, seen, count);
    for (size_t i = first_hit; i < r; ++i) {  // read by the positives' pass
      hn::Store(none, du, low_hits + i * N);
      hn::Store(none, du, high_hits + i * N);
    }
    VU after = none, found = none, low_negative = none, high_negative = none;
    for (size_t i = r; i < n; ++i) {
      const VU below = hn::Not(LoadRow(words, i, w0));
      const VU hit = Decrement<B>(count, below);
      const VU next = hn::AndNot(found, hn::And(below, after));
      found = hn::Or(found, next);
      after = hn::Or(after, hit);
      low_negative = hn::Or(low_negative, hit);
      high_negative = hn::Or(high_negative, next);
      hn::Store(hit, du, low_hits + i * N);
      hn::Store(next, du, high_hits + i * N);
    }
    hn::StoreU(low_negative, du, negative);
    hn::StoreU(high_negative, du, negative + N);
  }
  {  // the positives: rank r's (two: rank r + 1's, then the next one, rank r's)
    VU count[B], seen[B];
    CountRows<B>(words, w0, positive_start, false, seen);
    SubtractFrom<B>(positive_start, seen, count);
    VU after = none, found = none;
    uint64_t* first = two ? high_hits : low_hits;
    for (size_t i = positive_start; i < n; ++i) {
      const VU x = hn::Load(du, words.row(i) + w0);  // in L1 since the negatives' pass
      const VU hit = Decrement<B>(count, x);
      hn::Store(hn::Or(hit, hn::Load(du, first + i * N)), du, first + i * N);
      if (!two) continue;
      const VU next = hn::AndNot(found, hn::And(x, after));
      found = hn::Or(found, next);
      after = hn::Or(after, hit);
      hn::Store(hn::Or(next, hn::Load(du, low_hits + i * N)), du, low_hits + i * N);
    }
  }
  for (size_t s = 0; s < (two ? 2u : 1u); ++s)
    for (size_t b = 0; b < B; ++b) {
      VU plane = none;
      const size_t run = size_t(1) << b;  // i with bit b set: runs of 2^b every 2^(b + 1)
      for (size_t i0 = run; i0 < n; i0 += 2 * run)
        for (size_t i = std::max(i0, first_hit); i < std::min(i0 + run, n); ++i)
          plane = hn::Or(plane, hn::Load(du, hits + (s * n + i) * N));
      hn::StoreU(plane, du, index + (s * B + b) * N);
    }
}

#if HWY_TARGET == HWY_AVX3_DL
// Whether this CPU has GFNI (every CPU with the rest of AVX3_DL has it, but Highway 1.0 does not
// require it for the target).
bool HasGfni() {
  static const bool has = __builtin_cpu_supports("gfni");
  return has;
}

// PlaneIntegers for B ≤ 8 planes by GFNI, which transposes an 8 × 8 bit matrix per 64-bit lane
// in one affine multiply by the identity: with qword k holding byte k of plane b as its byte
// 7 − b, byte c of the product holds bit 8k + c of every plane, i.e. lane 8k + c's integer (a
// gather, a byte permute and the multiply, instead of three operations per plane). A function of
// its own with GFNI added to the target's features (clang takes a function's target attribute
// instead of the enclosing pragma's, so the list is repeated).
__attribute__((target(HWY_TARGET_STR ",gfni"))) void PlaneBytesGfni(const uint64_t* planes,
                                                                    size_t B, size_t N, size_t u,
                                                                    uint8_t* which) {
  static constexpr auto kGroup = [] {
    std::array<uint8_t, 64> order{};
    for (int k = 0; k < 8; ++k)
      for (int b = 0; b < 8; ++b) order[size_t(8 * k + 7 - b)] = uint8_t(8 * b + k);
    return order;
  }();
  const __m512i offsets =
      _mm512_mullo_epi64(_mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi64(int64_t(N)));
  const __m512i rows = _mm512_mask_i64gather_epi64(_mm512_setzero_si512(), __mmask8((1u << B) - 1),
                                                   offsets, planes + u, 8);
  const __m512i grouped = _mm512_permutexvar_epi8(_mm512_loadu_si512(kGroup.data()), rows);
  _mm512_storeu_si512(
      which, _mm512_gf2p8affine_epi64_epi8(_mm512_set1_epi64(0x8040201008040201), grouped, 0));
}
#endif

// Bit-sliced integers to one integer per lane, for the 64 lanes of word u: which[c] =
// Σ_b 2^b · (bit c of plane b), plane b at planes[b · N + u].
template <size_t B, class T>
HWY_INLINE void PlaneIntegers(const uint64_t* planes, size_t N, size_t u, T* which) {
#if HWY_TARGET == HWY_AVX3_DL
  if constexpr (B <= 8 && sizeof(T) == 1) {
    if (HasGfni()) return PlaneBytesGfni(planes, B, N, u, which);
  }
#endif
  const hn::ScalableTag<T> dt;
  for (size_t c = 0; c < 64; c += hn::Lanes(dt)) {
    auto value = hn::Zero(dt);
    for (size_t b = 0; b < B; ++b) {
      const uint8_t* plane = reinterpret_cast<const uint8_t*>(planes + b * N + u);
      value =
          hn::Or(value, hn::IfThenElseZero(LoadSignMask(dt, plane, c), hn::Set(dt, T(1u << b))));
    }
    hn::Store(value, dt, which + c);
  }
}

// The rank-(r + s) values of word u's 64 coordinates: ±γ[index], the index gathered from its
// bit planes (FindRanks' layout) one integer per coordinate.
template <size_t B, class T>
void RankValues(const uint64_t* index, const uint64_t* negative, size_t N, size_t s, size_t u,
                const float* gammas, float* out) {
  HWY_ALIGN T which[64 + hn::MaxLanes(hn::ScalableTag<T>())];
  PlaneIntegers<B, T>(index + s * B * N, N, u, which);
  const DF df;
  const hn::Rebind<int32_t, DF> di;
  const hn::Rebind<T, DF> dn;
  const uint8_t* signs = reinterpret_cast<const uint8_t*>(negative + s * N + u);
  for (size_t c = 0; c < 64; c += hn::Lanes(df)) {
    const auto gamma = hn::GatherIndex(df, gammas, hn::PromoteTo(di, hn::LoadU(dn, which + c)));
    hn::Store(hn::IfThenElse(LoadSignMask(df, signs, c), hn::Neg(gamma), gamma), df, out + c);
  }
}

template <size_t B, class T>
void MedianOf(const SignRankRows& rows, float* out) {
  const Words words = ReadWords(rows);
  const DU du;
  const size_t N = hn::Lanes(du), n = size_t(rows.n), L = hn::Lanes(DF());
  const size_t low = (n - 1) / 2;
  const bool two = n % 2 == 0;  // the mean of ranks n/2 − 1 and n/2
  uint64_t* hits = Scratch(1, 2 * n * N);
  uint64_t index[2 * B * hn::MaxLanes(DU())], negative[2 * hn::MaxLanes(DU())];
  HWY_ALIGN float values[2][64];
  const DF df;
  for (size_t w0 = 0; w0 < words.used; w0 += N) {
    FindRanks<B>(words, w0, n, low, two, hits, index, negative);
    for (size_t u = 0; u < N && 64 * (w0 + u) < size_t(rows.cols); ++u) {
      RankValues<B, T>(index, negative, N, 0, u, rows.gammas, values[0]);
      if (two) {
        // (a + b) / 2 rounded once, as float((double(a) + double(b)) / 2).
        RankValues<B, T>(index, negative, N, 1, u, rows.gammas, values[1]);
        for (size_t c = 0; c < 64; c += L)
          hn::Store(hn::Mul(hn::Add(hn::Load(df, values[0] + c), hn::Load(df, values[1] + c)),
                            hn::Set(df, 0.5f)),
                    df, values[0] + c);
      }
      const size_t j0 = 64 * (w0 + u);
      std::memcpy(out + j0, values[0], std::min<size_t>(64, size_t(rows.cols) - j0) * 4);
    }
  }
}

void SignRankMedian(const SignRankRows& rows, float* out) {
  if (rows.n < 16) return MedianOf<4, uint8_t>(rows, out);
  if (rows.n < 128) return MedianOf<7, uint8_t>(rows, out);  // a plane fewer for 100 inputs
  if (rows.n < 256) return MedianOf<8, uint8_t>(rows, out);
  MedianOf<16, uint16_t>(rows, out);
}

// count −= 1 in the lanes of `take` that have not yet borrowed (`done`); returns the lanes that
// took one without borrowing, and marks the ones that borrowed done. A counter started at c
// thus lets the first c takes through, in each lane, and then stays at −1.
template <size_t B>
HWY_INLINE VU TakeUpTo(VU* count, VU take, VU& done) {
  take = hn::AndNot(done, take);
  const VU borrow = Decrement<B>(count, take);
  done = hn::Or(done, borrow);
  return hn::AndNot(borrow, take);
}

// The values a trim of `cut` drops at the coordinates of one vector of words. Sorted ascending,
// a coordinate's values are its negatives in contribution order (the γ decrease), then its
// positives in reverse order: the cut smallest are its first cut negatives, the cut largest its
// first cut positives. Only where one sign has fewer than cut values (N < cut negatives, say)
// does the trim reach into the other: all N negatives go, and the last cut − N positives.
// So a forward scan drops the first cut of each sign, and stops as soon as every lane has seen
// more (the rest of the contributions keep all their values there); a backward scan runs only
// if some lane was left short, its counters started at what that lane still has to drop.
// Masks: forward[(2i) · N + u] where contribution i's positive value is dropped, (2i + 1) its
// negative one, for i < `forward_end`; backward likewise for i ≥ `backward_begin`, and zero
// from the start of that group of 8 masks (MaskSums' groups) up to it.
struct DroppedMasks {
  size_t forward_end = 0, backward_begin = 0;  // contributions; backward_begin = n: none
};

template <size_t B>
DroppedMasks Dropped(const Words& words, size_t w0, size_t n, size_t cut, uint64_t* forward,
                     uint64_t* backward) {
  const DU du;
  const size_t N = hn::Lanes(du);
  const VU none = hn::Zero(du), all = hn::Not(none);
  DroppedMasks out{n, n};
  VU negatives[B], positives[B];  // still to drop, per lane
  const Constant<B> start(cut);
#pragma GCC unroll 16
  for (size_t b = 0; b < B; ++b) negatives[b] = positives[b] = start.bits[b];
  VU negatives_done = none, positives_done = none;  // dropped cut and seen one more
  for (size_t i = 0; i < n; ++i) {
    const VU x = LoadRow(words, i, w0);
    hn::Store(TakeUpTo<B>(positives, x, positives_done), du, forward + 2 * i * N);
    hn::Store(TakeUpTo<B>(negatives, hn::Not(x), negatives_done), du, forward + (2 * i + 1) * N);
    if (hn::AllTrue(du, hn::Eq(hn::And(positives_done, negatives_done), all))) {
      out.forward_end = i + 1;
      return out;
    }
  }
  // Lanes left short of one sign: what they still have to drop (the counters of the lanes that
  // borrowed are all ones) is taken from the end, from the other sign.
  // Lanes with nothing left to drop are finished from the start.
  VU from_positives[B], from_negatives[B];
  VU short_negatives = none, short_positives = none;
#pragma GCC unroll 16
  for (size_t b = 0; b < B; ++b) {
    from_positives[b] = hn::AndNot(negatives_done, negatives[b]);
    from_negatives[b] = hn::AndNot(positives_done, positives[b]);
    short_negatives = hn::Or(short_negatives, from_positives[b]);
    short_positives = hn::Or(short_positives, from_negatives[b]);
  }
  VU positives_finished = hn::Not(short_negatives), negatives_finished = hn::Not(short_positives);
  size_t i = n;
  while (i > 0 && !hn::AllTrue(du, hn::Eq(hn::And(positives_finished, negatives_finished), all))) {
    --i;
    const VU x = LoadRow(words, i, w0);
    hn::Store(TakeUpTo<B>(from_positives, x, positives_finished), du, backward + 2 * i * N);
    hn::Store(TakeUpTo<B>(from_negatives, hn::Not(x), negatives_finished), du,
              backward + (2 * i + 1) * N);
  }
  out.backward_begin = i;
  for (size_t m = 2 * i / 8 * 8; m < 2 * i; ++m) hn::Store(none, du, backward + m * N);
  return out;
}

// Weighted sums of m bit masks, Σ_i w_i · (bit j of mask i), by table lookup instead of a
// masked add per mask and coordinate: the masks go in groups of 8; table[g · 256 + byte] is
// the sum of the weights of group g's masks set in `byte`, built in a fixed order
// (table[b] = table[b without its lowest bit] + the weight of that bit), so that the sums do not
// depend on the SIMD target or the thread.
struct MaskTables {
  const double* table = nullptr;    // [groups · 256] (none with masked adds)
  const double* weights = nullptr;  // [masks]
};

// With AVX-512 mask registers the masks gate the adds directly (MaskSums below): no tables.
#undef BD_MASKED_ADDS
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
#define BD_MASKED_ADDS 1
#else
#define BD_MASKED_ADDS 0
#endif

MaskTables BuildTables(const double* weights, size_t masks, double* table) {
  const size_t groups = (masks + 7) / 8;
  for (size_t g = 0; g < groups && !BD_MASKED_ADDS; ++g) {
    double* t = table + g * 256;
    t[0] = 0;
    for (unsigned b = 1; b < 256; ++b) {
      const unsigned low = unsigned(__builtin_ctz(b));
      const size_t i = 8 * g + low;
      t[b] = t[b & (b - 1)] + (i < masks ? weights[i] : 0.0);
    }
  }
  return {table, weights};
}

#if BD_MASKED_ADDS
// With AVX-512 mask registers a mask's bits gate an add of its weight directly (one vaddpd with
// {k} per 8 coordinates): a soup's mean 0.97 s against 1.69 s with the tables below on one
// Sapphire Rapids VM (docs/benchmarks.md). The operations are the tables' own: within a group the
// weights added from its last mask to its first, each group's sum then added to the total in group
// order, so every target rounds alike. A group whose masks are all zero adds +0, which leaves the
// total as it is: it is skipped.
template <class MaskAt>
void MaskSums(const MaskTables& tables, size_t first_group, size_t end, const MaskAt& mask_at,
              uint8_t* /*index*/, double* sums) {
  const DD dd;
  constexpr size_t kLanes = 8;  // AVX-512: 8 doubles, one byte of mask bits
  static_assert(hn::MaxLanes(DD()) == kLanes);
  using VD = hn::Vec<DD>;
  const size_t N = hn::Lanes(DU());
  for (size_t u = 0; u < N; ++u) {  // 64 coordinates: word u of every mask
    VD total[8], group[8];
#pragma GCC unroll 8
    for (size_t q = 0; q < 8; ++q) total[q] = hn::Zero(dd);
    for (size_t g = first_group; 8 * g < end; ++g) {
      const size_t members = std::min<size_t>(8, end - 8 * g);
      uint64_t any = 0;
      for (size_t b = 0; b < members; ++b) {
        // The masks are n rows walked side by side (more streams than the hardware prefetcher
        // follows) or a short list in L1.
        if (u == 0) hwy::Prefetch(mask_at(8 * g + b) + 64);
        any |= mask_at(8 * g + b)[u];
      }
      if (any == 0) continue;
#pragma GCC unroll 8
      for (size_t q = 0; q < 8; ++q) group[q] = hn::Zero(dd);
      for (size_t b = members; b-- > 0;) {
        const uint8_t* bits = reinterpret_cast<const uint8_t*>(mask_at(8 * g + b) + u);
        const VD weight = hn::Set(dd, tables.weights[8 * g + b]);
#pragma GCC unroll 8
        for (size_t q = 0; q < 8; ++q)
          group[q] = hn::IfThenElse(LoadSignMask(dd, bits, kLanes * q), hn::Add(group[q], weight),
                                    group[q]);
      }
#pragma GCC unroll 8
      for (size_t q = 0; q < 8; ++q) total[q] = hn::Add(total[q], group[q]);
    }
#pragma GCC unroll 8
    for (size_t q = 0; q < 8; ++q) hn::StoreU(total[q], dd, sums + 64 * u + kLanes * q);
  }
}
#else
// sums[j] = Σ_i w_i · (bit j of mask i) over masks [8 · first_group, end), for the 64 · N
// coordinates of one vector of words; mask_at(i) points at mask i's N words. Each group's masks
// are first turned into one byte per coordinate (bit b: mask 8g + b), a byte vector of
// coordinates at a time; then every coordinate adds up one table entry per group, in group order.
template <class MaskAt>
void MaskSums(const MaskTables& tables, size_t first_group, size_t end, const MaskAt& mask_at,
              uint8_t* index, double* sums) {
  const hn::ScalableTag<uint8_t> d8;
  const size_t N = hn::Lanes(DU()), L8 = hn::Lanes(d8), coordinates = 64 * N;
  const size_t groups = (end + 7) / 8;
  for (size_t g = first_group; g < groups; ++g) {
    const size_t members = std::min<size_t>(8, end - 8 * g);
    for (size_t c = 0; c < coordinates; c += L8) {
      auto byte = hn::Zero(d8);
      for (size_t b = 0; b < members; ++b) {
        const auto bit = LoadSignMask(d8, reinterpret_cast<const uint8_t*>(mask_at(8 * g + b)), c);
        byte = hn::Or(byte, hn::IfThenElseZero(bit, hn::Set(d8, uint8_t(1u << b))));
      }
      hn::Store(byte, d8, index + g * coordinates + c);
    }
  }
  // Eight coordinates at a time: eight independent chains of additions.
  for (size_t j = 0; j < coordinates; j += 8) {
    double sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t g = first_group; g < groups; ++g) {
      const double* table = tables.table + g * 256;
      const uint8_t* bytes = index + g * coordinates + j;
      for (size_t q = 0; q < 8; ++q) sum[q] += table[bytes[q]];
    }
    for (size_t q = 0; q < 8; ++q) sums[j + q] = sum[q];
  }
}
#endif

// out[j] = (Σ_i weights[i] · s_ij over the values a trim of `cut` keeps) / divisor (cut = 0:
// every value): the sum of them all, 2 Σ w_i b_ij − Σ w_i from the signs, less the dropped ones
// (Dropped: with random signs and a trim of 10 of 100, the forward scan ends after 40 to 42 of
// the contributions on average).
template <size_t B>
void TrimmedSum(const SignRankRows& rows, const double* weights, size_t cut, double divisor,
                float* out) {
  const Words words = ReadWords(rows);
  const DU du;
  const size_t N = hn::Lanes(du), n = size_t(rows.n), coordinates = 64 * N;
  // Masks: the signs (weights 2 w_i); with a trim the dropped values, 2i: the positive one of
  // contribution i (+w_i), 2i + 1: its negative one (−w_i).
  const size_t drop_masks = cut > 0 ? 2 * n : 0;
  std::vector<double> sign_weights(n), drop_weights(drop_masks);
  double offset = 0;
  for (size_t i = 0; i < n; ++i) {
    sign_weights[i] = 2 * weights[i];
    offset -= weights[i];
    if (cut == 0) continue;
    drop_weights[2 * i] = weights[i];
    drop_weights[2 * i + 1] = -weights[i];
  }
  const size_t sign_groups = (n + 7) / 8, drop_groups = (drop_masks + 7) / 8;
  const size_t index_words = std::max(sign_groups, drop_groups) * coordinates / 8;
  uint64_t* scratch = Scratch(2, (sign_groups + drop_groups) * 256 + index_words + 3 * coordinates);
  double* tables = reinterpret_cast<double*>(scratch);
  const MaskTables signs = BuildTables(sign_weights.data(), n, tables);
  const MaskTables drops = BuildTables(drop_weights.data(), drop_masks, tables + sign_groups * 256);
  uint8_t* index = reinterpret_cast<uint8_t*>(scratch + (sign_groups + drop_groups) * 256);
  double* total =
      reinterpret_cast<double*>(scratch + (sign_groups + drop_groups) * 256 + index_words);
  double* front = total + coordinates;
  double* back = front + coordinates;
  uint64_t* forward = Scratch(1, 4 * n * N);
  uint64_t* backward = forward + 2 * n * N;
  const DD dd;
  const hn::Rebind<float, DD> dh;
  const size_t H = hn::Lanes(dd);
  for (size_t w0 = 0; w0 < words.used; w0 += N) {
    MaskSums(
        signs, 0, n, [&](size_t i) { return words.row(i) + w0; }, index, total);
    DroppedMasks dropped{0, n};
    if (cut > 0) {
      dropped = Dropped<B>(words, w0, n, cut, forward, backward);
      MaskSums(
          drops, 0, 2 * dropped.forward_end, [&](size_t m) { return forward + m * N; }, index,
          front);
    }
    const bool from_back = dropped.backward_begin < n;
    if (from_back)
      MaskSums(
          drops, 2 * dropped.backward_begin / 8, drop_masks,
          [&](size_t m) { return backward + m * N; }, index, back);
    // ((total + offset) − front − back) / divisor, correctly rounded in the vectors as in the
    // scalar tail.
    const size_t j0 = 64 * w0, count = std::min<size_t>(coordinates, size_t(rows.cols) - j0);
    size_t j = 0;
    for (; j + H <= count; j += H) {
      auto sum = hn::Add(hn::LoadU(dd, total + j), hn::Set(dd, offset));
      if (cut > 0) sum = hn::Sub(sum, hn::LoadU(dd, front + j));
      if (from_back) sum = hn::Sub(sum, hn::LoadU(dd, back + j));
      if (divisor != 1) sum = hn::Div(sum, hn::Set(dd, divisor));
      hn::StoreU(hn::DemoteTo(dh, sum), dh, out + j0 + j);
    }
    for (; j < count; ++j) {
      double sum = total[j] + offset;
      if (cut > 0) sum -= front[j];
      if (from_back) sum -= back[j];
      out[j0 + j] = float(sum / divisor);
    }
  }
}

void SignRankTrimmedMean(const SignRankRows& rows, int64_t cut, float* out) {
  const std::vector<double> gammas(rows.gammas, rows.gammas + rows.n);
  const double divisor = double(rows.n - 2 * cut);
  if (cut < 16) return TrimmedSum<4>(rows, gammas.data(), size_t(cut), divisor, out);
  if (cut < 256) return TrimmedSum<8>(rows, gammas.data(), size_t(cut), divisor, out);
  TrimmedSum<16>(rows, gammas.data(), size_t(cut), divisor, out);
}

void SignRankWeightedSum(const SignRankRows& rows, const double* weights, float* out) {
  TrimmedSum<4>(rows, weights, 0, 1.0, out);  // no trim: the counters are never used
}

// out[j] = value_of[the number of set bits at coordinate j]: a bit-sliced count of the
// positives (CountRows), then a lookup per coordinate.
template <size_t B, class T>
void CountValuesOf(const SignRankRows& rows, const float* value_of, float* out) {
  const Words words = ReadWords(rows);
  const DU du;
  const size_t N = hn::Lanes(du), n = size_t(rows.n);
  uint64_t planes[B * hn::MaxLanes(DU())];
  const DF df;
  const hn::Rebind<int32_t, DF> di;
  const hn::Rebind<T, DF> dn;
  HWY_ALIGN T count[64 + hn::MaxLanes(hn::ScalableTag<T>())];
  HWY_ALIGN float values[64];
  for (size_t w0 = 0; w0 < words.used; w0 += N) {
    VU positives[B];
    CountRows<B>(words, w0, n, false, positives);
#pragma GCC unroll 16
    for (size_t b = 0; b < B; ++b) hn::StoreU(positives[b], du, planes + b * N);
    for (size_t u = 0; u < N && 64 * (w0 + u) < size_t(rows.cols); ++u) {
      PlaneIntegers<B, T>(planes, N, u, count);
      for (size_t c = 0; c < 64; c += hn::Lanes(df))
        hn::Store(hn::GatherIndex(df, value_of, hn::PromoteTo(di, hn::LoadU(dn, count + c))), df,
                  values + c);
      const size_t j0 = 64 * (w0 + u);
      std::memcpy(out + j0, values, std::min<size_t>(64, size_t(rows.cols) - j0) * 4);
    }
  }
}

void SignRankCountValues(const SignRankRows& rows, const float* value_of, float* out) {
  if (rows.n < 16) return CountValuesOf<4, uint8_t>(rows, value_of, out);
  if (rows.n < 128) return CountValuesOf<7, uint8_t>(rows, value_of, out);
  if (rows.n < 256) return CountValuesOf<8, uint8_t>(rows, value_of, out);
  CountValuesOf<16, uint16_t>(rows, value_of, out);
}

// Row i against rows j .. j + J − 1 over words [w0, w1): J pairs share the loads of row i.
template <size_t J>
HWY_INLINE void CountDisagreements(const Words& words, size_t w0, size_t w1, size_t i, size_t j,
                                   size_t n, int64_t* d) {
  const DU du;
  const size_t N = hn::Lanes(du);
  VU count[J];
#pragma GCC unroll 4
  for (size_t k = 0; k < J; ++k) count[k] = hn::Zero(du);
  for (size_t w = w0; w < w1; w += N) {
    const VU x = hn::Load(du, words.row(i) + w);
#pragma GCC unroll 4
    for (size_t k = 0; k < J; ++k)
      count[k] =
          hn::Add(count[k], hn::PopulationCount(hn::Xor(x, hn::Load(du, words.row(j + k) + w))));
  }
  for (size_t k = 0; k < J; ++k)
    d[i * n + j + k] += int64_t(hn::GetLane(hn::SumOfLanes(du, count[k])));
}

// Every pair over chunks of words whose n rows stay in L2 together (100 rows: 200 KiB), instead
// of streaming both rows of each pair from memory.
void SignRankDisagreements(const SignRankRows& rows, int64_t* d) {
  const Words words = ReadWords(rows);
  const size_t n = size_t(rows.n);
  constexpr size_t kChunkWords = 256;  // 2 KiB of each row, a multiple of every vector's words
  for (size_t w0 = 0; w0 < words.used; w0 += kChunkWords) {
    const size_t w1 = std::min(words.used, w0 + kChunkWords);
    for (size_t i = 0; i < n; ++i) {
      size_t j = i + 1;
      for (; j + 4 <= n; j += 4) CountDisagreements<4>(words, w0, w1, i, j, n, d);
      for (; j < n; ++j) CountDisagreements<1>(words, w0, w1, i, j, n, d);
    }
  }
}

double SignRankPack(const float* values, int64_t cols, uint8_t* bits) {
  const DF df;
  const DD dd;
  const hn::Rebind<float, DD> dh;
  const size_t L = hn::Lanes(df), H = hn::Lanes(dd);
  auto sum = hn::Zero(dd);
  size_t j = 0;
  for (; j + L <= size_t(cols); j += L) {
    const auto v = hn::LoadU(df, values + j);
    StoreSignMask(df, hn::Ge(v, hn::Zero(df)), bits, j);
    for (size_t h = 0; h < L; h += H)
      sum = hn::Add(sum, hn::Abs(hn::PromoteTo(dd, hn::LoadU(dh, values + j + h))));
  }

  double total = hn::GetLane(hn::SumOfLanes(dd, sum));
  for (; j < size_t(cols); ++j) {
    if (values[j] >= 0) bits[j / 8] |= uint8_t(1u << (j % 8));
    total += std::abs(double(values[j]));
  }
  return total;
}

}  // namespace bd::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/error.h"

namespace bd {
HWY_EXPORT(SignRankMedian);
HWY_EXPORT(SignRankTrimmedMean);
HWY_EXPORT(SignRankWeightedSum);
HWY_EXPORT(SignRankCountValues);
HWY_EXPORT(SignRankDisagreements);
HWY_EXPORT(SignRankPack);

namespace {

void check_rows(const char* caller, const SignRankRows& rows) {
  if (rows.n < 1 || rows.n > kSignRankMaxContributions || rows.cols < 0)
    fail(caller, ": ", rows.n, " contributions of ", rows.cols, " coordinates (at most ",
         kSignRankMaxContributions, " contributions)");
  for (int64_t k = 0; k < rows.n && rows.padded; ++k)
    if (reinterpret_cast<uintptr_t>(rows.bits[k]) % 64 != 0)
      fail(caller, ": padded row ", k, " does not start on a 64-byte boundary");
}

}  // namespace

int64_t sign_rank_padded_stride(int64_t row_bytes) {
  const int64_t lines = (std::max<int64_t>(row_bytes, 1) + 63) / 64 * 64;
  return lines % 4096 == 0 ? lines + 64 : lines;
}

void sign_rank_median(const SignRankRows& rows, float* out) {
  check_rows("sign_rank_median", rows);
  if (rows.cols > 0) HWY_DYNAMIC_DISPATCH(SignRankMedian)(rows, out);
}

void sign_rank_trimmed_mean(const SignRankRows& rows, int64_t cut, float* out) {
  check_rows("sign_rank_trimmed_mean", rows);
  if (cut < 0 || 2 * cut >= rows.n)
    fail("sign_rank_trimmed_mean: cannot drop 2 x ", cut, " of ", rows.n, " values");
  if (rows.cols > 0) HWY_DYNAMIC_DISPATCH(SignRankTrimmedMean)(rows, cut, out);
}

void sign_rank_weighted_sum(const SignRankRows& rows, const double* weights, float* out) {
  check_rows("sign_rank_weighted_sum", rows);
  if (rows.cols > 0) HWY_DYNAMIC_DISPATCH(SignRankWeightedSum)(rows, weights, out);
}

void sign_rank_count_values(const SignRankRows& rows, const float* value_of, float* out) {
  check_rows("sign_rank_count_values", rows);
  if (rows.cols > 0) HWY_DYNAMIC_DISPATCH(SignRankCountValues)(rows, value_of, out);
}

void sign_rank_disagreements(const SignRankRows& rows, int64_t* d) {
  check_rows("sign_rank_disagreements", rows);
  if (rows.cols > 0) HWY_DYNAMIC_DISPATCH(SignRankDisagreements)(rows, d);
}

double sign_rank_pack(const float* values, int64_t cols, uint8_t* bits) {
  return HWY_DYNAMIC_DISPATCH(SignRankPack)(values, cols, bits);
}

}  // namespace bd
#endif  // HWY_ONCE
