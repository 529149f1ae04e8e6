#include "soup/screen.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/progress.h"
#include "soup/rules.h"

namespace bd {

namespace {

// Per contribution: Σ δ², Σ δ · median, coordinates agreeing with the majority sign; and Σ median².
struct Sums {
  std::vector<double> norm2, dot, agree;
  double median_norm2 = 0;
  void resize(int64_t n) {
    norm2.assign(size_t(n), 0.0);
    dot.assign(size_t(n), 0.0);
    agree.assign(size_t(n), 0.0);
    median_norm2 = 0;
  }
  void add(const Sums& other) {
    for (size_t k = 0; k < norm2.size(); ++k) {
      norm2[k] += other.norm2[k];
      dot[k] += other.dot[k];
      agree[k] += other.agree[k];
    }
    median_norm2 += other.median_norm2;
  }
};

}  // namespace

std::vector<double> robust_z_scores(const std::vector<double>& values) {
  const double median = median_of(values);
  std::vector<double> deviations;
  for (double v : values) deviations.push_back(std::abs(v - median));
  const double mad = median_of(deviations);
  std::vector<double> z;
  for (double v : values) {
    if (mad > 0)
      z.push_back(0.6745 * (v - median) / mad);
    else
      z.push_back(v == median ? 0.0
                              : std::copysign(std::numeric_limits<double>::infinity(), v - median));
  }
  return z;
}

std::vector<ScreenEntry> screen_contributions(const SoupInputs& inputs, double threshold,
                                              bool quiet) {
  const int64_t n = inputs.count();
  if (n < 3) fail("screening needs at least 3 contributions to compare, got ", n);
  SoupParams median;
  median.method = SoupMethod::median;
  const VectorChoice none;
  Sums total;
  total.resize(n);
  std::vector<Sums> partial(kSoupWave);
  for (Sums& s : partial) s.resize(n);
  const int threads = omp_get_max_threads();
  const size_t per_thread = size_t(n * kSoupBlockCoordinates + 2 * n);
  std::vector<float> memory(size_t(threads) * per_thread);
  int64_t total_blocks = 0;
  for (const SoupTensor& tensor : inputs.tensors()) total_blocks += block_count(tensor);
  Progress progress("screen", total_blocks, "blocks", quiet);
  int64_t done = 0;
  for (size_t t = 0; t < inputs.tensors().size(); ++t) {
    const SoupTensor& tensor = inputs.tensors()[t];
    const int64_t rows = block_rows(tensor), blocks = block_count(tensor);
    for (int64_t wave = 0; wave < blocks; wave += kSoupWave) {
      const int64_t count = std::min(kSoupWave, blocks - wave);
#pragma omp parallel for schedule(dynamic)
      for (int64_t w = 0; w < count; ++w) {
        float* block = memory.data() + size_t(omp_get_thread_num()) * per_thread;
        float* scratch = block + n * kSoupBlockCoordinates;
        const int64_t row0 = (wave + w) * rows, here = std::min(rows, tensor.rows - row0);
        const int64_t m = here * tensor.cols;
        inputs.read_block(t, row0, here, block);
        Sums& s = partial[size_t(w)];
        s.resize(n);
        for (int64_t i = 0; i < m; ++i) {
          const float med = aggregate_coordinate(median, block + i, m, n, nullptr, none, scratch);
          int64_t positive = 0;
          for (int64_t k = 0; k < n; ++k) positive += block[k * m + i] >= 0;
          const bool majority = 2 * positive >= n;
          s.median_norm2 += double(med) * double(med);
          for (int64_t k = 0; k < n; ++k) {
            const double v = block[k * m + i];
            s.norm2[size_t(k)] += v * v;
            s.dot[size_t(k)] += v * double(med);
            s.agree[size_t(k)] += (v >= 0) == majority;
          }
        }
      }
      for (int64_t w = 0; w < count; ++w) total.add(partial[size_t(w)]);
      done += count;
      progress.update(done);
    }
  }
  progress.finish();

  const double coordinates = double(inputs.coordinates());
  const double median_norm = std::sqrt(total.median_norm2);
  std::vector<ScreenEntry> entries(static_cast<size_t>(n));
  std::vector<double> norms, cosines, agreements;
  for (int64_t k = 0; k < n; ++k) {
    ScreenEntry& e = entries[size_t(k)];
    e.norm = std::sqrt(total.norm2[size_t(k)]);
    e.cosine = e.norm > 0 && median_norm > 0 ? total.dot[size_t(k)] / (e.norm * median_norm) : 0.0;
    e.agreement = coordinates > 0 ? total.agree[size_t(k)] / coordinates : 1.0;
    norms.push_back(e.norm);
    cosines.push_back(e.cosine);
    agreements.push_back(e.agreement);
  }
  const std::vector<double> norm_z = robust_z_scores(norms), cosine_z = robust_z_scores(cosines),
                            agreement_z = robust_z_scores(agreements);
  for (int64_t k = 0; k < n; ++k) {
    ScreenEntry& e = entries[size_t(k)];
    e.norm_z = norm_z[size_t(k)];
    e.cosine_z = cosine_z[size_t(k)];
    e.agreement_z = agreement_z[size_t(k)];
    if (std::abs(e.norm_z) > threshold)
      e.reasons.push_back(
          cat("norm ", e.norm, " is far from the others' (robust z ", e.norm_z, ")"));
    if (e.cosine_z < -threshold)
      e.reasons.push_back(cat("cosine ", e.cosine,
                              " to the coordinate-wise median is unusually low (robust z ",
                              e.cosine_z, ")"));
    if (e.agreement_z < -threshold)
      e.reasons.push_back(cat("agrees with the majority sign on ", e.agreement,
                              " of coordinates, unusually few (robust z ", e.agreement_z, ")"));
  }
  return entries;
}

}  // namespace bd
