#include "kernels/rope.h"

#include <cmath>
#include <numbers>

#include "kernels/parallel.h"

namespace bd {

std::vector<double> rope_inv_freq(int64_t head_dim, double theta) {
  std::vector<double> inv_freq(size_t(head_dim / 2));
  for (size_t i = 0; i < inv_freq.size(); ++i)
    inv_freq[i] = std::pow(theta, -double(2 * i) / double(head_dim));
  return inv_freq;
}

void rope_scale_linear(std::vector<double>& inv_freq, double factor) {
  for (double& f : inv_freq) f /= factor;
}

void rope_scale_llama3(std::vector<double>& inv_freq, double factor, double low_freq_factor,
                       double high_freq_factor, double original_max_positions) {
  const double low_freq_wavelen = original_max_positions / low_freq_factor;
  const double high_freq_wavelen = original_max_positions / high_freq_factor;
  for (double& f : inv_freq) {
    const double wavelen = 2 * std::numbers::pi / f;
    if (wavelen < high_freq_wavelen) continue;  // high frequency: unchanged
    if (wavelen > low_freq_wavelen) {           // low frequency: interpolated by `factor`
      f /= factor;
      continue;
    }
    const double smooth =
        (original_max_positions / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
    f = (1 - smooth) * f / factor + smooth * f;
  }
}

namespace {

// Rotates every (i, i + D/2) pair of each head of row[H, D] by ±position·inv_freq[i];
// sign = +1 forward, -1 transpose.
void rotate_row(float* row, const double* inv_freq, int64_t H, int64_t D, double pos, double sign) {
  const int64_t half = D / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double angle = pos * inv_freq[i];
    const float c = float(std::cos(angle)), s = float(sign * std::sin(angle));
    for (int64_t h = 0; h < H; ++h) {
      float* head = row + h * D;
      const float x1 = head[i], x2 = head[i + half];
      head[i] = x1 * c - x2 * s;
      head[i + half] = x2 * c + x1 * s;
    }
  }
}

// x[B, n, H, D]: row (b, t) at position pos0 + t.
void rotate(float* x, const double* inv_freq, int64_t B, int64_t n, int64_t H, int64_t D,
            int64_t pos0, double sign) {
#pragma omp parallel for collapse(2) if (B * n > 1 && B * n * H * D >= kMinParallelWork)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < n; ++t)
      rotate_row(x + (b * n + t) * H * D, inv_freq, H, D, double(pos0 + t), sign);
}

}  // namespace

void rope_forward(float* x, const double* inv_freq, int64_t B, int64_t n, int64_t H, int64_t D,
                  int64_t pos0) {
  rotate(x, inv_freq, B, n, H, D, pos0, 1.0);
}

void rope_forward_at(float* x, const double* inv_freq, int64_t rows, int64_t H, int64_t D,
                     const int64_t* positions) {
#pragma omp parallel for if (rows > 1 && rows * H * D >= kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r)
    rotate_row(x + r * H * D, inv_freq, H, D, double(positions[r]), 1.0);
}

void rope_backward(float* dx, const double* inv_freq, int64_t B, int64_t n, int64_t H, int64_t D,
                   int64_t pos0) {
  rotate(dx, inv_freq, B, n, H, D, pos0, -1.0);
}

}  // namespace bd
