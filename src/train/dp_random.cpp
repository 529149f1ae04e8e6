#include "train/dp_random.h"

#include <sodium.h>

#include <cmath>
#include <numbers>
#include <string>

#include "core/error.h"

namespace bd {

namespace {

// Values per parallel chunk of add_gaussian (one keystream per chunk).
constexpr size_t kChunkValues = 8192;

// A uniform double in [0, 1) from the top 53 bits of a 64-bit word.
double unit_interval(uint64_t word) {
  return double(word >> 11) * 0x1.0p-53;
}

void require_sodium() {
  if (sodium_init() < 0) fail("libsodium failed to initialise");
}

}  // namespace

DpRandom::DpRandom(std::optional<uint64_t> seed) {
  require_sodium();
  if (!seed) {
    randombytes_buf(key_.data(), key_.size());
    return;
  }
  secret_ = false;
  uint8_t bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = uint8_t(*seed >> (8 * i));
  static_assert(crypto_hash_sha256_BYTES == sizeof key_);
  crypto_hash_sha256(key_.data(), bytes, sizeof bytes);
}

void DpRandom::keystream(uint8_t* out, size_t bytes, uint64_t draw, uint32_t chunk) const {
  uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
  static_assert(sizeof nonce == 12);
  for (int i = 0; i < 8; ++i) nonce[i] = uint8_t(draw >> (8 * i));
  for (int i = 0; i < 4; ++i) nonce[8 + i] = uint8_t(chunk >> (8 * i));
  crypto_stream_chacha20_ietf(out, bytes, nonce, key_.data());
}

std::vector<int64_t> DpRandom::poisson_sample(int64_t n, double q) {
  if (!(q >= 0 && q <= 1)) fail("the sample rate must lie in [0, 1], got ", q);
  if (n < 0) fail("cannot sample from ", n, " examples");
  const uint64_t draw = draws_++;
  std::vector<int64_t> sampled;
  std::vector<uint64_t> words(std::min<size_t>(size_t(n), kChunkValues));
  for (int64_t start = 0, chunk = 0; start < n; start += int64_t(words.size()), ++chunk) {
    const size_t count = size_t(std::min<int64_t>(n - start, int64_t(words.size())));
    keystream(reinterpret_cast<uint8_t*>(words.data()), count * sizeof(uint64_t), draw,
              uint32_t(chunk));
    for (size_t i = 0; i < count; ++i)
      if (unit_interval(words[i]) < q) sampled.push_back(start + int64_t(i));
  }
  return sampled;
}

void DpRandom::add_gaussian(float* x, size_t n, double stddev) {
  if (!(stddev >= 0) || !std::isfinite(stddev))
    fail("the noise standard deviation must be a finite number >= 0, got ", stddev);
  const uint64_t draw = draws_++;
  const int64_t chunks = int64_t((n + kChunkValues - 1) / kChunkValues);
  if (chunks > int64_t(UINT32_MAX)) fail("add_gaussian: ", n, " values are too many");
    // One keystream word per value: pairs of words give pairs of normals.
#pragma omp parallel
  {
    std::vector<uint64_t> words(kChunkValues);  // per thread, reused across its chunks
#pragma omp for schedule(static)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const size_t start = size_t(chunk) * kChunkValues;
      const size_t count = std::min(kChunkValues, n - start);
      const size_t even = (count + 1) & ~size_t(1);
      keystream(reinterpret_cast<uint8_t*>(words.data()), even * sizeof(uint64_t), draw,
                uint32_t(chunk));
      float* values = x + start;
      for (size_t i = 0; i < count; i += 2) {
        const double radius = stddev * std::sqrt(-2.0 * std::log(1.0 - unit_interval(words[i])));
        const double angle = 2.0 * std::numbers::pi * unit_interval(words[i + 1]);
        values[i] += float(radius * std::cos(angle));
        if (i + 1 < count) values[i + 1] += float(radius * std::sin(angle));
      }
    }
  }
}

}  // namespace bd
