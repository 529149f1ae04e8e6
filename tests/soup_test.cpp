// DeltaSoup's rules against a straightforward reference on synthetic deltas (70 honest + 30
// poisoned): every contribution dequantised into one dense vector, each rule written the
// textbook way (sorting per coordinate, distances computed from the vectors themselves,
// Weiszfeld and centered clipping iterated in coordinate space). Also: the same bytes for any
// input order and thread count, bit output as the re-quantised reference, robust rules staying
// near the honest mean while the plain mean is dragged off, and the errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "checkpoint_pair.h"
#include "core/threads.h"
#include "delta/compress.h"
#include "io/adapter.h"
#include "io/checkpoint.h"
#include "soup/attribution.h"
#include "soup/screen.h"
#include "soup/soup.h"
#include "test_util.h"

namespace bd {
namespace {

using Vector = std::vector<double>;

constexpr int kHonest = 70, kPoisoned = 30;

// The base, and n adapters: honest ones share a sign pattern (10% of signs flipped each) and
// scales near 0.01; poisoned ones flip the pattern and scale it by 10 (a sign-flip + scaling
// attack). One norm's delta is kept exactly (honest near +0.05, poisoned −0.5).
class SoupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_dir_ = scratch_ / "base";
    LlamaParams params(test::small_llama_config());
    params.init_random(3);
    test::save_params(base_dir_, params, DType::F32, {});
    base_ = std::make_unique<Checkpoint>(base_dir_);
    std::mt19937_64 rng(7);
    for (const NamedTensor& tensor : base_->tensors())
      if (is_compressed_weight(tensor.name)) {
        std::vector<uint8_t> pattern(size_t(tensor.view.numel()));
        for (uint8_t& bit : pattern) bit = rng() & 1;
        patterns_.push_back({tensor.name, tensor.view.shape, pattern});
      }
    for (int k = 0; k < kHonest + kPoisoned; ++k)
      paths_.push_back(write_contribution(k, k >= kHonest));
  }

  struct Pattern {
    std::string name;
    Shape shape;
    std::vector<uint8_t> bits;  // one per weight
  };

  // per_row: a scale per output row (compress --granularity row), every third one equal to the
  // row above's, so that the γ order of the contributions changes from row to row, with ties.
  std::string write_contribution(int k, bool poisoned, bool per_row = false) {
    std::mt19937_64 rng(100 + k);
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    std::vector<AdapterMatrix> matrices;
    std::vector<std::vector<uint8_t>> signs;
    std::vector<std::vector<float>> scales;
    signs.reserve(patterns_.size());
    scales.reserve(patterns_.size());
    for (const Pattern& p : patterns_) {
      const int64_t out = p.shape[0], in = p.shape[1], row_bytes = (in + 7) / 8;
      signs.emplace_back(size_t(out * row_bytes), 0);
      for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i) {
          bool bit = p.bits[size_t(o * in + i)];
          if (uniform(rng) < 0.1f) bit = !bit;
          if (poisoned) bit = !bit;
          if (bit) signs.back()[size_t(o * row_bytes + i / 8)] |= uint8_t(1u << (i % 8));
        }
      scales.emplace_back();
      for (int64_t o = 0; o < (per_row ? out : 1); ++o)
        scales.back().push_back(o % 3 == 2
                                    ? scales.back().back()
                                    : (0.008f + 0.004f * uniform(rng)) * (poisoned ? 10.0f : 1.0f));
      matrices.push_back(AdapterMatrix{
          p.name, out, in, TensorView{DType::U8, {out, row_bytes}, signs.back().data()},
          TensorView{DType::F32, {per_row ? out : 1}, scales.back().data()}});
    }
    const int64_t C = base_->config().hidden_size;
    std::vector<float> norm(static_cast<size_t>(C));
    for (float& v : norm) v = poisoned ? -0.5f : 0.05f + 0.01f * uniform(rng);
    std::vector<AdapterExact> exact = {
        {"model.norm.weight", TensorView{DType::F32, {C}, norm.data()}}};
    AdapterInfo info;
    info.base_fingerprint = base_->fingerprint();
    info.finetune_fingerprint = std::string(64, 'a' + char(k % 6));
    info.owner = "did:lux:contributor-" + std::to_string(k);
    info.scale_mode = "mean";
    info.granularity = per_row ? "row" : "matrix";
    info.tool_version = "test";
    info.created = "2026-12-02T10:00:00Z";
    const std::string path = scratch_ / ((per_row ? "r" : "c") + std::to_string(k) + ".bitdelta");
    write_adapter(path, info, matrices, exact, false);
    return path;
  }

  // Every tensor of an adapter in name order, dequantised, zeros where it has none.
  Vector dense(const std::string& path, const std::vector<std::string>& names) const {
    const AdapterFile file(path);
    Vector v;
    for (const std::string& name : names) {
      if (const AdapterMatrix* m = file.find_matrix(name)) {
        const float* scale = m->scale.as<float>();
        for (int64_t o = 0; o < m->out; ++o)
          for (int64_t i = 0; i < m->in; ++i) {
            const bool bit = (m->sign.as<uint8_t>()[o * ((m->in + 7) / 8) + i / 8] >> (i % 8)) & 1;
            const float gamma = m->per_row() ? scale[o] : scale[0];
            v.push_back(bit ? gamma : -gamma);
          }
      } else if (const AdapterExact* e = file.find_exact(name)) {
        std::vector<float> values(static_cast<size_t>(e->delta.numel()));
        to_f32(e->delta.dtype, e->delta.data, values.data(), values.size());
        v.insert(v.end(), values.begin(), values.end());
      } else {
        ADD_FAILURE() << path << " lacks " << name;
      }
    }
    return v;
  }

  std::vector<std::string> tensor_names() const {
    std::vector<std::string> names;
    for (const Pattern& p : patterns_) names.push_back(p.name);
    names.push_back("model.norm.weight");
    std::sort(names.begin(), names.end());
    return names;
  }

  std::vector<Vector> contributions(std::vector<std::string> paths = {}) const {
    std::vector<Vector> all;
    for (const std::string& path : paths.empty() ? paths_ : paths)
      all.push_back(dense(path, tensor_names()));
    return all;
  }

  Vector soup(const SoupParams& params, bool dense_output = true,
              std::vector<std::string> paths = {}) {
    SoupOptions options;
    options.params = params;
    options.dense = dense_output;
    options.quiet = true;
    const std::string out = scratch_ / "soup.bitdelta";
    make_soup(SoupInputs(paths.empty() ? paths_ : paths), *base_, options, out, true);
    return dense(out, tensor_names());
  }

  test::ScratchDir scratch_;
  std::string base_dir_;
  std::unique_ptr<Checkpoint> base_;
  std::vector<Pattern> patterns_;
  std::vector<std::string> paths_;
};

// ---- the reference -----------------------------------------------------------------------------

double distance2(const Vector& a, const Vector& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += (a[i] - b[i]) * (a[i] - b[i]);
  return sum;
}

Vector coordinatewise(const std::vector<Vector>& xs, const std::function<double(Vector)>& rule) {
  Vector out(xs[0].size());
  for (size_t i = 0; i < out.size(); ++i) {
    Vector column;
    for (const Vector& x : xs) column.push_back(x[i]);
    out[i] = rule(column);
  }
  return out;
}

double reference_median(Vector v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double reference_trimmed_mean(Vector v, double beta) {
  std::sort(v.begin(), v.end());
  const size_t cut = size_t(std::floor(beta * double(v.size())));
  return std::accumulate(v.begin() + long(cut), v.end() - long(cut), 0.0) /
         double(v.size() - 2 * cut);
}

Vector mean_of(const std::vector<Vector>& xs, const std::vector<size_t>& which) {
  Vector out(xs[0].size(), 0.0);
  for (size_t k : which)
    for (size_t i = 0; i < out.size(); ++i) out[i] += xs[k][i] / double(which.size());
  return out;
}

// Squared distances between the vectors, computed from the vectors.
std::vector<Vector> pairwise(const std::vector<Vector>& xs) {
  std::vector<Vector> d(xs.size(), Vector(xs.size(), 0.0));
  for (size_t i = 0; i < xs.size(); ++i)
    for (size_t j = 0; j < i; ++j) d[i][j] = d[j][i] = distance2(xs[i], xs[j]);
  return d;
}

// Krum scores among `pool`: the sum of the |pool| − f − 2 smallest squared distances.
std::vector<double> reference_krum_scores(const std::vector<Vector>& distances,
                                          const std::vector<size_t>& pool, int f) {
  std::vector<double> scores(distances.size(), INFINITY);
  for (size_t i : pool) {
    std::vector<double> d;
    for (size_t j : pool)
      if (j != i) d.push_back(distances[i][j]);
    std::sort(d.begin(), d.end());
    const long keep = std::clamp<long>(long(pool.size()) - f - 2, 0, long(d.size()));
    scores[i] = std::accumulate(d.begin(), d.begin() + keep, 0.0);
  }
  return scores;
}

std::vector<size_t> lowest_scores(const std::vector<double>& scores, std::vector<size_t> pool,
                                  size_t m) {
  std::stable_sort(pool.begin(), pool.end(),
                   [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  pool.resize(m);
  return pool;
}

std::vector<size_t> all_of(size_t n) {
  std::vector<size_t> all(n);
  std::iota(all.begin(), all.end(), size_t(0));
  return all;
}

// The inputs in the soup's canonical order (by fingerprint), which the vector rules' tie-breaks
// and the contribution indices follow.
std::vector<Vector> canonical(const std::vector<Vector>& xs,
                              const std::vector<std::string>& paths) {
  std::vector<size_t> order = all_of(xs.size());
  std::vector<std::string> fingerprints;
  for (const std::string& path : paths) fingerprints.push_back(adapter_fingerprint(path));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return fingerprints[a] < fingerprints[b]; });
  std::vector<Vector> sorted;
  for (size_t k : order) sorted.push_back(xs[k]);
  return sorted;
}

void expect_close(const Vector& ours, const Vector& reference, double tolerance, const char* what) {
  ASSERT_EQ(ours.size(), reference.size());
  double scale = 0, worst = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    scale = std::max(scale, std::abs(reference[i]));
    worst = std::max(worst, std::abs(ours[i] - reference[i]));
  }
  EXPECT_LE(worst, tolerance * scale) << what << ": worst difference " << worst << " of " << scale;
}

// ---- the tests ---------------------------------------------------------------------------------

TEST_F(SoupTest, CoordinateRulesMatchTheReference) {
  const std::vector<Vector> xs = canonical(contributions(), paths_);
  SoupParams p;
  p.method = SoupMethod::mean;
  expect_close(soup(p), mean_of(xs, all_of(xs.size())), 1e-6, "mean");
  p.method = SoupMethod::median;
  expect_close(soup(p), coordinatewise(xs, reference_median), 1e-6, "median");
  p.method = SoupMethod::trimmed_mean;
  p.trim = 0.3;
  expect_close(soup(p), coordinatewise(xs, [](Vector v) { return reference_trimmed_mean(v, 0.3); }),
               1e-6, "trimmed-mean");
  // Sign rules: the scale of a contribution is its mean |δ| over the tensor.
  const std::vector<std::string> names = tensor_names();
  Vector majority, vote;
  size_t offset = 0;
  for (const std::string& name : names) {
    const size_t size = name == "model.norm.weight" ? size_t(base_->config().hidden_size)
                                                    : size_t(base_->find(name)->numel());
    Vector scales;
    for (const Vector& x : xs) {
      double sum = 0;
      for (size_t i = offset; i < offset + size; ++i) sum += std::abs(x[i]);
      scales.push_back(sum / double(size));
    }
    for (size_t i = offset; i < offset + size; ++i) {
      int positive = 0;
      Vector signs;
      for (const Vector& x : xs) {
        positive += x[i] >= 0;
        signs.push_back(x[i] >= 0 ? 1.0 : -1.0);
      }
      const double median_scale = reference_median(scales);
      majority.push_back(2 * positive >= int(xs.size()) ? median_scale : -median_scale);
      vote.push_back(reference_trimmed_mean(signs, 0.3) * reference_trimmed_mean(scales, 0.3));
    }
    offset += size;
  }
  p.method = SoupMethod::sign_majority;
  expect_close(soup(p), majority, 1e-6, "sign-majority");
  p.method = SoupMethod::sign_vote;
  expect_close(soup(p), vote, 1e-6, "sign-vote");
}

// Scales per row: the packed-sign kernels then take the contributions in γ order row by row.
TEST_F(SoupTest, PerRowScalesMatchTheReference) {
  std::vector<std::string> paths;
  for (int k = 0; k < 21; ++k) paths.push_back(write_contribution(k, k >= 15, true));
  const std::vector<Vector> xs = canonical(contributions(paths), paths);
  SoupParams p;
  p.method = SoupMethod::mean;
  expect_close(soup(p, true, paths), mean_of(xs, all_of(xs.size())), 1e-6, "mean");
  p.method = SoupMethod::median;
  expect_close(soup(p, true, paths), coordinatewise(xs, reference_median), 1e-6, "median");
  p.method = SoupMethod::trimmed_mean;
  p.trim = 0.2;
  expect_close(soup(p, true, paths),
               coordinatewise(xs, [](Vector v) { return reference_trimmed_mean(v, 0.2); }), 1e-6,
               "trimmed-mean");
}

TEST_F(SoupTest, VectorRulesMatchTheReference) {
  const std::vector<Vector> xs = canonical(contributions(), paths_);
  const size_t n = xs.size();
  SoupParams p;
  p.byzantine = kPoisoned;
  p.method = SoupMethod::krum;
  const std::vector<Vector> distances = pairwise(xs);
  const std::vector<double> scores = reference_krum_scores(distances, all_of(n), kPoisoned);
  expect_close(soup(p), mean_of(xs, lowest_scores(scores, all_of(n), 1)), 1e-6, "krum");
  p.method = SoupMethod::multi_krum;
  p.keep = 40;
  expect_close(soup(p), mean_of(xs, lowest_scores(scores, all_of(n), 40)), 1e-6, "multi-krum");

  // Bulyan with f = 24 (n ≥ 4f + 3): n − 2f rounds of Krum, then per coordinate the n − 4f
  // selected values closest to their median.
  p.method = SoupMethod::bulyan;
  p.byzantine = 24;
  std::vector<size_t> pool = all_of(n), selected;
  while (selected.size() < n - 48) {
    const size_t winner =
        lowest_scores(reference_krum_scores(distances, pool, 24), pool, 1).front();
    selected.push_back(winner);
    pool.erase(std::find(pool.begin(), pool.end(), winner));
  }
  std::sort(selected.begin(), selected.end());
  std::vector<Vector> chosen;
  for (size_t k : selected) chosen.push_back(xs[k]);
  const Vector bulyan = coordinatewise(chosen, [](Vector v) {
    Vector sorted = v;
    const double median = reference_median(sorted);
    std::stable_sort(sorted.begin(), sorted.end());
    std::stable_sort(sorted.begin(), sorted.end(), [median](double a, double b) {
      return std::abs(a - median) < std::abs(b - median);
    });
    return std::accumulate(sorted.begin(), sorted.begin() + long(v.size() - 48), 0.0) /
           double(v.size() - 48);
  });
  expect_close(soup(p), bulyan, 1e-5, "bulyan");

  // Geometric median: Weiszfeld on the vectors themselves, from the mean, until it stops moving.
  Vector z = mean_of(xs, all_of(n));
  for (int iteration = 0; iteration < 1000; ++iteration) {
    Vector next(z.size(), 0.0);
    double total = 0;
    for (const Vector& x : xs) {
      const double w = 1.0 / std::max(1e-12, std::sqrt(distance2(x, z)));
      total += w;
      for (size_t i = 0; i < z.size(); ++i) next[i] += w * x[i];
    }
    for (double& v : next) v /= total;
    const double moved = std::sqrt(distance2(next, z));
    z = next;
    if (moved < 1e-12) break;
  }
  p.method = SoupMethod::geometric_median;
  p.iterations = 0;
  expect_close(soup(p), z, 1e-4, "geometric-median");

  // Centered clipping from zero, radius the median norm, three steps.
  Vector norms;
  for (const Vector& x : xs) norms.push_back(std::sqrt(distance2(x, Vector(x.size(), 0.0))));
  const double radius = reference_median(norms);
  Vector v(xs[0].size(), 0.0);
  for (int step = 0; step < 3; ++step) {
    Vector next = v;
    for (const Vector& x : xs) {
      const double d = std::sqrt(distance2(x, v));
      const double c = d > radius ? radius / d : 1.0;
      for (size_t i = 0; i < v.size(); ++i) next[i] += c * (x[i] - v[i]) / double(n);
    }
    v = next;
  }
  p.method = SoupMethod::centered_clip;
  expect_close(soup(p), v, 1e-5, "centered-clip");
}

// The poisoned 30% flip and scale the honest direction: the mean follows them, the robust rules
// stay with the honest majority.
TEST_F(SoupTest, RobustRulesResistThePoisonedThirtyPercent) {
  const std::vector<Vector> all = contributions();
  const std::vector<Vector> honest(all.begin(), all.begin() + kHonest);
  const Vector target = mean_of(honest, all_of(kHonest));
  const double honest_norm = std::sqrt(distance2(target, Vector(target.size(), 0.0)));
  SoupParams p;
  p.method = SoupMethod::mean;
  const double mean_error = std::sqrt(distance2(soup(p), target));
  EXPECT_GT(mean_error, 2 * honest_norm);  // dragged past the origin
  SoupParams robust[6];
  robust[0].method = SoupMethod::median;
  robust[1].method = SoupMethod::trimmed_mean;
  robust[1].trim = 0.35;
  robust[2].method = SoupMethod::krum;
  robust[2].byzantine = kPoisoned;
  robust[3].method = SoupMethod::multi_krum;
  robust[3].byzantine = kPoisoned;
  robust[3].keep = 50;
  robust[4].method = SoupMethod::geometric_median;
  robust[5].method = SoupMethod::sign_majority;
  for (const SoupParams& params : robust) {
    SCOPED_TRACE(soup_method_name(params.method));
    const Vector out = soup(params);
    EXPECT_LT(std::sqrt(distance2(out, target)), honest_norm);
  }
}

TEST_F(SoupTest, BitOutputIsTheReQuantisedAggregate) {
  SoupParams p;
  p.method = SoupMethod::median;
  const Vector exact = soup(p, /*dense_output=*/true);
  const Vector bits = soup(p, /*dense_output=*/false);
  // Per compressed tensor: signs of the aggregate (0 → +1) times mean |aggregate|; the exact
  // tensor (the norm) stays exact.
  size_t offset = 0;
  for (const std::string& name : tensor_names()) {
    const bool compressed = name != "model.norm.weight";
    const size_t size =
        compressed ? size_t(base_->find(name)->numel()) : size_t(base_->config().hidden_size);
    double mean_abs = 0;
    for (size_t i = offset; i < offset + size; ++i) mean_abs += std::abs(exact[i]) / double(size);
    for (size_t i = offset; i < offset + size; ++i) {
      const double expected = compressed ? (exact[i] >= 0 ? mean_abs : -mean_abs) : exact[i];
      ASSERT_NEAR(bits[i], expected, 1e-6 * std::max(1e-3, std::abs(expected))) << name << " " << i;
    }
    offset += size;
  }
}

TEST_F(SoupTest, SameInputsInAnyOrderAndThreadCountGiveTheSameBytes) {
  for (SoupMethod method :
       {SoupMethod::mean, SoupMethod::median, SoupMethod::geometric_median, SoupMethod::bulyan}) {
    SCOPED_TRACE(soup_method_name(method));
    SoupOptions options;
    options.params.method = method;
    options.params.byzantine = 5;
    options.quiet = true;
    std::vector<std::string> shuffled = paths_;
    std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937_64(1));
    set_threads(1);
    make_soup(SoupInputs(paths_), *base_, options, scratch_ / "a.bitdelta", true);
    set_threads(2);
    const SoupReport report =
        make_soup(SoupInputs(shuffled), *base_, options, scratch_ / "b.bitdelta", true);
    set_threads(0);
    EXPECT_EQ(read_file(scratch_ / "a.bitdelta"), read_file(scratch_ / "b.bitdelta"));
    EXPECT_EQ(report.version, adapter_fingerprint(scratch_ / "b.bitdelta"));
    const AdapterFile file(scratch_ / "b.bitdelta");
    EXPECT_EQ(file.info().extra.at("soup.method"), soup_method_name(method));
    EXPECT_EQ(nlohmann::json::parse(file.info().extra.at("soup.inputs")).size(), paths_.size());
  }
}

// The poisoned 30% are 10 times the honest norm and point the other way: screening flags every
// one of them, by norm, cosine and sign agreement, and none of the honest.
TEST_F(SoupTest, ScreenFlagsThePoisonedAndNoneOfTheHonest) {
  const SoupInputs inputs(paths_);
  const std::vector<ScreenEntry> entries = screen_contributions(inputs);
  ASSERT_EQ(entries.size(), paths_.size());
  for (size_t k = 0; k < entries.size(); ++k) {
    const std::string& path = inputs.contributions()[k].path;
    const int index = std::stoi(path.substr(path.rfind("/c") + 2));
    SCOPED_TRACE(path);
    EXPECT_EQ(entries[k].flagged(), index >= kHonest);
    if (index >= kHonest) {
      EXPECT_GT(entries[k].norm_z, kScreenThreshold);
      EXPECT_LT(entries[k].cosine, 0);
      EXPECT_LT(entries[k].agreement_z, -kScreenThreshold);
      EXPECT_EQ(entries[k].reasons.size(), 3u);
    }
  }
  // Robust z-scores: the modified z of Iglewicz and Hoaglin.
  const std::vector<double> z = robust_z_scores({1, 2, 3, 4, 100});
  EXPECT_NEAR(z[4], 0.6745 * 97 / 1, 1e-12);  // median 3, MAD 1
  EXPECT_EQ(robust_z_scores({2, 2, 2})[1], 0.0);
}

TEST(Attribution, BasisPointsSumToExactlyTenThousand) {
  EXPECT_EQ(to_basis_points({1, 1, 1}), (std::vector<int64_t>{3334, 3333, 3333}));  // ties: first
  EXPECT_EQ(to_basis_points({3, -2, 1}), (std::vector<int64_t>{7500, 0, 2500}));    // clipped
  EXPECT_EQ(to_basis_points({-1, 0}), (std::vector<int64_t>{5000, 5000}));          // nobody helps
  std::mt19937_64 rng(4);
  for (int trial = 0; trial < 100; ++trial) {
    std::vector<double> values(1 + rng() % 30);
    for (double& v : values) v = double(rng() % 1000) / 7.0 - 20;
    const std::vector<int64_t> points = to_basis_points(values);
    EXPECT_EQ(std::accumulate(points.begin(), points.end(), int64_t(0)), 10000);
    for (size_t k = 0; k < values.size(); ++k) {
      if (values[k] <= 0 && *std::max_element(values.begin(), values.end()) > 0) {
        EXPECT_EQ(points[k], 0);
      }
      EXPECT_GE(points[k], 0);
    }
  }
}

TEST_F(SoupTest, ParametersThatDoNotFitAreRefused) {
  SoupParams p;
  p.method = SoupMethod::krum;
  p.byzantine = 49;
  test::expect_error([&] { check_soup_params(p, 100); }, {"more than 2f + 2 = 100", "got 100"});
  p.method = SoupMethod::bulyan;
  p.byzantine = 25;
  test::expect_error([&] { check_soup_params(p, 100); }, {"at least 4f + 3 = 103"});
  p.method = SoupMethod::trimmed_mean;
  p.trim = 0.5;
  test::expect_error([&] { check_soup_params(p, 100); }, {"--trim must lie in [0, 0.5)"});
  p.method = SoupMethod::multi_krum;
  p.byzantine = 1;
  p.keep = 0;
  test::expect_error([&] { check_soup_params(p, 10); }, {"--keep must lie in [1, 10]"});
  test::expect_error([] { parse_soup_method("average"); }, {"unknown soup method 'average'"});
}

}  // namespace
}  // namespace bd
