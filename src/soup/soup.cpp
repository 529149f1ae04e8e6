#include "soup/soup.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/error.h"
#include "core/progress.h"
#include "io/fingerprint.h"
#include "kernels/sign_rank.h"
#include "soup/soup_group.h"

namespace bd {

namespace {

// Contribution's γ at row r of a sign matrix.
float gamma_at(const AdapterMatrix& m, int64_t r) {
  return m.scale.as<float>()[m.per_row() ? r : 0];
}

// Whether every contribution has one γ for the whole matrix: then a block of rows can be walked
// as one long row (the padding bits that end each row are 0 in every input).
bool one_scale_each(const std::vector<const AdapterMatrix*>& signs) {
  return std::none_of(signs.begin(), signs.end(),
                      [](const AdapterMatrix* m) { return m->per_row(); });
}

// A block of rows [row0, row0 + here) of a tensor that every contribution holds as signs, read
// for the kernels to walk in place (SignRankRows::padded): contribution members[i]'s rows
// contiguous at data + i · stride, from a 64-byte boundary, zero bits after them up to the next.
struct SignBlock {
  const uint8_t* data = nullptr;
  int64_t stride = 0;
};

SignBlock read_sign_block(const SoupInputs& inputs, size_t t, const std::vector<int64_t>& members,
                          int64_t row0, int64_t here) {
  const int64_t bytes = here * ((inputs.tensors()[t].cols + 7) / 8);
  const int64_t stride = sign_rank_padded_stride(bytes);
  // Reused by the thread: see kernels/sign_rank.cpp Scratch.
  static thread_local std::vector<uint64_t> buffer;
  buffer.resize(size_t(int64_t(members.size()) * stride / 8 + 8));
  uint8_t* data = reinterpret_cast<uint8_t*>(buffer.data());
  data += (64 - reinterpret_cast<uintptr_t>(data) % 64) % 64;
  for (size_t i = 0; i < members.size(); ++i) {
    uint8_t* slice = data + int64_t(i) * stride;
    inputs.read_signs(t, size_t(members[i]), row0, here, slice);
    std::memset(slice + bytes, 0, size_t(stride - bytes));
  }
  return {data, stride};
}

// Pass 1 over a block of a tensor every contribution holds as signs: its part of the Gram
// matrix (upper triangle) from the number of coordinates where two contributions' signs differ,
// exact integers: Σ_j γ_a s_aj · γ_b s_bj = γ_a γ_b (m − 2 · differing).
void sign_block_gram(const SoupInputs& inputs, size_t t,
                     const std::vector<const AdapterMatrix*>& signs, int64_t row0, int64_t here,
                     double* gram) {
  const int64_t n = int64_t(signs.size()), cols = inputs.tensors()[t].cols;
  const int64_t row_bytes = (cols + 7) / 8;
  std::vector<int64_t> everyone(static_cast<size_t>(n));
  std::iota(everyone.begin(), everyone.end(), int64_t(0));
  const SignBlock block = read_sign_block(inputs, t, everyone, row0, here);
  std::vector<const uint8_t*> bits(static_cast<size_t>(n));
  std::vector<int64_t> differing(size_t(n * n));
  std::fill_n(gram, n * n, 0.0);
  auto add = [&](int64_t r, int64_t rows) {  // rows [r, r + rows) of the block
    for (int64_t k = 0; k < n; ++k) bits[size_t(k)] = block.data + k * block.stride + r * row_bytes;
    std::fill(differing.begin(), differing.end(), 0);
    sign_rank_disagreements({bits.data(), nullptr, n, rows * row_bytes * 8, rows == here},
                            differing.data());
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = a; b < n; ++b)
        gram[a * n + b] += double(gamma_at(*signs[size_t(a)], row0 + r)) *
                           double(gamma_at(*signs[size_t(b)], row0 + r)) *
                           double(rows * cols - 2 * differing[size_t(a * n + b)]);
  };
  if (one_scale_each(signs)) {
    add(0, here);
  } else {
    for (int64_t r = 0; r < here; ++r) add(r, 1);
  }
}

// Rows per block of a pass over a tensor: kSoupSignBlockBytes of each input when the pass reads
// packed signs (few, large reads), else kSoupBlockCoordinates floats of each input.
int64_t pass_rows(const SoupTensor& tensor, bool signs) {
  if (!signs) return block_rows(tensor);
  return std::max<int64_t>(1, kSoupSignBlockBytes / ((tensor.cols + 7) / 8));
}

// Σ_j |δ_k| over a tensor contribution k holds as signs: its scales alone tell.
double sign_abs_sum(const AdapterMatrix& m) {
  if (!m.per_row()) return double(gamma_at(m, 0)) * double(m.out * m.in);
  double sum = 0;
  for (int64_t r = 0; r < m.out; ++r) sum += double(gamma_at(m, r)) * double(m.in);
  return sum;
}

}  // namespace

SoupStatistics soup_statistics(const SoupInputs& inputs, bool gram, const std::vector<bool>& mine,
                               bool keep_tensor_grams, Progress& progress, int64_t& done) {
  const int64_t n = inputs.count();
  SoupStatistics stats;
  if (gram) stats.gram.assign(size_t(n * n), 0.0);
  stats.abs_sums.resize(inputs.tensors().size());
  if (keep_tensor_grams) stats.tensor_gram.resize(inputs.tensors().size());
  // Dequantised blocks only for tensors that some input holds exactly.
  bool dense = false;
  for (size_t t = 0; t < inputs.tensors().size(); ++t)
    dense = dense || (mine[t] && inputs.sign_matrices(t).empty());
  const size_t block_floats = dense ? size_t(omp_get_max_threads() * n * kSoupBlockCoordinates) : 0;
  std::vector<float> blocks(block_floats);
  std::vector<double> wide(gram ? block_floats : 0);
  std::vector<double> partial_gram(gram ? size_t(kSoupWave * n * n) : 0);
  std::vector<double> partial_abs(size_t(kSoupWave * n));
  for (size_t t = 0; t < inputs.tensors().size(); ++t) {
    if (!mine[t]) continue;
    const SoupTensor& tensor = inputs.tensors()[t];
    std::vector<double> abs_sums(static_cast<size_t>(n), 0.0);
    std::vector<double> tensor_gram(gram ? size_t(n * n) : 0, 0.0);
    // A tensor that every contribution holds as signs: Σ|δ| from the scales, the Gram matrix
    // from the packed bits.
    const std::vector<const AdapterMatrix*> signs = inputs.sign_matrices(t);
    const int64_t rows = pass_rows(tensor, !signs.empty());
    const int64_t blocks_here = (tensor.rows + rows - 1) / rows;
    for (int64_t k = 0; k < n && !signs.empty(); ++k)
      abs_sums[size_t(k)] = sign_abs_sum(*signs[size_t(k)]);
    for (int64_t wave = 0; wave < blocks_here && (gram || signs.empty()); wave += kSoupWave) {
      const int64_t count = std::min(kSoupWave, blocks_here - wave);
#pragma omp parallel for schedule(dynamic)
      for (int64_t w = 0; w < count; ++w) {
        const int64_t row0 = (wave + w) * rows, here = std::min(rows, tensor.rows - row0);
        const int64_t m = here * tensor.cols;
        if (!signs.empty()) {
          sign_block_gram(inputs, t, signs, row0, here, partial_gram.data() + size_t(w * n * n));
          continue;
        }
        float* block =
            blocks.data() + size_t(omp_get_thread_num()) * size_t(n * kSoupBlockCoordinates);
        inputs.read_block(t, row0, here, block);
        for (int64_t k = 0; k < n; ++k) {
          double sum = 0;
          for (int64_t i = 0; i < m; ++i) sum += std::abs(block[k * m + i]);
          partial_abs[size_t(w * n + k)] = sum;
        }
        if (gram) {
          double* values =
              wide.data() + size_t(omp_get_thread_num()) * size_t(n * kSoupBlockCoordinates);
          for (int64_t i = 0; i < n * m; ++i) values[i] = block[i];
          cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, int(n), int(m), 1.0, values, int(m),
                      0.0, partial_gram.data() + size_t(w * n * n), int(n));
        }
      }
      for (int64_t w = 0; w < count; ++w) {
        for (int64_t k = 0; k < n && signs.empty(); ++k)
          abs_sums[size_t(k)] += partial_abs[size_t(w * n + k)];
        if (gram)
          for (int64_t i = 0; i < n; ++i)
            for (int64_t j = i; j < n; ++j)
              tensor_gram[size_t(i * n + j)] += partial_gram[size_t(w * n * n + i * n + j)];
      }
      done += std::min(tensor.rows, (wave + count) * rows) - wave * rows;
      progress.update(done, "statistics");
    }
    if (!gram && !signs.empty()) {
      done += tensor.rows;
      progress.update(done, "statistics");
    }
    inputs.release(t);
    stats.abs_sums[t] = std::move(abs_sums);
    if (keep_tensor_grams) {
      stats.tensor_gram[t] = std::move(tensor_gram);
    } else {
      for (size_t i = 0; i < stats.gram.size(); ++i) stats.gram[i] += tensor_gram[i];
    }
  }
  return stats;
}

namespace {

// One output tensor being built.
struct OutputTensor {
  std::vector<uint8_t> signs;   // bit output of a compressed weight: [rows, ceil(cols/8)]
  std::vector<double> row_abs;  // Σ|aggregate| per row (bit output)
  std::vector<float> values;    // dense output or an exact tensor: the aggregate, F32
};

// The rules that work on packed signs, for a tensor every contribution holds as signs.
bool packed_rule(SoupMethod method) {
  return method != SoupMethod::bulyan;
}

// A vector rule's (or fixed weights') output Σ α_k δ_k: no order needed.
bool weighted_rule(SoupMethod method) {
  return is_vector_rule(method) && method != SoupMethod::bulyan;
}

// Pass 2 over a block of rows of a tensor every contribution holds as signs
// (kernels/sign_rank.h): median, trimmed mean and mean from the signs sorted by γ; the sign
// rules from the trimmed mean of the unit signs (its sign for sign-majority) times their scale;
// the vector rules' Σ α_k δ_k from the selected contributions' signs with weights α_k γ_k, in
// the selected order (the reference's order of summation).
void aggregate_sign_block(const SoupInputs& inputs, size_t t,
                          const std::vector<const AdapterMatrix*>& all_signs,
                          const SoupOptions& options, const VectorChoice& choice,
                          const std::vector<double>& abs_sums, int64_t row0, int64_t here,
                          bool pack, OutputTensor& out) {
  const SoupTensor& tensor = inputs.tensors()[t];
  const bool weighted = weighted_rule(options.params.method);
  std::vector<int64_t> members;  // the contributions aggregated, in canonical order
  if (weighted) {
    members = choice.selected;
  } else {
    for (int64_t k = 0; k < inputs.count(); ++k) members.push_back(k);
  }
  std::vector<const AdapterMatrix*> signs;
  for (int64_t k : members) signs.push_back(all_signs[size_t(k)]);
  const SoupParams& p = options.params;
  const int64_t n = int64_t(signs.size()), cols = tensor.cols;
  const int64_t row_bytes = (cols + 7) / 8, row_bits = 8 * row_bytes;
  const SignBlock block = read_sign_block(inputs, t, members, row0, here);
  const bool sign_rule = is_sign_rule(p.method);
  const int64_t cut = p.method == SoupMethod::trimmed_mean || p.method == SoupMethod::sign_vote
                          ? int64_t(std::floor(p.trim * double(n)))
                          : 0;
  std::vector<const uint8_t*> bits(static_cast<size_t>(n));
  std::vector<float> gammas(static_cast<size_t>(n)), scales(static_cast<size_t>(n)), value_of;
  static thread_local std::vector<float> values;
  std::vector<double> weights(static_cast<size_t>(n));
  std::vector<size_t> order(static_cast<size_t>(n));
  std::vector<float> gamma_of(static_cast<size_t>(n));  // each member's γ at the row
  auto run = [&](int64_t row, int64_t rows) {           // rows [row, row + rows) of the tensor
    // The γ read once per member (n files' scales) rather than in every comparison of the sort:
    // with a scale per row the sort runs once per row.
    for (int64_t k = 0; k < n; ++k) gamma_of[size_t(k)] = gamma_at(*signs[size_t(k)], row);
    std::iota(order.begin(), order.end(), size_t(0));
    if (!sign_rule && !weighted)
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return gamma_of[a] > gamma_of[b]; });
    for (int64_t i = 0; i < n; ++i) {
      const size_t k = order[size_t(i)];
      bits[size_t(i)] = block.data + int64_t(k) * block.stride + (row - row0) * row_bytes;
      gammas[size_t(i)] = sign_rule ? 1.0f : gamma_of[k];
      if (weighted)  // α_k · (±γ_k), as the reference multiplies each value
        weights[size_t(i)] = choice.weights[size_t(choice.selected[k])] * double(gamma_of[k]);
    }
    values.resize(size_t(rows * row_bits));
    const SignRankRows ranked{bits.data(), gammas.data(), n, rows * row_bits, rows == here};
    if (n == 0) {  // nothing selected (no rule's choice is empty): zeros
      std::fill(values.begin(), values.end(), 0.0f);
    } else if (weighted) {
      sign_rank_weighted_sum(ranked, weights.data(), values.data());
    } else if (sign_rule) {
      // Each contribution's scale: its mean |δ| over the row or the tensor. The value depends on
      // the signs only through the count p of positive ones: the majority's sign (a tie is +1),
      // or the trimmed mean of c = n − p values −1 and p values +1, times the rule's scale.
      for (int64_t k = 0; k < n; ++k)
        scales[size_t(k)] = options.per_row ? gamma_at(*signs[size_t(k)], row)
                                            : float(abs_sums[size_t(k)] / double(tensor.numel()));
      std::sort(scales.begin(), scales.end());
      const float scale = sign_rule_scale(p, scales.data(), n);
      value_of.resize(size_t(n + 1));
      for (int64_t positive = 0; positive <= n; ++positive) {
        if (p.method == SoupMethod::sign_majority) {
          value_of[size_t(positive)] = 2 * positive >= n ? scale : -scale;
          continue;
        }
        const int64_t kept_negative = std::clamp(n - positive, cut, n - cut) - cut;
        const int64_t kept_positive = std::clamp(positive, cut, n - cut) - cut;
        value_of[size_t(positive)] =
            float(double(kept_positive - kept_negative) / double(n - 2 * cut)) * scale;
      }
      sign_rank_count_values(ranked, value_of.data(), values.data());
    } else if (p.method == SoupMethod::median) {
      sign_rank_median(ranked, values.data());
    } else {
      sign_rank_trimmed_mean(ranked, cut, values.data());
    }
    for (int64_t q = 0; q < rows; ++q) {
      const float* v = values.data() + q * row_bits;
      if (pack) {
        out.row_abs[size_t(row + q)] =
            sign_rank_pack(v, cols, out.signs.data() + (row + q) * row_bytes);
      } else {
        std::copy(v, v + cols, out.values.data() + (row + q) * cols);
      }
    }
  };
  // One order and one scale for the whole block, or a row at a time.
  if (one_scale_each(signs) || (sign_rule && !options.per_row)) {
    run(row0, here);
  } else {
    for (int64_t r = 0; r < here; ++r) run(row0 + r, 1);
  }
}

// Pass 2 over one tensor: aggregate every block, pack or keep.
void aggregate_tensor(const SoupInputs& inputs, size_t t, const SoupOptions& options,
                      const VectorChoice& choice, const std::vector<double>& abs_sums,
                      bool pack_signs, OutputTensor& out) {
  const SoupTensor& tensor = inputs.tensors()[t];
  const int64_t n = inputs.count(), cols = tensor.cols;
  const int64_t row_bytes = (cols + 7) / 8;
  if (pack_signs) {
    out.signs.assign(size_t(tensor.rows * row_bytes), 0);
    out.row_abs.assign(size_t(tensor.rows), 0.0);
  } else {
    out.values.assign(size_t(tensor.numel()), 0.0f);
  }
  const bool sign_rule = is_sign_rule(options.params.method);
  const std::vector<const AdapterMatrix*> signs = packed_rule(options.params.method)
                                                      ? inputs.sign_matrices(t)
                                                      : std::vector<const AdapterMatrix*>{};
  const int64_t rows = pass_rows(tensor, !signs.empty());
  const int64_t blocks = (tensor.rows + rows - 1) / rows;
  const int threads = omp_get_max_threads();
  std::vector<float> memory(
      signs.empty() ? size_t(threads) * size_t(n * kSoupBlockCoordinates + 3 * n) : 0);

#pragma omp parallel for schedule(dynamic)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t row0 = b * rows, here = std::min(rows, tensor.rows - row0), m = here * cols;
    if (!signs.empty()) {
      aggregate_sign_block(inputs, t, signs, options, choice, abs_sums, row0, here, pack_signs,
                           out);
      continue;
    }
    float* block =
        memory.data() + size_t(omp_get_thread_num()) * size_t(n * kSoupBlockCoordinates + 3 * n);
    float* scales = block + n * kSoupBlockCoordinates;
    float* scratch = scales + n;
    inputs.read_block(t, row0, here, block);
    for (int64_t r = 0; r < here; ++r) {
      if (sign_rule) {  // each contribution's scale: mean |δ| over the row or the whole tensor
        for (int64_t k = 0; k < n; ++k) {
          if (options.per_row) {
            double sum = 0;
            for (int64_t j = 0; j < cols; ++j) sum += std::abs(block[k * m + r * cols + j]);
            scales[k] = float(sum / double(cols));
          } else {
            scales[k] = float(abs_sums[size_t(k)] / double(tensor.numel()));
          }
        }
        std::sort(scales, scales + n);  // the rules take them sorted (soup/rules.h)
      }
      double row_abs = 0;
      for (int64_t j = 0; j < cols; ++j) {
        const float value = aggregate_coordinate(options.params, block + r * cols + j, m, n, scales,
                                                 choice, scratch);
        if (pack_signs) {
          row_abs += std::abs(double(value));
          if (value >= 0)
            out.signs[size_t((row0 + r) * row_bytes + j / 8)] |= uint8_t(1u << (j % 8));
        } else {
          out.values[size_t((row0 + r) * cols + j)] = value;
        }
      }
      if (pack_signs) out.row_abs[size_t(row0 + r)] = row_abs;
    }
  }
}

std::string newest_created(const SoupInputs& inputs) {
  std::string newest;
  for (const SoupContribution& c : inputs.contributions())
    newest = std::max(newest, c.file->info().created);
  return newest;
}

}  // namespace

SoupReport make_soup(const SoupInputs& inputs, const Checkpoint& base, const SoupOptions& options,
                     const std::string& out, bool overwrite,
                     const std::vector<ExcludedInput>& excluded_before) {
  const auto start = std::chrono::steady_clock::now();
  const SoupGroup& group = options.group ? *options.group : single_process();
  const int64_t n = inputs.count();
  if (options.fixed_weights.empty()) check_soup_params(options.params, n);
  const std::string base_fingerprint = base.fingerprint();
  for (const SoupContribution& c : inputs.contributions())
    c.file->check_base(base, base_fingerprint);
  for (const SoupTensor& tensor : inputs.tensors())
    if (!tensor.compressed && base.find(tensor.name)->dtype != tensor.dtype)
      fail(tensor.name, ".delta: the inputs hold ", dtype_name(tensor.dtype), ", the base ",
           dtype_name(base.find(tensor.name)->dtype));

  const bool fixed = !options.fixed_weights.empty();
  if (fixed && int64_t(options.fixed_weights.size()) != n)
    fail("make_soup: ", options.fixed_weights.size(), " weights for ", n, " contributions");
  // Fixed weights run as a vector rule whose choice is given.
  SoupOptions effective = options;
  if (fixed) effective.params = SoupParams{.method = SoupMethod::geometric_median};
  const SoupMethod method = effective.params.method;
  const bool vector = is_vector_rule(method) && !fixed;
  const bool first_pass = vector || (is_sign_rule(method) && !options.per_row);
  // This rank's tensors (all of them in one process).
  const size_t tensor_count = inputs.tensors().size();
  const std::vector<int> owners = tensor_owners(inputs, group.size());
  std::vector<bool> mine(tensor_count);
  int64_t my_rows = 0;
  for (size_t t = 0; t < tensor_count; ++t) {
    mine[t] = owners[t] == group.rank();
    if (mine[t]) my_rows += inputs.tensors()[t].rows;
  }
  Progress progress("soup", my_rows * (first_pass ? 2 : 1), "rows",
                    options.quiet || group.rank() != 0);
  int64_t done = 0;
  SoupReport report;
  report.excluded = excluded_before;
  SoupStatistics stats;
  if (first_pass) {
    const bool shared = group.size() > 1;
    run_together(group, true,
                 [&] { stats = soup_statistics(inputs, vector, mine, shared, progress, done); });
    // Every rank gets every tensor's statistics from its owner and sums the Gram matrices in
    // tensor order, as one process does.
    for (size_t t = 0; t < tensor_count && shared; ++t) {
      stats.abs_sums[t].resize(size_t(n));
      group.broadcast(stats.abs_sums[t].data(), size_t(n), owners[t]);
      if (!vector) continue;
      stats.tensor_gram[t].resize(size_t(n * n));
      group.broadcast(stats.tensor_gram[t].data(), size_t(n * n), owners[t]);
      for (size_t i = 0; i < stats.gram.size(); ++i) stats.gram[i] += stats.tensor_gram[t][i];
      stats.tensor_gram[t] = {};
    }
    for (int64_t i = 0; i < n && vector; ++i)
      for (int64_t j = 0; j < i; ++j) stats.gram[size_t(i * n + j)] = stats.gram[size_t(j * n + i)];
  }
  if (fixed) {
    report.choice.weights = options.fixed_weights;
    for (int64_t k = 0; k < n; ++k)
      if (options.fixed_weights[size_t(k)] != 0) report.choice.selected.push_back(k);
  } else if (vector) {
    report.choice = choose_vectors(effective.params, stats.gram, n);
    for (int64_t k = 0; k < n; ++k) {
      if (std::count(report.choice.selected.begin(), report.choice.selected.end(), k)) continue;
      std::string reason = cat(soup_method_name(method), ": not selected");
      if (!report.choice.scores.empty())
        reason += cat(" (Krum score ", report.choice.scores[size_t(k)], ")");
      const SoupContribution& c = inputs.contributions()[size_t(k)];
      report.excluded.push_back({c.path, c.fingerprint, c.owner, reason});
    }
  }

  // Pass 2, tensor by tensor (this rank's), into the output adapter. Every rank lists every
  // tensor; those of other ranks have shapes but no data here.
  std::vector<OutputTensor> outputs(tensor_count);
  std::vector<AdapterMatrix> matrices;
  std::vector<AdapterExact> exact;
  std::vector<std::vector<float>> scale_memory;
  std::vector<std::vector<uint8_t>> exact_memory;
  run_together(group, true, [&] {
    for (size_t t = 0; t < tensor_count; ++t) {
      const SoupTensor& tensor = inputs.tensors()[t];
      const bool pack = tensor.compressed && !options.dense;
      if (mine[t]) {
        const std::vector<double> no_sums(static_cast<size_t>(n), 0.0);
        aggregate_tensor(inputs, t, effective, report.choice,
                         first_pass ? stats.abs_sums[t] : no_sums, pack, outputs[t]);
        inputs.release(t);
        done += tensor.rows;
        progress.update(done, "aggregating");
      }
      OutputTensor& o = outputs[t];
      if (pack) {
        std::vector<float> scales;
        if (options.per_row) {
          for (double sum : o.row_abs) scales.push_back(float(sum / double(tensor.cols)));
        } else if (mine[t]) {
          double sum = 0;
          for (double row : o.row_abs) sum += row;
          scales.push_back(float(sum / double(tensor.numel())));
        }
        scale_memory.push_back(std::move(scales));
        AdapterMatrix m;
        m.name = tensor.name;
        m.out = tensor.rows;
        m.in = tensor.cols;
        m.sign = TensorView{
            DType::U8, {tensor.rows, (tensor.cols + 7) / 8}, mine[t] ? o.signs.data() : nullptr};
        m.scale = TensorView{DType::F32,
                             {options.per_row ? tensor.rows : 1},
                             mine[t] ? scale_memory.back().data() : nullptr};
        matrices.push_back(m);
      } else {
        const DType dtype = base.find(tensor.name)->dtype;
        std::vector<uint8_t> bytes(mine[t] ? size_t(tensor.numel()) * dtype_size(dtype) : 0);
        if (mine[t]) from_f32(dtype, o.values.data(), bytes.data(), size_t(tensor.numel()));
        o.values = {};
        exact_memory.push_back(std::move(bytes));
        exact.push_back(
            AdapterExact{tensor.name, TensorView{dtype, base.find(tensor.name)->shape,
                                                 mine[t] ? exact_memory.back().data() : nullptr}});
      }
    }
  });
  progress.finish();

  AdapterInfo info;
  info.base_fingerprint = inputs.base_fingerprint();
  info.scale_mode = "mean";
  info.granularity = options.per_row ? "row" : "matrix";
  info.tool_version = BITDELTA_VERSION;
  info.created = newest_created(inputs);  // from the inputs, so the bytes are reproducible
  nlohmann::json params = {{"trim", options.params.trim},
                           {"byzantine", options.params.byzantine},
                           {"keep", options.params.keep},
                           {"clip_radius", options.params.clip_radius},
                           {"iterations", options.params.iterations}};
  nlohmann::json contributors = nlohmann::json::array(), excluded = nlohmann::json::array();
  for (const SoupContribution& c : inputs.contributions())
    contributors.push_back({{"fingerprint", c.fingerprint}, {"owner", c.owner}});
  // Sorted, so that the record does not depend on the order the inputs were given in.
  std::vector<ExcludedInput> sorted = report.excluded;
  std::sort(sorted.begin(), sorted.end(), [](const ExcludedInput& a, const ExcludedInput& b) {
    return std::tie(a.fingerprint, a.owner, a.reason) < std::tie(b.fingerprint, b.owner, b.reason);
  });
  for (const ExcludedInput& e : sorted)
    excluded.push_back({{"fingerprint", e.fingerprint}, {"owner", e.owner}, {"reason", e.reason}});
  info.extra["soup.method"] = fixed ? options.label : soup_method_name(method);
  if (fixed) params = {{"weights", options.fixed_weights}};
  info.extra["soup.params"] = params.dump();
  info.extra["soup.output"] = options.dense ? "dense" : "bit";
  info.extra["soup.inputs"] = contributors.dump();
  info.extra["soup.excluded"] = excluded.dump();
  for (const auto& [key, value] : options.extra_metadata) info.extra[key] = value;

  // Rank 0 creates the file, every rank writes its tensors, rank 0 fills in the version (the
  // fingerprint of the tensors: a soup has no fine-tune, so it is also its finetune_fingerprint)
  // and renames the file into place.
  const bool lead = group.rank() == 0;
  SharedAdapterWriter writer(out, info, matrices, exact, overwrite);
  run_together(group, lead, [&] { writer.create(); });
  try {
    run_together(group, true, [&] { writer.write_tensors(); });
    run_together(group, lead, [&] { report.version = writer.commit(); });
  } catch (...) {
    if (lead) writer.discard();
    throw;
  }

  report.coordinates = inputs.coordinates();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace bd
