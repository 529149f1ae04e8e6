// bitdelta compress, apply and inspect (of adapters) end to end: the adapter and the rebuilt
// checkpoints equal, bit for bit, an independent numpy/PyTorch reference
// (tests/reference/bitdelta_ref.py) for F32, BF16 and F16 checkpoints; the --json reports; the
// calibration-text rules of --scale distill; and every refusal (one line on stderr, non-zero
// exit, no output written).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "checkpoint_pair.h"
#include "core/mapped_file.h"
#include "core/sha256.h"
#include "io/adapter.h"
#include "io/checkpoint.h"
#include "test_util.h"

namespace bd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::expect_refusal;
using test::ScratchDir;
using test::shell_quote;

// A scratch folder holding a base/fine-tune pair.
class CliCompress : public ::testing::Test {
 protected:
  void write_pair(const test::PairSpec& spec) { test::write_checkpoint_pair(base_, tuned_, spec); }
  test::CommandResult run(const std::string& arguments) const {
    return test::run_bitdelta(arguments, scratch_);
  }
  std::string compress_args(const std::string& out) const {
    return "compress --base " + base_ + " --finetuned " + tuned_ + " -o " + out;
  }
  json run_json(const std::string& arguments) const {
    const test::CommandResult result = run(arguments + " --json");
    EXPECT_EQ(result.exit_code, 0) << result.err;
    EXPECT_TRUE(result.err.empty()) << result.err;
    return json::parse(result.out);  // exactly one object
  }

  ScratchDir scratch_;
  const std::string base_ = scratch_ / "base", tuned_ = scratch_ / "tuned";
};

struct Case {
  DType dtype;
  std::string granularity;
};

class CliCompressReference : public CliCompress, public ::testing::WithParamInterface<Case> {};

TEST_P(CliCompressReference, AdapterAndEveryApplyDtypeMatchTheReferenceBitForBit) {
  if (!test::have_torch()) GTEST_SKIP() << "needs /usr/bin/python3 with torch and numpy";
  const Case c = GetParam();
  test::PairSpec spec;
  spec.dtype = c.dtype;
  spec.change_embeddings = true;
  write_pair(spec);
  const std::string adapter = scratch_ / "a.bitdelta";
  const json report =
      run_json(compress_args(adapter) + " --granularity " + c.granularity + " --owner did:lux:t1");
  EXPECT_EQ(report["granularity"], c.granularity);
  EXPECT_EQ(report["compressed_tensors"], 14);
  EXPECT_EQ(report["exact_tensors"], 2);

  std::string outputs;
  for (const char* dtype : {"same", "f32", "bf16", "f16"}) {
    const std::string out = scratch_ / (std::string("applied_") + dtype);
    const json applied = run_json("apply --base " + base_ + " --delta " + adapter + " -o " + out +
                                  " --dtype " + dtype);
    EXPECT_EQ(applied["compressed_tensors"], 14);
    EXPECT_EQ(applied["exact_tensors"], 2);
    EXPECT_EQ(read_file(out + "/tokenizer.json"), read_file(base_ + "/tokenizer.json"));
    outputs += " " + out;
  }
  const test::CommandResult check = test::run_reference(
      "bitdelta_ref.py", "check " + base_ + " " + tuned_ + " " + adapter + outputs, scratch_);
  ASSERT_EQ(check.exit_code, 0) << check.err;
  const json result = json::parse(check.out);
  EXPECT_TRUE(result["compress"]["problems"].empty()) << result["compress"]["problems"];
  EXPECT_EQ(result["compress"]["tensors"].size(), 16u);
  for (const auto& [name, tensor] : result["compress"]["tensors"].items()) {
    EXPECT_EQ(tensor["mismatches"], 0) << name;
    if (tensor["kind"] == "compressed") {
      EXPECT_LT(tensor["scale_max_rel_error"], 2e-6) << name;
    }
  }
  ASSERT_EQ(result["apply"].size(), 4u);
  for (const auto& [out, applied] : result["apply"].items()) {
    EXPECT_TRUE(applied["problems"].empty()) << out << applied["problems"];
    for (const auto& [name, tensor] : applied["tensors"].items())
      EXPECT_EQ(tensor["mismatches"], 0) << out << " " << name << " " << tensor;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CliCompressReference,
                         ::testing::Values(Case{DType::F32, "matrix"}, Case{DType::BF16, "row"},
                                           Case{DType::F16, "row"}),
                         [](const auto& info) {
                           return std::string(dtype_name(info.param.dtype)) + "_" +
                                  info.param.granularity;
                         });

TEST_F(CliCompress, JsonReportsSizesRatiosAndFingerprints) {
  write_pair({});
  const std::string adapter = scratch_ / "a.bitdelta";
  const json r = run_json(compress_args(adapter));
  const Checkpoint base(base_), tuned(tuned_);
  EXPECT_EQ(r["output"], adapter);
  EXPECT_EQ(r["adapter_bytes"], fs::file_size(adapter));
  EXPECT_EQ(r["base_fingerprint"], base.fingerprint());
  EXPECT_EQ(r["finetune_fingerprint"], tuned.fingerprint());
  EXPECT_EQ(r["scale_mode"], "mean");
  EXPECT_EQ(r["granularity"], "matrix");
  EXPECT_TRUE(r["distill"].is_null());
  EXPECT_EQ(r["exact_tensors"], 1);  // layer 0's input norm
  // 21 tensors: embeddings, head, final norm, and per layer 2 norms and 7 linears.
  EXPECT_EQ(r["unchanged_tensors"], 21 - 14 - 1);

  // Every linear of the small model: 2 layers × (q 24×20, k 12×20, v 12×20, o 20×24, gate and
  // up 36×20, down 20×36).
  const int64_t linear = 2 * (24 * 20 + 2 * 12 * 20 + 20 * 24 + 2 * 36 * 20 + 20 * 36);
  const int64_t sign_bytes = 2 * (24 * 3 + 2 * 12 * 3 + 20 * 3 + 2 * 36 * 3 + 20 * 5);
  EXPECT_EQ(r["compressed_parameters"], linear);
  EXPECT_EQ(r["sign_bytes"], sign_bytes);
  EXPECT_EQ(r["scale_bytes"], 14 * 4);
  EXPECT_EQ(r["exact_parameters"], 20);
  EXPECT_EQ(r["exact_bytes"], 20 * 4);
  EXPECT_EQ(r["fp16_bytes_compressed"], 2 * linear);
  EXPECT_EQ(r["fp16_bytes_changed"], 2 * (linear + 20));
  EXPECT_EQ(r["finetune_file_bytes"], fs::file_size(tuned_ + "/model.safetensors"));
  EXPECT_DOUBLE_EQ(r["ratio_compressed_vs_fp16"], 2.0 * linear / (sign_bytes + 14 * 4));
  EXPECT_DOUBLE_EQ(r["ratio_changed_vs_fp16"],
                   2.0 * (linear + 20) / r["adapter_bytes"].get<double>());
  EXPECT_DOUBLE_EQ(r["ratio_finetune_file"],
                   r["finetune_file_bytes"].get<double>() / r["adapter_bytes"].get<double>());
  EXPECT_GT(r["seconds"].get<double>(), 0);

  const AdapterFile file(adapter);
  EXPECT_EQ(file.info().base_fingerprint, base.fingerprint());
  EXPECT_EQ(file.info().tool_version, BITDELTA_VERSION);
  EXPECT_TRUE(file.info().owner.empty());
}

TEST_F(CliCompress, TextOutputAndInspectOfTheAdapter) {
  test::PairSpec spec;
  spec.finetune_metadata = {{"privacy.epsilon", "4"}, {"privacy.delta", "1e-5"}};
  write_pair(spec);
  const std::string adapter = scratch_ / "a.bitdelta";
  const test::CommandResult text =
      run(compress_args(adapter) + " --granularity row --owner did:lux:bob");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("compressed 14 weights"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("wrote " + adapter), std::string::npos) << text.out;
  EXPECT_TRUE(text.err.empty()) << text.err;  // no progress line when stderr is not a terminal

  const json inspect = run_json("inspect " + adapter);
  EXPECT_EQ(inspect["kind"], "adapter");
  const json& a = inspect["adapter"];
  EXPECT_EQ(a["owner"], "did:lux:bob");
  EXPECT_EQ(a["granularity"], "row");
  EXPECT_EQ(a["privacy"], json({{"privacy.delta", "1e-5"}, {"privacy.epsilon", "4"}}));
  EXPECT_EQ(a["file_bytes"], fs::file_size(adapter));
  EXPECT_EQ(a["matrices"].size(), 14u);
  EXPECT_EQ(a["exact"].size(), 1u);
  EXPECT_EQ(a["exact"][0]["name"], "model.layers.0.input_layernorm.weight");
  // Per-row scales of down_proj [20, 36]: 20 values, the first four shown.
  const AdapterFile file(adapter);
  const AdapterMatrix* down = file.find_matrix("model.layers.1.mlp.down_proj.weight");
  json down_summary;
  for (const json& m : a["matrices"])
    if (m["name"] == down->name) down_summary = m["scales"];
  EXPECT_EQ(down_summary["count"], 20);
  ASSERT_EQ(down_summary["first"].size(), 4u);
  EXPECT_EQ(down_summary["first"][1].get<float>(), down->scale.as<float>()[1]);
  float low = 1e9f, high = 0;
  for (int i = 0; i < 20; ++i) {
    low = std::min(low, down->scale.as<float>()[i]);
    high = std::max(high, down->scale.as<float>()[i]);
  }
  EXPECT_EQ(down_summary["min"].get<float>(), low);
  EXPECT_EQ(down_summary["max"].get<float>(), high);
  EXPECT_DOUBLE_EQ(a["ratio_changed_vs_fp16"],
                   a["fp16_bytes_changed"].get<double>() / a["file_bytes"].get<double>());

  const test::CommandResult shown = run("inspect " + adapter);
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  for (const char* piece : {"kind         adapter", "owner        did:lux:bob", "scales per row",
                            "model.layers.1.mlp.down_proj.weight [20, 36]: 20 values",
                            "exact        1 tensors kept exactly", "ratio        "})
    EXPECT_NE(shown.out.find(piece), std::string::npos) << piece << "\n" << shown.out;
}

TEST_F(CliCompress, Refusals) {
  write_pair({});
  const std::string adapter = scratch_ / "a.bitdelta";
  auto expect_nothing_written = [&] { EXPECT_FALSE(fs::exists(adapter)); };

  expect_refusal(run(compress_args(adapter) + " --owner alice"), 2,
                 {"--owner 'alice' is not a did:lux DID"});
  expect_refusal(run(compress_args(adapter) + " --scale median"), 2,
                 {"--scale must be mean or distill"});
  expect_refusal(run(compress_args(adapter) + " --granularity col"), 2,
                 {"--granularity must be matrix or row"});
  expect_refusal(run(compress_args(adapter) + " --calib x.txt"), 2,
                 {"--calib applies only to --scale distill"});
  expect_refusal(run(compress_args(adapter) + " --scale distill --steps 0 --calib x"), 2,
                 {"--steps must be at least 1"});
  expect_refusal(run("compress --base " + base_ + " -o " + adapter), 2, {"--finetuned"});
  expect_nothing_written();

  // A fine-tune of another architecture, and a corrupt one.
  test::save_params(scratch_ / "wide",
                    [] {
                      LlamaConfig config = test::small_llama_config();
                      config.intermediate_size = 40;
                      LlamaParams params(config);
                      params.init_random(2);
                      return params;
                    }(),
                    DType::F32, {});
  expect_refusal(
      run("compress --base " + base_ + " --finetuned " + scratch_ / "wide" + " -o " + adapter), 1,
      {"config.json differs from the base's: intermediate_size is 40 here but 36"});
  std::string bytes = read_file(tuned_ + "/model.safetensors");
  test::write_bytes(tuned_ + "/model.safetensors", bytes.substr(0, bytes.size() - 10));
  expect_refusal(run(compress_args(adapter)), 1, {tuned_ + "/model.safetensors: "});
  test::write_bytes(tuned_ + "/model.safetensors", bytes);

  // NaN in the fine-tune.
  LlamaParams params = LlamaParams::from_checkpoint(Checkpoint(tuned_));
  params.find("model.layers.0.mlp.up_proj.weight")[5] = std::nanf("");
  test::save_params(scratch_ / "nan", params, DType::F32, {});
  expect_refusal(
      run("compress --base " + base_ + " --finetuned " + scratch_ / "nan" + " -o " + adapter), 1,
      {"'model.layers.0.mlp.up_proj.weight': delta at [0, 5] is nan"});
  expect_nothing_written();

  // An existing output is kept unless --force.
  test::write_bytes(adapter, "precious");
  expect_refusal(run(compress_args(adapter)), 1, {adapter + ": already exists (use --force"});
  EXPECT_EQ(read_file(adapter), "precious");
  EXPECT_EQ(run(compress_args(adapter) + " --force --json").exit_code, 0);
  EXPECT_EQ(AdapterFile(adapter).matrices().size(), 14u);
  for (const auto& entry : fs::directory_iterator(scratch_.path()))  // no temp file left behind
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
}

TEST_F(CliCompress, ApplyRefusals) {
  write_pair({});
  const std::string adapter = scratch_ / "a.bitdelta", out = scratch_ / "out";
  ASSERT_EQ(run(compress_args(adapter) + " --json").exit_code, 0);
  // The fine-tune is not the adapter's base.
  expect_refusal(
      run("apply --base " + tuned_ + " --delta " + adapter + " -o " + out), 1,
      {adapter + ": made for the base with fingerprint " + Checkpoint(base_).fingerprint(),
       "but " + tuned_ + " has fingerprint"});
  EXPECT_FALSE(fs::exists(out));
  expect_refusal(
      run("apply --base " + base_ + " --delta " + adapter + " -o " + out + " --dtype f64"), 2,
      {"--dtype must be same, f32, bf16 or f16"});
  expect_refusal(
      run("apply --base " + base_ + " --delta " + base_ + "/model.safetensors -o " + out), 1,
      {"not a bitdelta adapter"});
  std::string bytes = read_file(adapter);
  const std::string corrupt = scratch_.write("corrupt.bitdelta", bytes.substr(0, bytes.size() / 2));
  expect_refusal(run("apply --base " + base_ + " --delta " + corrupt + " -o " + out), 1,
                 {corrupt + ": "});
  EXPECT_FALSE(fs::exists(out));
  fs::create_directory(out);
  test::write_bytes(out + "/keep.txt", "mine");
  expect_refusal(run("apply --base " + base_ + " --delta " + adapter + " -o " + out), 1,
                 {out + ": already exists (use --force"});
  EXPECT_EQ(read_file(out + "/keep.txt"), "mine");
  ASSERT_EQ(run("apply --base " + base_ + " --delta " + adapter + " -o " + out + " --force --json")
                .exit_code,
            0);
  EXPECT_FALSE(fs::exists(out + "/keep.txt"));  // replaced whole
  EXPECT_EQ(Checkpoint(out).metadata().at("apply.finetune_fingerprint"),
            Checkpoint(tuned_).fingerprint());
}

std::string sha256_of(const std::string& text) {
  Sha256 hash;
  hash.update(text);
  return hash.hex_digest();
}

// --scale distill without --calib uses the training text the fine-tune's metadata records,
// only while the file is unchanged.
TEST_F(CliCompress, DistillCalibrationTextDefaultsToTheFineTunesTrainingText) {
  const std::string text_path = scratch_.write("train.txt", std::string(3000, 'a') + "bcd\n");
  test::PairSpec spec;
  spec.finetune_metadata = {{"train.data", text_path},
                            {"train.data_sha256", sha256_of(read_file(text_path))}};
  write_pair(spec);
  const std::string adapter = scratch_ / "a.bitdelta";
  const std::string distill = compress_args(adapter) + " --scale distill --steps 2 --threads 1";
  const json r = run_json(distill);
  EXPECT_EQ(r["scale_mode"], "distill");
  EXPECT_EQ(r["distill"]["calib"], text_path);
  EXPECT_EQ(r["distill"]["steps"], 2);
  EXPECT_EQ(r["distill"]["loss"], "kl");
  const AdapterFile file(adapter);
  EXPECT_EQ(file.info().scale_mode, "distill");
  EXPECT_EQ(file.info().extra.at("distill.calib_sha256"), sha256_of(read_file(text_path)));
  EXPECT_EQ(file.info().extra.at("distill.steps"), "2");

  test::write_bytes(text_path, "changed since training");
  expect_refusal(run(distill + " --force"), 2,
                 {"training text " + text_path + " has changed since training", "--calib FILE"});
  fs::remove(text_path);
  expect_refusal(run(distill + " --force"), 2, {text_path + " (train.data) is not there"});
  const std::string calib = scratch_.write("calib.txt", std::string(3000, 'x') + "yz\n");
  const json chosen = run_json(distill + " --force --calib " + calib + " --loss logit_mse");
  EXPECT_EQ(chosen["distill"]["calib"], calib);
  EXPECT_EQ(chosen["distill"]["loss"], "logit_mse");
}

// A DP fine-tune's training text is private: distillation on it would spend privacy that its ε
// does not count, so only text declared public may calibrate; mean scales need no text.
TEST_F(CliCompress, DistillOfADpFineTuneNeedsPublicCalibrationText) {
  const std::string text_path = scratch_.write("train.txt", std::string(3000, 'a') + "bcd\n");
  test::PairSpec spec;
  spec.finetune_metadata = {{"train.data", text_path},
                            {"train.data_sha256", sha256_of(read_file(text_path))},
                            {"privacy.epsilon", "4"},
                            {"privacy.delta", "1e-05"}};
  write_pair(spec);
  const std::string adapter = scratch_ / "a.bitdelta";
  const std::string distill = compress_args(adapter) + " --scale distill --steps 2 --threads 1";
  const std::vector<std::string> why = {"is a DP fine-tune", "--calib FILE --calib-public"};
  expect_refusal(run(distill), 2, why);
  const std::string calib = scratch_.write("calib.txt", std::string(3000, 'x') + "yz\n");
  expect_refusal(run(distill + " --calib " + calib), 2, why);
  expect_refusal(run(distill + " --calib-public"), 2, {"--calib-public needs --calib FILE"});
  expect_refusal(run(compress_args(adapter) + " --calib-public"), 2,
                 {"--calib-public applies only to --scale distill"});
  EXPECT_FALSE(fs::exists(adapter));

  const json r = run_json(distill + " --calib " + calib + " --calib-public");
  EXPECT_EQ(r["distill"]["calib"], calib);
  const AdapterFile file(adapter);
  EXPECT_EQ(file.info().extra.at("distill.calib_public"), "true");
  EXPECT_EQ(json::parse(file.info().privacy),
            json({{"privacy.delta", "1e-05"}, {"privacy.epsilon", "4"}}));
  const json mean = run_json(compress_args(scratch_ / "m.bitdelta"));
  EXPECT_EQ(mean["scale_mode"], "mean");
}

TEST_F(CliCompress, DistillNeedsCalibrationTextWhenTheFineTuneRecordsNone) {
  write_pair({});
  expect_refusal(run(compress_args(scratch_ / "a.bitdelta") + " --scale distill"), 2,
                 {"does not record its training text", "--calib FILE"});
}

}  // namespace
}  // namespace bd
