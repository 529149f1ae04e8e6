#include "soup/rules.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace bd {

namespace {

struct MethodName {
  SoupMethod method;
  const char* name;
};
constexpr MethodName kMethods[] = {
    {SoupMethod::mean, "mean"},
    {SoupMethod::trimmed_mean, "trimmed-mean"},
    {SoupMethod::median, "median"},
    {SoupMethod::krum, "krum"},
    {SoupMethod::multi_krum, "multi-krum"},
    {SoupMethod::bulyan, "bulyan"},
    {SoupMethod::geometric_median, "geometric-median"},
    {SoupMethod::centered_clip, "centered-clip"},
    {SoupMethod::sign_majority, "sign-majority"},
    {SoupMethod::sign_vote, "sign-vote"},
};

double distance2(const std::vector<double>& gram, int64_t n, int64_t i, int64_t j) {
  return std::max(0.0,
                  gram[size_t(i * n + i)] + gram[size_t(j * n + j)] - 2 * gram[size_t(i * n + j)]);
}

// ‖Σ α δ − δ_k‖² for every k, and ‖Σ α δ‖², from the Gram matrix.
std::vector<double> distances_to_combination(const std::vector<double>& gram, int64_t n,
                                             const std::vector<double>& alpha) {
  std::vector<double> g_alpha(static_cast<size_t>(n), 0.0);
  double alpha_g_alpha = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j)
      g_alpha[size_t(i)] += gram[size_t(i * n + j)] * alpha[size_t(j)];
    alpha_g_alpha += alpha[size_t(i)] * g_alpha[size_t(i)];
  }
  std::vector<double> distances(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k)
    distances[size_t(k)] =
        std::sqrt(std::max(0.0, gram[size_t(k * n + k)] - 2 * g_alpha[size_t(k)] + alpha_g_alpha));
  return distances;
}

// The n − 2⌊βn⌋ middle values of sorted[0..n), averaged.
float trimmed_mean_sorted(const float* sorted, int64_t n, double trim) {
  const int64_t cut = int64_t(std::floor(trim * double(n)));
  double sum = 0;
  for (int64_t i = cut; i < n - cut; ++i) sum += sorted[i];
  return float(sum / double(n - 2 * cut));
}

float median_sorted(const float* sorted, int64_t n) {
  return n % 2 ? sorted[n / 2] : float((double(sorted[n / 2 - 1]) + double(sorted[n / 2])) / 2);
}

std::vector<int64_t> lowest(const std::vector<double>& scores, const std::vector<int64_t>& members,
                            size_t count) {
  std::vector<int64_t> order = members;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return scores[size_t(a)] < scores[size_t(b)]; });
  order.resize(std::min(count, order.size()));
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<int64_t> everyone(int64_t n) {
  std::vector<int64_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  return all;
}

}  // namespace

double median_of(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

SoupMethod parse_soup_method(const std::string& name) {
  for (const MethodName& m : kMethods)
    if (name == m.name) return m.method;
  std::string names;
  for (const MethodName& m : kMethods) names += std::string(names.empty() ? "" : ", ") + m.name;
  fail("unknown soup method '", name, "' (one of ", names, ")");
}

const char* soup_method_name(SoupMethod method) {
  for (const MethodName& m : kMethods)
    if (m.method == method) return m.name;
  return "?";
}

bool is_vector_rule(SoupMethod method) {
  return method == SoupMethod::krum || method == SoupMethod::multi_krum ||
         method == SoupMethod::bulyan || method == SoupMethod::geometric_median ||
         method == SoupMethod::centered_clip;
}

bool is_sign_rule(SoupMethod method) {
  return method == SoupMethod::sign_majority || method == SoupMethod::sign_vote;
}

void check_soup_params(const SoupParams& p, int64_t n) {
  const char* name = soup_method_name(p.method);
  if (n < 1) fail("a soup needs at least one contribution");
  if (p.method == SoupMethod::trimmed_mean || p.method == SoupMethod::sign_vote)
    if (!(p.trim >= 0 && p.trim < 0.5)) fail(name, ": --trim must lie in [0, 0.5), got ", p.trim);
  const int64_t f = p.byzantine;
  if (f < 0) fail(name, ": --byzantine must be >= 0, got ", f);
  if ((p.method == SoupMethod::krum || p.method == SoupMethod::multi_krum) && !(n > 2 * f + 2))
    fail(name, " with --byzantine ", f, " needs more than 2f + 2 = ", 2 * f + 2,
         " contributions, got ", n);
  if (p.method == SoupMethod::multi_krum && !(p.keep >= 1 && p.keep <= n))
    fail(name, ": --keep must lie in [1, ", n, "], got ", p.keep);
  if (p.method == SoupMethod::bulyan && !(n >= 4 * f + 3))
    fail(name, " with --byzantine ", f, " needs at least 4f + 3 = ", 4 * f + 3,
         " contributions, got ", n);
  if (p.method == SoupMethod::centered_clip && !(p.clip_radius >= 0))
    fail(name, ": --clip-radius must be >= 0, got ", p.clip_radius);
  if (p.iterations < 0) fail(name, ": --iterations must be >= 0, got ", p.iterations);
}

std::vector<double> krum_scores(const std::vector<double>& gram, int64_t n, int64_t f,
                                const std::vector<int64_t>& members) {
  const std::vector<int64_t> in = members.empty() ? everyone(n) : members;
  std::vector<double> scores(static_cast<size_t>(n), std::numeric_limits<double>::infinity());
  const int64_t neighbours =
      std::clamp<int64_t>(int64_t(in.size()) - f - 2, 0, int64_t(in.size()) - 1);
  for (int64_t i : in) {
    std::vector<double> d;
    for (int64_t j : in)
      if (j != i) d.push_back(distance2(gram, n, i, j));
    std::sort(d.begin(), d.end());
    scores[size_t(i)] = std::accumulate(d.begin(), d.begin() + neighbours, 0.0);
  }
  return scores;
}

VectorChoice choose_vectors(const SoupParams& p, const std::vector<double>& gram, int64_t n) {
  VectorChoice choice;
  choice.weights.assign(size_t(n), 0.0);
  switch (p.method) {
    case SoupMethod::krum:
    case SoupMethod::multi_krum: {
      choice.scores = krum_scores(gram, n, p.byzantine, {});
      choice.selected =
          lowest(choice.scores, everyone(n), p.method == SoupMethod::krum ? 1 : size_t(p.keep));
      for (int64_t k : choice.selected)
        choice.weights[size_t(k)] = 1.0 / double(choice.selected.size());
      break;
    }
    case SoupMethod::bulyan: {  // n − 2f rounds of Krum, each removing its winner from the pool
      std::vector<int64_t> pool = everyone(n);
      choice.scores = krum_scores(gram, n, p.byzantine, pool);
      while (int64_t(choice.selected.size()) < n - 2 * p.byzantine) {
        const int64_t winner = lowest(krum_scores(gram, n, p.byzantine, pool), pool, 1).front();
        choice.selected.push_back(winner);
        pool.erase(std::find(pool.begin(), pool.end(), winner));
      }
      std::sort(choice.selected.begin(), choice.selected.end());
      break;
    }
    case SoupMethod::geometric_median: {  // smoothed Weiszfeld from the mean
      std::vector<double> norms(static_cast<size_t>(n));
      for (int64_t k = 0; k < n; ++k) norms[size_t(k)] = std::sqrt(gram[size_t(k * n + k)]);
      const double smoothing = std::max(1e-12, 1e-6 * median_of(norms));
      std::vector<double> alpha(static_cast<size_t>(n), 1.0 / double(n));
      const int64_t max_iterations = p.iterations ? p.iterations : 100;
      for (choice.iterations = 0; choice.iterations < max_iterations;) {
        const std::vector<double> d = distances_to_combination(gram, n, alpha);
        std::vector<double> next(static_cast<size_t>(n));
        double total = 0;
        for (int64_t k = 0; k < n; ++k)
          total += next[size_t(k)] = 1.0 / std::max(smoothing, d[size_t(k)]);
        std::vector<double> change(static_cast<size_t>(n));
        for (int64_t k = 0; k < n; ++k) {
          next[size_t(k)] /= total;
          change[size_t(k)] = next[size_t(k)] - alpha[size_t(k)];
        }
        alpha = next;
        ++choice.iterations;
        // ‖Σ Δα δ‖ from the Gram matrix, relative to the median norm.
        double moved = 0;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j)
            moved += change[size_t(i)] * gram[size_t(i * n + j)] * change[size_t(j)];
        if (std::sqrt(std::max(0.0, moved)) <= 1e-7 * median_of(norms)) break;
      }
      choice.weights = alpha;
      break;
    }
    case SoupMethod::centered_clip: {  // from the base (v = 0), L steps of clipped re-centring
      std::vector<double> norms(static_cast<size_t>(n));
      for (int64_t k = 0; k < n; ++k) norms[size_t(k)] = std::sqrt(gram[size_t(k * n + k)]);
      const double radius = p.clip_radius > 0 ? p.clip_radius : median_of(norms);
      std::vector<double> alpha(static_cast<size_t>(n), 0.0);
      const int64_t steps = p.iterations ? p.iterations : 3;
      for (choice.iterations = 0; choice.iterations < steps; ++choice.iterations) {
        const std::vector<double> d = distances_to_combination(gram, n, alpha);
        std::vector<double> next = alpha;
        for (int64_t k = 0; k < n; ++k) {
          const double c = d[size_t(k)] > radius ? radius / d[size_t(k)] : 1.0;
          for (int64_t j = 0; j < n; ++j)
            next[size_t(j)] += c * ((j == k ? 1.0 : 0.0) - alpha[size_t(j)]) / double(n);
        }
        alpha = next;
      }
      choice.weights = alpha;
      break;
    }
    default:
      fail(soup_method_name(p.method), " is not a vector rule");
  }
  if (p.method != SoupMethod::bulyan && p.method != SoupMethod::krum &&
      p.method != SoupMethod::multi_krum)
    for (int64_t k = 0; k < n; ++k)
      if (choice.weights[size_t(k)] > 0) choice.selected.push_back(k);
  return choice;
}

float sign_rule_scale(const SoupParams& params, const float* sorted_scales, int64_t n) {
  return params.method == SoupMethod::sign_vote ? trimmed_mean_sorted(sorted_scales, n, params.trim)
                                                : median_sorted(sorted_scales, n);
}

float aggregate_coordinate(const SoupParams& p, const float* values, int64_t stride, int64_t n,
                           const float* scales, const VectorChoice& choice, float* scratch) {
  switch (p.method) {
    case SoupMethod::mean: {
      double sum = 0;
      for (int64_t k = 0; k < n; ++k) sum += values[k * stride];
      return float(sum / double(n));
    }
    case SoupMethod::trimmed_mean:
    case SoupMethod::median: {
      for (int64_t k = 0; k < n; ++k) scratch[k] = values[k * stride];
      std::sort(scratch, scratch + n);
      return p.method == SoupMethod::median ? median_sorted(scratch, n)
                                            : trimmed_mean_sorted(scratch, n, p.trim);
    }
    case SoupMethod::krum:
    case SoupMethod::multi_krum:
    case SoupMethod::geometric_median:
    case SoupMethod::centered_clip: {
      double sum = 0;
      for (int64_t k : choice.selected) sum += choice.weights[size_t(k)] * values[k * stride];
      return float(sum);
    }
    case SoupMethod::bulyan: {  // the θ − 2f selected values closest to their median, averaged
      const int64_t theta = int64_t(choice.selected.size());
      for (int64_t i = 0; i < theta; ++i) scratch[i] = values[choice.selected[size_t(i)] * stride];
      std::sort(scratch, scratch + theta);
      const float median = median_sorted(scratch, theta);
      const int64_t keep = theta - 2 * p.byzantine;
      std::stable_sort(scratch, scratch + theta, [median](float a, float b) {
        return std::abs(double(a) - median) < std::abs(double(b) - median);
      });
      double sum = 0;
      for (int64_t i = 0; i < keep; ++i) sum += scratch[i];
      return float(sum / double(keep));
    }
    case SoupMethod::sign_majority: {  // majority sign (a tie is +1, as δ = 0 is) × median scale
      int64_t positive = 0;
      for (int64_t k = 0; k < n; ++k) positive += values[k * stride] >= 0;
      const float scale = median_sorted(scales, n);
      return 2 * positive >= n ? scale : -scale;
    }
    case SoupMethod::sign_vote: {  // trimmed mean of the ±1 signs × trimmed mean of the scales
      for (int64_t k = 0; k < n; ++k) scratch[k] = values[k * stride] >= 0 ? 1.0f : -1.0f;
      std::sort(scratch, scratch + n);
      const float sign = trimmed_mean_sorted(scratch, n, p.trim);
      return sign * trimmed_mean_sorted(scales, n, p.trim);
    }
  }
  return 0;
}

}  // namespace bd
