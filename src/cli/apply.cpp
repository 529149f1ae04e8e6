// bitdelta apply: base + adapter written out as a dense Hugging Face checkpoint.
#include <cstdio>
#include <optional>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/threads.h"
#include "delta/apply.h"

namespace bd {

namespace {

const CommandSpec kSpec = {
    "apply",
    "--base DIR --delta FILE -o OUTDIR [--dtype same|f32|bf16|f16] [--force] [--json]",
    "Writes base + adapter as a dense Hugging Face checkpoint folder: every compressed weight\n"
    "becomes W_base + scale * sign, every exact delta W_base + delta (computed in F32, rounded\n"
    "once to the output dtype). Refuses a base whose fingerprint is not the adapter's.",
    {
        {"--base", "DIR", "the base model folder the adapter was made from"},
        {"--delta", "FILE", "the .bitdelta adapter"},
        {"-o", "OUTDIR", "the folder to write"},
        {"--dtype", "T", "same (default: the base's dtypes), f32, bf16 or f16"},
        {"--threads", "N", "threads (default: all cores)"},
        {"--force", "", "replace an existing output folder"},
        {"--json", "", "print one JSON object"},
    },
};

std::optional<DType> parse_output_dtype(const std::string& name) {
  if (name == "same") return std::nullopt;
  if (name == "f32") return DType::F32;
  if (name == "bf16") return DType::BF16;
  if (name == "f16") return DType::F16;
  throw UsageError(cat("--dtype must be same, f32, bf16 or f16, got '", name, "'"));
}

}  // namespace

int run_apply(int argc, char** argv) {
  Args args(kSpec, argc, argv);
  const std::string base_dir = args.require("--base");
  const std::string adapter_path = args.require("--delta");
  const std::string out = args.require("-o");
  ApplyOptions options;
  options.dtype = parse_output_dtype(args.get("--dtype", "same"));
  options.overwrite = args.has("--force");
  options.quiet = args.has("--json");
  if (path_exists(out) && !options.overwrite)
    fail(out, ": already exists (use --force to overwrite)");
  set_threads(int(args.get_int("--threads", 0)));

  const Checkpoint base(base_dir);
  const AdapterFile adapter(adapter_path);
  const ApplyStats stats = apply_adapter(base, adapter, out, options);
  const std::string dtype = args.get("--dtype", "same");
  if (args.has("--json")) {
    print_json({{"output", out},
                {"dtype", dtype},
                {"compressed_tensors", stats.compressed_tensors},
                {"exact_tensors", stats.exact_tensors},
                {"base_tensors", stats.base_tensors},
                {"output_bytes", stats.output_bytes},
                {"base_fingerprint", adapter.info().base_fingerprint},
                {"finetune_fingerprint", adapter.info().finetune_fingerprint},
                {"seconds", stats.seconds}});
    return 0;
  }
  std::printf(
      "rebuilt %lld compressed weights and %lld exact tensors, %lld taken from the base "
      "(%s)\nwrote %s (%.1f MB) in %.1fs\n",
      (long long)stats.compressed_tensors, (long long)stats.exact_tensors,
      (long long)stats.base_tensors, dtype.c_str(), out.c_str(), stats.output_bytes / 1e6,
      stats.seconds);
  return 0;
}

}  // namespace bd
