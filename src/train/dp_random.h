// The randomness of DP-SGD: which examples a step samples (Poisson sampling) and the Gaussian
// noise added to the clipped gradient sum. The privacy guarantee assumes both are unknown to
// whoever sees the model (knowing the noise, one subtracts it), so by default they come from a
// ChaCha20 keystream under a 32-byte key drawn from the operating system (libsodium). A seed
// makes a run reproducible, for tests only: the run then records that its noise is not secret.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace bd {

class DpRandom {
 public:
  // A secret key from the OS when no seed is given; else key = SHA-256 of the seed's 8 bytes.
  explicit DpRandom(std::optional<uint64_t> seed = std::nullopt);

  bool secret() const { return secret_; }

  // Each of n examples independently with probability q (a uniform 53-bit draw below q), in
  // increasing order. Throws bd::Error for q outside [0, 1] or n < 0.
  std::vector<int64_t> poisson_sample(int64_t n, double q);

  // x[i] += N(0, stddev²) for i < n (Box-Muller on 53-bit uniforms, in double). Parallel over
  // chunks, each with its own nonce, so the values do not depend on the thread count.
  void add_gaussian(float* x, size_t n, double stddev);

 private:
  // `bytes` bytes of the keystream for nonce (draw, chunk).
  void keystream(uint8_t* out, size_t bytes, uint64_t draw, uint32_t chunk) const;

  std::array<uint8_t, 32> key_{};
  bool secret_ = true;
  uint64_t draws_ = 0;  // calls made: each call reads its own streams
};

}  // namespace bd
