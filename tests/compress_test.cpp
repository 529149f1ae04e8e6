// BitDelta compression in the library: sign packing on odd shapes and exact zeros, the
// optimality of mean |δ|, reconstruction (apply's, of signs and of exact deltas), compress_delta
// on small checkpoint pairs and on a larger one packed on threads (signs, scales, exact deltas
// and fingerprints against the test's own scalar computation), every refusal, and
// MappedFile::drop_pages. Signs and reconstructions are compared bit for bit.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "checkpoint_pair.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/threads.h"
#include "delta/apply.h"
#include "delta/compress.h"
#include "io/checkpoint.h"
#include "kernels/parallel.h"
#include "kernels/sign_matmul.h"
#include "kernels/sign_pack.h"
#include "test_util.h"

namespace bd {
namespace {

using test::ScratchDir;

// Values of a [rows, in] matrix stored in dtype, and their exact F32 widening.
struct Stored {
  std::vector<uint8_t> bytes;
  std::vector<float> f32;
};

Stored store(const std::vector<float>& values, DType dtype) {
  Stored s{std::vector<uint8_t>(values.size() * dtype_size(dtype)),
           std::vector<float>(values.size())};
  from_f32(dtype, values.data(), s.bytes.data(), values.size());
  to_f32(dtype, s.bytes.data(), s.f32.data(), values.size());
  return s;
}

// The test's own packing: bit j % 8 of byte j / 8 of row r is set iff δ[r, j] >= 0.
std::vector<uint8_t> expected_bits(const std::vector<float>& delta, int64_t rows, int64_t in) {
  const int64_t row_bytes = (in + 7) / 8;
  std::vector<uint8_t> bits(size_t(rows * row_bytes), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < in; ++j)
      if (delta[size_t(r * in + j)] >= 0.0f) bits[size_t(r * row_bytes + j / 8)] |= 1 << (j % 8);
  return bits;
}

struct Shape2 {
  int64_t rows, in;
};
const Shape2 kOddShapes[] = {{1, 1},  {1, 9},  {5, 1},  {3, 7},   {4, 8},
                             {2, 63}, {2, 64}, {3, 65}, {2, 100}, {1, 1000}};
const DType kFloatTypes[] = {DType::F32, DType::BF16, DType::F16};

TEST(SignPack, PacksSignsAndAbsSumsOnOddShapesInEveryDtype) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (DType dtype : kFloatTypes) {
    for (const Shape2& shape : kOddShapes) {
      SCOPED_TRACE(cat(dtype_name(dtype), " [", shape.rows, ", ", shape.in, "]"));
      const size_t n = size_t(shape.rows * shape.in);
      std::vector<float> base_values(n), tuned_values(n);
      for (size_t i = 0; i < n; ++i) {
        base_values[i] = normal(rng);
        // Every 5th element unchanged: δ = 0 exactly, which is +1.
        tuned_values[i] = i % 5 == 0 ? base_values[i] : base_values[i] + 0.1f * normal(rng);
      }
      const Stored base = store(base_values, dtype), tuned = store(tuned_values, dtype);
      std::vector<float> delta(n);
      for (size_t i = 0; i < n; ++i) delta[i] = tuned.f32[i] - base.f32[i];

      std::vector<uint8_t> bits(size_t(shape.rows * sign_row_bytes(shape.in)), 0xAA);
      std::vector<double> sums(size_t(shape.rows));
      pack_delta_signs(dtype, base.bytes.data(), tuned.bytes.data(), shape.rows, shape.in,
                       bits.data(), sums.data());
      EXPECT_EQ(bits, expected_bits(delta, shape.rows, shape.in));
      for (int64_t r = 0; r < shape.rows; ++r) {
        double want = 0;
        for (int64_t j = 0; j < shape.in; ++j)
          want += std::fabs(double(delta[size_t(r * shape.in + j)]));
        EXPECT_NEAR(sums[size_t(r)], want, 1e-6 * want + 1e-12) << "row " << r;
      }

      // Round trip: base 0 + 1·S gives back ±1 = sign(δ) (S = +1 where δ >= 0).
      const std::vector<float> zeros(n, 0.0f), one = {1.0f};
      std::vector<float> unpacked(n);
      add_scaled_signs(DType::F32, zeros.data(), bits.data(), one.data(), false, shape.rows,
                       shape.in, DType::F32, unpacked.data());
      for (size_t i = 0; i < n; ++i)
        ASSERT_EQ(unpacked[i], delta[i] >= 0 ? 1.0f : -1.0f) << "element " << i;
    }
  }
}

TEST(SignPack, RowBlocksPackLikeTheWholeMatrix) {
  const int64_t rows = 9, in = 37;
  std::vector<float> base(size_t(rows * in)), tuned(base.size());
  for (size_t i = 0; i < base.size(); ++i) {
    base[i] = std::sin(float(i));
    tuned[i] = std::cos(float(i));
  }
  const int64_t row_bytes = sign_row_bytes(in);
  std::vector<uint8_t> whole(size_t(rows * row_bytes)), blocks(whole.size());
  std::vector<double> whole_sums(static_cast<size_t>(rows)), block_sums(static_cast<size_t>(rows));
  pack_delta_signs(DType::F32, base.data(), tuned.data(), rows, in, whole.data(),
                   whole_sums.data());
  for (int64_t first = 0; first < rows; first += 4) {
    const int64_t count = std::min<int64_t>(4, rows - first);
    pack_delta_signs(DType::F32, base.data() + first * in, tuned.data() + first * in, count, in,
                     blocks.data() + first * row_bytes, block_sums.data() + first);
  }
  EXPECT_EQ(whole, blocks);
  EXPECT_EQ(whole_sums, block_sums);
}

TEST(SignPack, ExactZeroDeltasAreAllPlusOne) {
  for (const Shape2& shape : kOddShapes) {
    std::vector<float> same(size_t(shape.rows * shape.in), 0.25f);
    std::vector<uint8_t> bits(size_t(shape.rows * sign_row_bytes(shape.in)));
    std::vector<double> sums(size_t(shape.rows), -1.0);
    pack_delta_signs(DType::F32, same.data(), same.data(), shape.rows, shape.in, bits.data(),
                     sums.data());
    EXPECT_EQ(bits, expected_bits(std::vector<float>(same.size(), 0.0f), shape.rows, shape.in));
    for (double sum : sums) EXPECT_EQ(sum, 0.0);
  }
}

TEST(SignPack, NonFiniteDeltasShowInTheSums) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> base = {1, 2, 3, 4, 3e38f, 6};
  const std::vector<float> tuned = {1, std::nanf(""), 3, 4, -3e38f, inf};
  std::vector<uint8_t> bits(6);
  std::vector<double> sums(6);
  pack_delta_signs(DType::F32, base.data(), tuned.data(), 6, 1, bits.data(), sums.data());
  EXPECT_TRUE(std::isfinite(sums[0]));
  EXPECT_TRUE(std::isnan(sums[1]));
  EXPECT_TRUE(std::isinf(sums[4]));  // −3e38 − 3e38 overflows F32
  EXPECT_TRUE(std::isinf(sums[5]));
}

// ‖δ − γ·S‖² in double, S = sign(δ) with sign(0) = +1.
double sign_residual(const std::vector<float>& delta, int64_t first, int64_t count, double gamma) {
  double sum = 0;
  for (int64_t i = first; i < first + count; ++i) {
    const double s = delta[size_t(i)] >= 0 ? 1.0 : -1.0;
    sum += (delta[size_t(i)] - gamma * s) * (delta[size_t(i)] - gamma * s);
  }
  return sum;
}

TEST(SignPack, MeanAbsDeltaIsTheL2OptimalScale) {
  const int64_t rows = 6, in = 45;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> base(size_t(rows * in)), tuned(base.size()), delta(base.size());
  for (size_t i = 0; i < base.size(); ++i) {
    base[i] = normal(rng);
    // Rows of different magnitudes, so per-row and per-matrix scales differ.
    tuned[i] = base[i] + float(1 + i / size_t(in)) * 0.01f * normal(rng);
    delta[i] = tuned[i] - base[i];
  }
  std::vector<uint8_t> bits(size_t(rows * sign_row_bytes(in)));
  std::vector<double> sums(static_cast<size_t>(rows));
  pack_delta_signs(DType::F32, base.data(), tuned.data(), rows, in, bits.data(), sums.data());

  std::vector<float> row_scales(static_cast<size_t>(rows)), matrix_scale(1);
  mean_abs_scales(sums.data(), rows, in, true, row_scales.data());
  mean_abs_scales(sums.data(), rows, in, false, matrix_scale.data());
  for (double step : {1e-3, 1e-2, 1e-1}) {
    const double at = sign_residual(delta, 0, rows * in, matrix_scale[0]);
    EXPECT_LT(at, sign_residual(delta, 0, rows * in, matrix_scale[0] * (1 + step)));
    EXPECT_LT(at, sign_residual(delta, 0, rows * in, matrix_scale[0] * (1 - step)));
    for (int64_t r = 0; r < rows; ++r) {
      const double row_at = sign_residual(delta, r * in, in, row_scales[size_t(r)]);
      EXPECT_LT(row_at, sign_residual(delta, r * in, in, row_scales[size_t(r)] * (1 + step)));
      EXPECT_LT(row_at, sign_residual(delta, r * in, in, row_scales[size_t(r)] * (1 - step)));
    }
  }
}

// Exact comparison: one flipped sign moves an F32 output by 2γ (a BF16 or F16 output may round a
// small 2γ away). [129, 257] is above kMinParallelWork, so its rows are rebuilt on threads;
// [3, 21] on one.
TEST(SignPack, AddScaledSignsRoundsOnceToTheOutputDtype) {
  for (const Shape2& shape : {Shape2{3, 21}, Shape2{129, 257}}) {
    const int64_t rows = shape.rows, in = shape.in, row_bytes = sign_row_bytes(in);
    SCOPED_TRACE(cat("[", rows, ", ", in, "]"));
    ASSERT_EQ(rows * in >= kMinParallelWork, rows == 129);
    std::vector<float> values(size_t(rows * in));
    for (size_t i = 0; i < values.size(); ++i) values[i] = 0.37f * std::sin(1.3f * float(i));
    std::vector<uint8_t> bits(size_t(rows * row_bytes));
    for (size_t b = 0; b < bits.size(); ++b) bits[b] = uint8_t(b * 37 + 11);
    const uint8_t last_byte_mask = uint8_t((1u << (in - 8 * (row_bytes - 1))) - 1);
    for (int64_t r = 0; r < rows; ++r)  // padding bits stay 0
      bits[size_t(r * row_bytes + row_bytes - 1)] &= last_byte_mask;
    std::vector<float> scales(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r)
      scales[size_t(r)] = std::array{0.0123f, 0.000456f, 0.0789f}[r % 3];
    for (DType base_dtype : kFloatTypes) {
      const Stored base = store(values, base_dtype);
      for (DType out_dtype : kFloatTypes) {
        for (bool per_row : {false, true}) {
          std::vector<uint8_t> got(values.size() * dtype_size(out_dtype));
          add_scaled_signs(base_dtype, base.bytes.data(), bits.data(), scales.data(), per_row, rows,
                           in, out_dtype, got.data());
          std::vector<float> sum(values.size());
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < in; ++j) {
              const bool plus = (bits[size_t(r * row_bytes + j / 8)] >> (j % 8)) & 1;
              const float gamma = scales[per_row ? size_t(r) : 0];
              sum[size_t(r * in + j)] = base.f32[size_t(r * in + j)] + (plus ? gamma : -gamma);
            }
          std::vector<uint8_t> want(got.size());
          from_f32(out_dtype, sum.data(), want.data(), sum.size());
          EXPECT_EQ(got, want) << dtype_name(base_dtype) << " -> " << dtype_name(out_dtype)
                               << (per_row ? " per row" : " per matrix");
        }
      }
    }
  }
}

// apply's reconstruction of an exact tensor: widen(base) + widen(delta) in F32, rounded once to
// the output dtype, bit for bit; below kMinParallelWork on one thread, above it (three chunks,
// the last one short) on threads. A tensor with neither signs nor delta is the base converted.
TEST(ReconstructTensor, ExactDeltasOnBothSidesOfTheThreadThreshold) {
  for (const Shape2& shape : {Shape2{40, 25}, Shape2{160, 250}}) {
    const size_t n = size_t(shape.rows * shape.in);
    SCOPED_TRACE(cat("[", shape.rows, ", ", shape.in, "]"));
    ASSERT_EQ(int64_t(n) >= kMinParallelWork, shape.rows == 160);
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> base_values(n), delta_values(n);
    for (size_t i = 0; i < n; ++i) {
      base_values[i] = normal(rng);
      delta_values[i] = 1e-3f * normal(rng);
    }
    for (DType dtype : kFloatTypes) {
      const Stored base = store(base_values, dtype), delta = store(delta_values, dtype);
      const TensorView base_view{dtype, {shape.rows, shape.in}, base.bytes.data()};
      const AdapterExact exact{"model.norm.weight",
                               TensorView{dtype, {shape.rows, shape.in}, delta.bytes.data()}};
      for (DType out_dtype : kFloatTypes) {
        SCOPED_TRACE(cat(dtype_name(dtype), " -> ", dtype_name(out_dtype)));
        std::vector<float> sum(n);
        for (size_t i = 0; i < n; ++i) sum[i] = base.f32[i] + delta.f32[i];
        std::vector<uint8_t> want(n * dtype_size(out_dtype)), got(want.size());
        from_f32(out_dtype, sum.data(), want.data(), n);
        reconstruct_tensor(base_view, nullptr, &exact, out_dtype, got.data());
        EXPECT_EQ(got, want) << "exact delta";
        from_f32(out_dtype, base.f32.data(), want.data(), n);
        reconstruct_tensor(base_view, nullptr, nullptr, out_dtype, got.data());
        EXPECT_EQ(got, want) << "base only";
      }
    }
  }
}

TEST(CompressWeights, AreTheSevenBlockProjections) {
  for (const char* part : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                           "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"})
    EXPECT_TRUE(is_compressed_weight(cat("model.layers.12.", part, ".weight"))) << part;
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                           "model.layers.0.input_layernorm.weight",
                           "model.layers.x.mlp.up_proj.weight", "model.layers..mlp.up_proj.weight",
                           "model.layers.0.mlp.up_proj.bias", "layers.0.mlp.up_proj.weight"})
    EXPECT_FALSE(is_compressed_weight(name)) << name;
}

// compress_delta against the test's own computation on a written checkpoint pair.
void check_compression(DType dtype, bool per_row,
                       const LlamaConfig& config = test::small_llama_config()) {
  SCOPED_TRACE(cat(dtype_name(dtype), per_row ? " per row" : " per matrix"));
  ScratchDir scratch;
  test::PairSpec spec;
  spec.config = config;
  spec.dtype = dtype;
  spec.change_embeddings = true;
  spec.finetune_metadata = {{"privacy.epsilon", "2.5"}, {"train.steps", "10"}};
  test::write_checkpoint_pair(scratch / "base", scratch / "tuned", spec);
  const Checkpoint base(scratch / "base"), tuned(scratch / "tuned");
  CompressOptions options;
  options.per_row = per_row;
  options.owner = "did:lux:alice";
  options.quiet = true;
  CompressedDelta delta = compress_delta(base, tuned, options);

  const int64_t layers = base.config().num_hidden_layers;
  EXPECT_EQ(delta.stats.compressed_tensors, 7 * layers);
  EXPECT_EQ(delta.stats.exact_tensors, 2);  // embeddings and layer 0's input norm
  EXPECT_EQ(delta.stats.unchanged_tensors, delta.stats.tensors - 7 * layers - 2);
  EXPECT_EQ(delta.info.base_fingerprint, base.fingerprint());
  EXPECT_EQ(delta.info.finetune_fingerprint, tuned.fingerprint());
  EXPECT_EQ(delta.info.owner, "did:lux:alice");
  EXPECT_EQ(delta.info.granularity, per_row ? "row" : "matrix");
  EXPECT_EQ(delta.info.scale_mode, "mean");
  EXPECT_EQ(delta.info.privacy, R"({"privacy.epsilon":"2.5"})");

  for (const AdapterMatrix& matrix : delta.matrices) {
    SCOPED_TRACE(matrix.name);
    const std::vector<float> b = to_f32(base.get(matrix.name)), f = to_f32(tuned.get(matrix.name));
    std::vector<float> d(b.size());
    for (size_t i = 0; i < b.size(); ++i) d[i] = f[i] - b[i];
    const std::vector<uint8_t> want = expected_bits(d, matrix.out, matrix.in);
    ASSERT_EQ(matrix.sign.bytes(), want.size());
    EXPECT_EQ(std::memcmp(matrix.sign.data, want.data(), want.size()), 0);
    ASSERT_EQ(matrix.scale.numel(), per_row ? matrix.out : 1);
    for (int64_t s = 0; s < matrix.scale.numel(); ++s) {
      double mean = 0;
      const int64_t first = per_row ? s * matrix.in : 0,
                    count = per_row ? matrix.in : int64_t(d.size());
      for (int64_t i = first; i < first + count; ++i) mean += std::fabs(double(d[size_t(i)]));
      mean /= double(count);
      EXPECT_NEAR(matrix.scale.as<float>()[s], mean, 1e-6 * mean);
    }
  }
  ASSERT_EQ(delta.exact.size(), 2u);
  EXPECT_EQ(delta.exact[0].name, "model.embed_tokens.weight");
  EXPECT_EQ(delta.exact[1].name, "model.layers.0.input_layernorm.weight");
  int64_t rounded = 0;  // elements where base + stored delta does not give back the fine-tune
  for (const AdapterExact& exact : delta.exact) {
    SCOPED_TRACE(exact.name);
    const std::vector<float> b = to_f32(base.get(exact.name)), f = to_f32(tuned.get(exact.name));
    std::vector<float> d(b.size());
    for (size_t i = 0; i < b.size(); ++i) d[i] = f[i] - b[i];
    std::vector<uint8_t> want(d.size() * dtype_size(dtype));
    from_f32(dtype, d.data(), want.data(), d.size());
    EXPECT_EQ(exact.delta.dtype, dtype);
    EXPECT_EQ(std::memcmp(exact.delta.data, want.data(), want.size()), 0);
    const std::vector<float> stored = to_f32(exact.delta);
    for (size_t i = 0; i < b.size(); ++i) {
      const float sum = b[i] + stored[i];
      uint8_t rebuilt[4], original[4];
      from_f32(dtype, &sum, rebuilt, 1);
      from_f32(dtype, &f[i], original, 1);
      rounded += std::memcmp(rebuilt, original, dtype_size(dtype)) != 0;
    }
  }
  EXPECT_EQ(delta.stats.exact_rounded_elements, rounded);
}

TEST(CompressDelta, MatchesTheTestsOwnComputationF32) {
  check_compression(DType::F32, false);
  check_compression(DType::F32, true);
}
TEST(CompressDelta, MatchesTheTestsOwnComputationBF16) {
  check_compression(DType::BF16, false);
  check_compression(DType::BF16, true);
}
TEST(CompressDelta, MatchesTheTestsOwnComputationF16) {
  check_compression(DType::F16, false);
  check_compression(DType::F16, true);
}

// The pairs above are below kMinParallelWork in every tensor (and the test runs on two threads,
// which leave one to the packer): one thread packs. Here four threads leave two to the packer,
// and the tensors are above the threshold in several blocks of rows: gate/up/down [516, 260]
// and [260, 516] (three blocks of 2¹⁶ elements), the embedding [258, 260] (two).
TEST(CompressDelta, MatchesTheTestsOwnComputationOnThreads) {
  LlamaConfig config = test::small_llama_config();
  config.hidden_size = 260;
  config.intermediate_size = 516;
  config.num_hidden_layers = 1;
  static_assert(260 * 516 > 2 * (int64_t(1) << 16) && 258 * 260 > (int64_t(1) << 16));
  struct Threads {  // restores the thread count however the test ends
    const int saved = num_threads();
    ~Threads() { set_threads(saved); }
  } restore;
  set_threads(4);
  check_compression(DType::F32, true, config);
  check_compression(DType::BF16, false, config);
}

// A pair where `edit` changes the fine-tune's params before it is saved.
class CompressRefusal : public ::testing::Test {
 protected:
  void SetUp() override {
    test::write_checkpoint_pair(scratch_ / "base", scratch_ / "tuned", test::PairSpec{});
  }
  // Rewrites the fine-tune with one element of `name` set to `value`.
  void set_finetune_element(const std::string& name, size_t index, float value) {
    LlamaParams params = LlamaParams::from_checkpoint(Checkpoint(scratch_ / "tuned"));
    params.find(name)[index] = value;
    std::filesystem::remove_all(scratch_ / "tuned");
    test::save_params(scratch_ / "tuned", params, DType::F32, {});
  }
  // compress_delta must refuse the pair with one line holding every piece.
  void expect_refusal(const std::vector<std::string>& pieces,
                      const CompressOptions& options = quiet()) {
    test::expect_error(
        [&] {
          compress_delta(Checkpoint(scratch_ / "base"), Checkpoint(scratch_ / "tuned"), options);
        },
        pieces);
  }
  static CompressOptions quiet() {
    CompressOptions options;
    options.quiet = true;
    return options;
  }
  ScratchDir scratch_;
};

TEST_F(CompressRefusal, NanInALinearDelta) {
  set_finetune_element("model.layers.1.mlp.down_proj.weight", 40, std::nanf(""));
  // Element 40 of a [20, 36] matrix is row 1, column 4.
  expect_refusal({"tensor 'model.layers.1.mlp.down_proj.weight': delta at [1, 4] is nan"});
}

TEST_F(CompressRefusal, InfInAnExactDelta) {
  set_finetune_element("model.norm.weight", 3, std::numeric_limits<float>::infinity());
  expect_refusal({"tensor 'model.norm.weight': delta at [3] is inf", "refusing to compress"});
}

TEST_F(CompressRefusal, ConfigMismatch) {
  LlamaParams params = LlamaParams::from_checkpoint(Checkpoint(scratch_ / "tuned"));
  LlamaConfig config = params.config();
  config.rms_norm_eps = 1e-6;
  LlamaParams other(config);
  std::copy(params.data(), params.data() + params.size(), other.data());
  std::filesystem::remove_all(scratch_ / "tuned");
  test::save_params(scratch_ / "tuned", other, DType::F32, {});
  expect_refusal({"config.json differs from the base's: rms_norm_eps"});
}

TEST_F(CompressRefusal, DtypeMismatch) {
  LlamaParams params = LlamaParams::from_checkpoint(Checkpoint(scratch_ / "tuned"));
  std::filesystem::remove_all(scratch_ / "tuned");
  test::save_params(scratch_ / "tuned", params, DType::BF16, {});
  expect_refusal({"is BF16 [", "here but F32 [", "in the base"});
}

TEST_F(CompressRefusal, TensorNamesMismatch) {
  // An extra tensor the Llama validation tolerates (an old export's RoPE frequencies).
  const Checkpoint tuned(scratch_ / "tuned");
  std::vector<NamedTensor> tensors = tuned.tensors();
  const std::vector<float> inv_freq = {1.0f, 0.1f};
  tensors.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq",
                     TensorView{DType::F32, {2}, inv_freq.data()}});
  write_safetensors(scratch_ / "tuned2.safetensors", tensors, {}, false);
  std::filesystem::rename(scratch_ / "tuned2.safetensors", scratch_ / "tuned/model.safetensors");
  expect_refusal({"tensor 'model.layers.0.self_attn.rotary_emb.inv_freq' is not in the base"});
}

TEST_F(CompressRefusal, IdenticalModels) {
  std::filesystem::remove_all(scratch_ / "tuned");
  std::filesystem::copy(scratch_ / "base", scratch_ / "tuned");
  expect_refusal({"every tensor equals the base's", "no delta to compress"});
}

TEST_F(CompressRefusal, OwnerThatIsNotADidLux) {
  for (const char* owner : {"alice", "did:lux:", "did:web:alice", "did:lux:a b", "did:lux:a:"}) {
    CompressOptions options = quiet();
    options.owner = owner;
    expect_refusal({"--owner '" + std::string(owner) + "' is not a did:lux DID"}, options);
  }
}

TEST(MappedFileDropPages, LeavesTheBytesReadable) {
  ScratchDir scratch;
  std::string contents(3 * 4096 + 100, '\0');
  for (size_t i = 0; i < contents.size(); ++i) contents[i] = char(i * 31 + 7);
  const std::string path = scratch.write("data.bin", contents);
  MappedFile file(path);
  ASSERT_EQ(std::memcmp(file.data(), contents.data(), contents.size()), 0);
  MappedFile::drop_pages(file.data() + 5000, 4000);       // inside the map
  MappedFile::drop_pages(file.data(), file.size());       // all of it
  MappedFile::drop_pages(file.data() + 10, file.size());  // runs past the end: ignored
  EXPECT_EQ(std::memcmp(file.data(), contents.data(), contents.size()), 0);

  // Memory that is not a MappedFile is left alone (MADV_DONTNEED would zero heap pages).
  std::vector<uint8_t> heap(1 << 20, 0x5A);
  MappedFile::drop_pages(heap.data(), heap.size());
  for (uint8_t byte : heap) ASSERT_EQ(byte, 0x5A);
}

}  // namespace
}  // namespace bd
