// Rotary position embeddings in the Hugging Face split-half convention (`rotate_half`): within a
// head of size D, element i pairs with element i + D/2 and the pair is rotated by the angle
// position · inv_freq[i]. No q/k permutation.
#pragma once
#include <cstdint>
#include <vector>

namespace bd {

// inv_freq[D/2]: inv_freq[i] = theta^(-2i/D). Kept in double so that angles at long positions
// stay exact to F32 precision.
std::vector<double> rope_inv_freq(int64_t head_dim, double theta);

// rope_scaling "linear": positions are divided by `factor`, i.e. every frequency is.
void rope_scale_linear(std::vector<double>& inv_freq, double factor);

// rope_scaling "llama3" (Llama 3.1): wavelengths 2π/f shorter than original_max/high_freq_factor
// are kept, those longer than original_max/low_freq_factor are divided by `factor`, and those in
// between are blended: f' = (1-s)·f/factor + s·f with s = (original_max/wavelen - low) / (high -
// low).
void rope_scale_llama3(std::vector<double>& inv_freq, double factor, double low_freq_factor,
                       double high_freq_factor, double original_max_positions);

// Rotates x[B, n, H, D] in place; row (b, t) sits at position pos0 + t.
void rope_forward(float* x, const double* inv_freq, int64_t B, int64_t n, int64_t H, int64_t D,
                  int64_t pos0);

// Rotates x[rows, H, D] in place; row r sits at positions[r] (a batch of sequences at
// different positions).
void rope_forward_at(float* x, const double* inv_freq, int64_t rows, int64_t H, int64_t D,
                     const int64_t* positions);

// The transpose rotation: turns dout[B, n, H, D] into din in place.
void rope_backward(float* dx, const double* inv_freq, int64_t B, int64_t n, int64_t H, int64_t D,
                   int64_t pos0);

}  // namespace bd
