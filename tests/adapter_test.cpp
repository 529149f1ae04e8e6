// The .bitdelta adapter file: write/read round trip of every metadata field and tensor, and the
// reader's refusals (unknown version, missing or mis-shaped tensors, stray tensors, malformed
// metadata, corrupt files, a base with another fingerprint), each one line naming the file.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "checkpoint_pair.h"
#include "core/error.h"
#include "delta/compress.h"
#include "io/adapter.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace bd {
namespace {

using test::expect_error;
using test::ScratchDir;

// A small adapter in memory: two compressed weights with odd input widths and one exact delta.
struct SmallAdapter {
  AdapterInfo info;
  std::vector<uint8_t> up_bits = {0x01, 0x03, 0xff, 0x00, 0x80, 0x02};  // [3, 2], in = 10
  std::vector<uint8_t> q_bits = {0x12, 0x34, 0x56, 0x78};               // [2, 2], in = 16
  std::vector<float> up_scale = {0.5f, 0.25f, 0.125f}, q_scale = {1.5f, 2.5f};
  std::vector<uint16_t> norm_delta = {0x3c00, 0xbc00, 0x0000, 0x3800};  // F16 [4]
  std::vector<AdapterMatrix> matrices;
  std::vector<AdapterExact> exact;

  SmallAdapter() {
    info.base_fingerprint = std::string(64, 'a');
    info.finetune_fingerprint = std::string(63, 'b') + "c";
    info.owner = "did:lux:z6Mk%20test.user_1";
    info.scale_mode = "distill";
    info.granularity = "row";
    info.privacy = R"({"privacy.delta":"1e-05","privacy.epsilon":"3"})";
    info.tool_version = "9.9.9";
    info.created = "2026-11-27T10:00:00Z";
    info.extra = {{"distill.loss", "kl"}, {"distill.steps", "7"}};
    matrices = {
        {"model.layers.0.mlp.up_proj.weight",
         3,
         10,
         {DType::U8, {3, 2}, up_bits.data()},
         {DType::F32, {3}, up_scale.data()}},
        {"model.layers.0.self_attn.q_proj.weight",
         2,
         16,
         {DType::U8, {2, 2}, q_bits.data()},
         {DType::F32, {2}, q_scale.data()}},
    };
    exact = {{"model.norm.weight", {DType::F16, {4}, norm_delta.data()}}};
  }
  void write(const std::string& path, bool overwrite = false) const {
    write_adapter(path, info, matrices, exact, overwrite);
  }
};

TEST(Adapter, RoundTripsEveryFieldAndTensor) {
  ScratchDir scratch;
  const SmallAdapter written;
  written.write(scratch / "a.bitdelta");
  const AdapterFile adapter(scratch / "a.bitdelta");
  EXPECT_EQ(adapter.path(), scratch / "a.bitdelta");
  const AdapterInfo& info = adapter.info();
  EXPECT_EQ(info.version, kAdapterFormatVersion);
  EXPECT_EQ(info.base_fingerprint, written.info.base_fingerprint);
  EXPECT_EQ(info.finetune_fingerprint, written.info.finetune_fingerprint);
  EXPECT_EQ(info.owner, written.info.owner);
  EXPECT_EQ(info.scale_mode, "distill");
  EXPECT_EQ(info.granularity, "row");
  EXPECT_EQ(info.privacy, written.info.privacy);
  EXPECT_EQ(info.tool_version, "9.9.9");
  EXPECT_EQ(info.created, "2026-11-27T10:00:00Z");
  EXPECT_EQ(info.extra, written.info.extra);

  ASSERT_EQ(adapter.matrices().size(), 2u);  // in name order
  const AdapterMatrix& up = adapter.matrices()[0];
  EXPECT_EQ(up.name, "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(up.out, 3);
  EXPECT_EQ(up.in, 10);
  EXPECT_TRUE(up.per_row());
  EXPECT_EQ(std::memcmp(up.sign.data, written.up_bits.data(), 6), 0);
  EXPECT_EQ(std::memcmp(up.scale.data, written.up_scale.data(), 12), 0);
  EXPECT_EQ(adapter.find_matrix("model.layers.0.self_attn.q_proj.weight")->in, 16);
  EXPECT_EQ(adapter.find_matrix("model.norm.weight"), nullptr);
  ASSERT_EQ(adapter.exact().size(), 1u);
  const AdapterExact* norm = adapter.find_exact("model.norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->delta.dtype, DType::F16);
  EXPECT_EQ(std::memcmp(norm->delta.data, written.norm_delta.data(), 8), 0);

  // Any safetensors reader sees plain tensors and string metadata.
  const SafetensorsFile plain(scratch / "a.bitdelta");
  EXPECT_EQ(plain.names().size(), 5u);
  EXPECT_EQ(plain.metadata().at("bitdelta.format_version"), "1");
  EXPECT_EQ(plain.metadata().at("bitdelta.shapes"),
            R"({"model.layers.0.mlp.up_proj.weight":[3,10],)"
            R"("model.layers.0.self_attn.q_proj.weight":[2,16]})");

  const AdapterSizes sizes = adapter_sizes(adapter.matrices(), adapter.exact());
  EXPECT_EQ(sizes.compressed_parameters, 3 * 10 + 2 * 16);
  EXPECT_EQ(sizes.exact_parameters, 4);
  EXPECT_EQ(sizes.sign_bytes, 10);
  EXPECT_EQ(sizes.scale_bytes, 20);
  EXPECT_EQ(sizes.exact_bytes, 8);
  EXPECT_EQ(sizes.fp16_compressed_bytes(), 2 * 62);
  EXPECT_EQ(sizes.fp16_changed_bytes(), 2 * 66);
}

TEST(Adapter, WriterRefusesAnExistingFileAndWhatTheReaderWouldRefuse) {
  ScratchDir scratch;
  SmallAdapter adapter;
  adapter.write(scratch / "a.bitdelta");
  expect_error([&] { adapter.write(scratch / "a.bitdelta"); }, {"exists"});
  adapter.write(scratch / "a.bitdelta", true);

  adapter.info.owner = "did:example:bob";
  expect_error([&] { adapter.write(scratch / "b.bitdelta"); }, {"not a did:lux DID"});
  adapter = SmallAdapter();
  adapter.info.granularity = "matrix";  // but the scales are per row
  expect_error([&] { adapter.write(scratch / "b.bitdelta"); }, {"granularity 'matrix'"});
  adapter = SmallAdapter();
  adapter.up_bits[1] |= 0x04;  // a padding bit (in = 10: bits 2..7 of each row's second byte)
  expect_error([&] { adapter.write(scratch / "b.bitdelta"); }, {"padding bits"});
  EXPECT_FALSE(std::filesystem::exists(scratch / "b.bitdelta"));
}

TEST(Adapter, OwnerDidSyntax) {
  for (const char* good :
       {"did:lux:alice", "did:lux:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
        "did:lux:main:0x1234abcd", "did:lux:a%3Ab", "did:lux:a.b-c_d"})
    EXPECT_TRUE(valid_owner_did(good)) << good;
  for (const char* bad :
       {"", "did:lux:", "did:lux", "did:web:alice", "DID:lux:alice", "did:lux:a b",
        "did:lux:a:", "did:lux:a%3", "did:lux:a%zz", "did:lux:é", "did:lux:a/b"})
    EXPECT_FALSE(valid_owner_did(bad)) << bad;
}

// A valid adapter's metadata and tensors (owned copies), to corrupt and write raw.
class AdapterCorruption : public ::testing::Test {
 protected:
  void SetUp() override { reset(); }
  // Back to the valid adapter's parts.
  void reset() {
    SmallAdapter().write(scratch_ / "good.bitdelta", true);
    const SafetensorsFile good(scratch_ / "good.bitdelta");
    metadata_ = good.metadata();
    storage_.clear();
    views_.clear();
    for (const NamedTensor& tensor : good.tensors()) {
      const uint8_t* bytes = static_cast<const uint8_t*>(tensor.view.data);
      storage_[tensor.name].assign(bytes, bytes + tensor.view.bytes());
      views_[tensor.name] = tensor.view;
      views_[tensor.name].data = storage_[tensor.name].data();
    }
  }
  // Writes the (edited) parts; the reader must refuse them, naming the file and `fragment`.
  void expect_rejection(const std::string& fragment) {
    std::vector<NamedTensor> tensors;
    for (const auto& [name, view] : views_) tensors.push_back({name, view});
    const std::string path = scratch_ / "bad.bitdelta";
    write_safetensors(path, tensors, metadata_, true);
    expect_error([&] { AdapterFile adapter(path); }, {path + ": ", fragment});
  }

  ScratchDir scratch_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, std::vector<uint8_t>> storage_;
  std::map<std::string, TensorView> views_;
};

const std::string kUp = "model.layers.0.mlp.up_proj.weight";

TEST_F(AdapterCorruption, TheUntouchedCopyIsAccepted) {
  std::vector<NamedTensor> tensors;
  for (const auto& [name, view] : views_) tensors.push_back({name, view});
  write_safetensors(scratch_ / "copy.bitdelta", tensors, metadata_, false);
  EXPECT_EQ(AdapterFile(scratch_ / "copy.bitdelta").matrices().size(), 2u);
}

TEST_F(AdapterCorruption, UnknownVersion) {
  metadata_["bitdelta.format_version"] = "2";
  expect_rejection("unknown adapter format version '2' (this bitdelta reads 1)");
}

TEST_F(AdapterCorruption, NotAnAdapter) {
  metadata_.erase("bitdelta.format_version");
  expect_rejection("not a bitdelta adapter");
}

TEST_F(AdapterCorruption, MissingOrMalformedMetadata) {
  metadata_.erase("bitdelta.base_fingerprint");
  expect_rejection("no 'bitdelta.base_fingerprint'");
  reset();
  metadata_["bitdelta.finetune_fingerprint"] = std::string(64, 'G');
  expect_rejection("bitdelta.finetune_fingerprint must be 64 lowercase hex digits");
  reset();
  metadata_["bitdelta.scale_mode"] = "median";
  expect_rejection("bitdelta.scale_mode must be 'mean' or 'distill'");
  reset();
  metadata_["bitdelta.granularity"] = "column";
  expect_rejection("bitdelta.granularity must be 'matrix' or 'row'");
  reset();
  metadata_["bitdelta.created"] = "yesterday";
  expect_rejection("bitdelta.created must be UTC ISO 8601");
  reset();
  metadata_["bitdelta.owner"] = "alice";
  expect_rejection("is not a did:lux DID");
  reset();
  metadata_["bitdelta.privacy"] = "[1]";
  expect_rejection("bitdelta.privacy must be a JSON object");
  reset();
  metadata_["bitdelta.compression"] = "zstd";
  expect_rejection("unknown metadata key 'bitdelta.compression'");
  reset();
  metadata_["bitdelta.shapes"] = R"({"model.layers.0.mlp.up_proj.weight": [3]})";
  expect_rejection("must be [out, in]");
}

// Shapes are bounded before any size arithmetic (out · ceil(in / 8) with in = 2^62 would overflow).
TEST_F(AdapterCorruption, HostileShapeNumbers) {
  for (const std::string shape : {"[4611686018427387904, 10]", "[3, 4611686018427387904]",
                                  "[16777217, 10]", "[3, -10]", "[18446744073709551615, 10]",
                                  "[3.5, 10]"}) {
    reset();
    metadata_["bitdelta.shapes"] = R"({"model.layers.0.mlp.up_proj.weight": )" + shape + "}";
    expect_rejection("bitdelta.shapes entry for '" + kUp +
                     "' must be [out, in] with both in [1, 16777216]");
  }
}

TEST_F(AdapterCorruption, MissingTensors) {
  views_.erase(kUp + ".scale");
  expect_rejection("weight '" + kUp + "' is listed in bitdelta.shapes but has no " + kUp +
                   ".scale tensor");
  reset();
  views_.erase(kUp + ".sign");
  expect_rejection("has no " + kUp + ".sign tensor");
}

TEST_F(AdapterCorruption, MisShapedTensors) {
  views_[kUp + ".sign"].shape = {2, 3};  // same 6 bytes, wrong shape
  expect_rejection(kUp + ".sign is U8 [2, 3] but a [3, 10] weight needs U8 [3, 2]");
  reset();
  views_[kUp + ".scale"].shape = {1};
  views_[kUp + ".scale"].dtype = DType::F32;
  expect_rejection(kUp + ".scale is F32 [1] but granularity 'row' needs F32 [3]");
  reset();
  views_[kUp + ".scale"].dtype = DType::I32;
  expect_rejection("needs F32 [3]");
  reset();
  views_["model.norm.weight.delta"].dtype = DType::I8;
  views_["model.norm.weight.delta"].shape = {8};
  expect_rejection("model.norm.weight.delta has dtype I8");
}

TEST_F(AdapterCorruption, StrayTensors) {
  static const float extra = 1.0f;
  views_["lm_head.weight.scale"] = TensorView{DType::F32, {1}, &extra};
  expect_rejection("unexpected tensor 'lm_head.weight.scale'");
  reset();
  views_["model.norm.weight"] = TensorView{DType::F32, {1}, &extra};
  expect_rejection("unexpected tensor 'model.norm.weight'");
}

TEST_F(AdapterCorruption, BadScaleValuesAndPaddingBits) {
  reinterpret_cast<float*>(storage_[kUp + ".scale"].data())[1] = std::nanf("");
  expect_rejection(kUp + ".scale[1] is nan");
  reset();
  storage_[kUp + ".sign"][3] |= 0x40;  // row 1's second byte: a padding bit
  expect_rejection(kUp + ".sign row 1 has padding bits set");
}

TEST(AdapterFileErrors, CorruptOrMissingFiles) {
  ScratchDir scratch;
  SmallAdapter().write(scratch / "a.bitdelta");
  std::string bytes = read_file(scratch / "a.bitdelta");
  const std::string truncated = scratch.write("t.bitdelta", bytes.substr(0, bytes.size() - 3));
  expect_error([&] { AdapterFile a(truncated); }, {truncated + ": "});
  const std::string garbage = scratch.write("g.bitdelta", "not a safetensors file at all");
  expect_error([&] { AdapterFile a(garbage); }, {garbage + ": "});
  expect_error([&] { AdapterFile a(scratch / "none.bitdelta"); }, {"cannot open"});
}

// check_base against a real compressed pair.
TEST(AdapterCheckBase, AcceptsItsBaseAndRefusesAnyOther) {
  ScratchDir scratch;
  test::write_checkpoint_pair(scratch / "base", scratch / "tuned", test::PairSpec{});
  const Checkpoint base(scratch / "base"), tuned(scratch / "tuned");
  CompressOptions options;
  options.quiet = true;
  compress_delta(base, tuned, options).write(scratch / "a.bitdelta", false);
  const AdapterFile adapter(scratch / "a.bitdelta");
  adapter.check_base(base);

  expect_error([&] { adapter.check_base(tuned); },
               {scratch / "a.bitdelta: made for the base with fingerprint " + base.fingerprint(),
                tuned.fingerprint()});

  // Another architecture: a wider model, whose weights have other shapes.
  LlamaConfig config = test::small_llama_config();
  config.hidden_size = 24;
  LlamaParams other(config);
  other.init_random(5);
  test::save_params(scratch / "other", other, DType::F32, {});
  expect_error([&] { adapter.check_base(Checkpoint(scratch / "other")); },
               {"in the base " + scratch / "other", "is this the adapter's base?"});

  // The same architecture in another dtype: exact deltas no longer match.
  test::save_params(scratch / "bf16", LlamaParams::from_checkpoint(base), DType::BF16, {});
  expect_error([&] { adapter.check_base(Checkpoint(scratch / "bf16")); },
               {"F32 [20] but the base " + scratch / "bf16" + " has BF16 [20]"});
}

}  // namespace
}  // namespace bd
