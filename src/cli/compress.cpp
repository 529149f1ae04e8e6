// bitdelta compress: a fine-tune minus its base as a .bitdelta adapter (signs + scales, exact
// deltas for the rest), optionally with distilled scales. docs/format.md describes the file.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/sha256.h"
#include "core/threads.h"
#include "delta/compress.h"
#include "delta/distill.h"

namespace bd {

namespace {

namespace fs = std::filesystem;

const CommandSpec kSpec = {
    "compress",
    "--base DIR --finetuned DIR -o FILE [--scale mean|distill] [--granularity matrix|row]\n"
    "    [--calib FILE [--calib-public]] [--steps N] [--loss kl|logit_mse] [--owner DID] [--force] "
    "[--json]",
    "Compresses the fine-tune's difference from the base into a BitDelta adapter: for every\n"
    "q/k/v/o/gate/up/down projection, one sign bit per weight and a scale per matrix or per\n"
    "output row (mean |delta|, or distilled on calibration text); every other tensor that\n"
    "differs is kept exactly. The adapter is a safetensors file (docs/format.md).",
    {
        {"--base", "DIR", "the base model folder (Hugging Face layout)"},
        {"--finetuned", "DIR", "the fine-tuned model folder, same architecture as the base"},
        {"-o", "FILE", "the adapter to write (.bitdelta)"},
        {"--scale", "MODE", "mean (default): mean |delta|; distill: then optimise the scales"},
        {"--granularity", "G", "matrix (default): one scale per matrix; row: one per output row"},
        {"--calib", "FILE",
         "calibration text for --scale distill (default: the fine-tune's training text)"},
        {"--calib-public", "",
         "--calib is public text (required to distill the scales of a DP fine-tune)"},
        {"--steps", "N", "distillation steps (default 200)"},
        {"--loss", "L", "distillation loss: kl (default) or logit_mse"},
        {"--owner", "DID", "owner recorded in the adapter: did:lux:<id>"},
        {"--threads", "N",
         "threads (default: all cores): two hash (unless the fingerprint cache knows the models), "
         "the rest (at least one) pack"},
        {"--force", "", "overwrite an existing output file"},
        {"--json", "", "print one JSON object"},
    },
};

// A DP fine-tune records its guarantee in privacy.* metadata.
bool is_private_finetune(const Checkpoint& finetune) {
  for (const auto& [key, value] : finetune.metadata())
    if (key.rfind("privacy.", 0) == 0) return true;
  return false;
}

// The calibration text for distillation: --calib, else the fine-tune's own training text when
// its metadata names it (train.data) and the file is unchanged (train.data_sha256). A DP
// fine-tune's training text is private: only --calib text declared public (--calib-public).
std::string calibration_path(const Args& args, const Checkpoint& finetune) {
  if (is_private_finetune(finetune) && !(args.has("--calib") && args.has("--calib-public")))
    throw UsageError(cat("--scale distill: ", finetune.dir(),
                         " is a DP fine-tune (privacy.* metadata); distilling its scales on "
                         "private text would spend privacy its epsilon does not count: give "
                         "public text with --calib FILE --calib-public, or use --scale mean "
                         "(docs/privacy.md)"));
  if (args.has("--calib")) return args.get("--calib");
  const auto& metadata = finetune.metadata();
  const std::string advice = "; give the calibration text with --calib FILE";
  auto data = metadata.find("train.data");
  auto sha = metadata.find("train.data_sha256");
  if (data == metadata.end() || sha == metadata.end())
    throw UsageError(cat("--scale distill: ", finetune.dir(),
                         " does not record its training text (train.data in its metadata)",
                         advice));
  if (!path_exists(data->second))
    throw UsageError(cat("--scale distill: the fine-tune's training text ", data->second,
                         " (train.data) is not there", advice));
  Sha256 hash;
  hash.update(read_file(data->second));
  if (hash.hex_digest() != sha->second)
    throw UsageError(cat("--scale distill: the fine-tune's training text ", data->second,
                         " has changed since training (its SHA-256 is not train.data_sha256)",
                         advice));
  return data->second;
}

DistillLoss parse_loss(const std::string& name) {
  if (name == "kl") return DistillLoss::KL;
  if (name == "logit_mse") return DistillLoss::LogitMSE;
  throw UsageError(cat("--loss must be kl or logit_mse, got '", name, "'"));
}

// Bytes of the safetensors files a checkpoint folder is made of (model.safetensors, or the
// shards its index lists).
int64_t checkpoint_file_bytes(const std::string& dir) {
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::set<std::string> files = {"model.safetensors"};
  if (fs::exists(index)) {
    files.clear();
    const nlohmann::json parsed = nlohmann::json::parse(read_file(index.string()));
    for (const auto& [name, shard] : parsed.at("weight_map").items())
      files.insert(shard.get<std::string>());
  }
  int64_t bytes = 0;
  for (const std::string& file : files) bytes += int64_t(fs::file_size(fs::path(dir) / file));
  return bytes;
}

void record_distillation(const DistillReport& report, const std::string& calib, AdapterInfo* info) {
  Sha256 calib_hash;
  calib_hash.update(read_file(calib));
  info->scale_mode = "distill";
  info->extra["distill.loss"] = report.loss_name;
  info->extra["distill.steps"] = std::to_string(report.steps);
  info->extra["distill.calib_sha256"] = calib_hash.hex_digest();
  info->extra["distill.heldout_before"] = cat(report.heldout_before);
  info->extra["distill.heldout_after"] = cat(report.heldout_after);
  info->extra["distill.heldout_tokens"] = std::to_string(report.heldout_tokens);
}

}  // namespace

int run_compress(int argc, char** argv) {
  const auto start = std::chrono::steady_clock::now();
  Args args(kSpec, argc, argv);
  const std::string base_dir = args.require("--base");
  const std::string finetune_dir = args.require("--finetuned");
  const std::string out = args.require("-o");
  const std::string scale = args.get("--scale", "mean");
  const std::string granularity = args.get("--granularity", "matrix");
  if (scale != "mean" && scale != "distill")
    throw UsageError(cat("--scale must be mean or distill, got '", scale, "'"));
  if (granularity != "matrix" && granularity != "row")
    throw UsageError(cat("--granularity must be matrix or row, got '", granularity, "'"));
  const bool distill = scale == "distill";
  for (const char* option : {"--calib", "--calib-public", "--steps", "--loss"})
    if (args.has(option) && !distill)
      throw UsageError(cat(option, " applies only to --scale distill"));
  if (args.has("--calib-public") && !args.has("--calib"))
    throw UsageError("--calib-public needs --calib FILE");
  CompressOptions options;
  options.per_row = granularity == "row";
  options.owner = args.get("--owner");
  options.quiet = args.has("--json");
  if (args.has("--owner") && !valid_owner_did(options.owner))
    throw UsageError(cat("--owner '", options.owner,
                         "' is not a did:lux DID (did:lux:<id>, see docs/format.md)"));
  DistillOptions distill_options;
  distill_options.steps = args.get_int("--steps", distill_options.steps);
  distill_options.loss = parse_loss(args.get("--loss", "kl"));
  distill_options.quiet = options.quiet;
  if (distill_options.steps < 1) throw UsageError("--steps must be at least 1");
  if (path_exists(out) && !args.has("--force"))
    fail(out, ": already exists (use --force to overwrite)");
  set_threads(int(args.get_int("--threads", 0)));

  const Checkpoint base(base_dir);
  const Checkpoint finetune(finetune_dir);
  if (distill) distill_options.calib_path = calibration_path(args, finetune);
  CompressedDelta delta = compress_delta(base, finetune, options);
  DistillReport report;
  if (distill) {
    report = distill_scales(base, finetune, delta.matrices, delta.exact, delta.scale_pointers(),
                            distill_options);
    record_distillation(report, distill_options.calib_path, &delta.info);
    if (args.has("--calib-public")) delta.info.extra["distill.calib_public"] = "true";
  }
  delta.write(out, args.has("--force"));

  const AdapterSizes sizes = adapter_sizes(delta.matrices, delta.exact);
  const int64_t adapter_bytes = int64_t(fs::file_size(out));
  const int64_t finetune_bytes = checkpoint_file_bytes(finetune_dir);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const CompressStats& stats = delta.stats;
  if (args.has("--json")) {
    nlohmann::ordered_json distilled = nullptr;
    if (distill)
      distilled = {{"loss", report.loss_name},
                   {"heldout_before", report.heldout_before},
                   {"heldout_after", report.heldout_after},
                   {"heldout_tokens", report.heldout_tokens},
                   {"steps", report.steps},
                   {"scales", report.scale_count},
                   {"calib", distill_options.calib_path},
                   {"seconds", report.seconds}};
    print_json({{"output", out},
                {"adapter_bytes", adapter_bytes},
                {"sign_bytes", sizes.sign_bytes},
                {"scale_bytes", sizes.scale_bytes},
                {"exact_bytes", sizes.exact_bytes},
                {"compressed_tensors", stats.compressed_tensors},
                {"compressed_parameters", sizes.compressed_parameters},
                {"exact_tensors", stats.exact_tensors},
                {"exact_parameters", sizes.exact_parameters},
                {"exact_rounded_elements", stats.exact_rounded_elements},
                {"unchanged_tensors", stats.unchanged_tensors},
                {"fp16_bytes_compressed", sizes.fp16_compressed_bytes()},
                {"fp16_bytes_changed", sizes.fp16_changed_bytes()},
                {"finetune_file_bytes", finetune_bytes},
                {"ratio_compressed_vs_fp16", sizes.ratio_compressed_vs_fp16()},
                {"ratio_changed_vs_fp16", sizes.ratio_changed_vs_fp16(adapter_bytes)},
                {"ratio_finetune_file", double(finetune_bytes) / double(adapter_bytes)},
                {"scale_mode", delta.info.scale_mode},
                {"granularity", delta.info.granularity},
                {"distill", distilled},
                {"base_fingerprint", delta.info.base_fingerprint},
                {"finetune_fingerprint", delta.info.finetune_fingerprint},
                {"fingerprints_cached",
                 {{"base", stats.base_fingerprint_cached},
                  {"finetune", stats.finetune_fingerprint_cached}}},
                {"input_bytes", stats.input_bytes},
                {"compress_seconds", stats.seconds},
                {"seconds", seconds}});
    return 0;
  }
  std::printf(
      "compressed %lld weights (%lld parameters) to signs + per-%s scales; kept %lld "
      "tensors exactly; %lld unchanged\n",
      (long long)stats.compressed_tensors, (long long)sizes.compressed_parameters,
      granularity.c_str(), (long long)stats.exact_tensors, (long long)stats.unchanged_tensors);
  std::printf(
      "adapter %.2f MB: %.1fx smaller than the compressed tensors in fp16, %.1fx than "
      "everything that changed in fp16, %.1fx than the fine-tune's files\n",
      adapter_bytes / 1e6, sizes.ratio_compressed_vs_fp16(),
      sizes.ratio_changed_vs_fp16(adapter_bytes), double(finetune_bytes) / adapter_bytes);
  if (distill)
    std::printf("distilled %lld scales: held-out %s %.6g -> %.6g over %lld tokens (%lld steps)\n",
                (long long)report.scale_count, report.loss_name.c_str(), report.heldout_before,
                report.heldout_after, (long long)report.heldout_tokens, (long long)report.steps);
  std::printf("wrote %s in %.1fs\n", out.c_str(), seconds);
  return 0;
}

}  // namespace bd
