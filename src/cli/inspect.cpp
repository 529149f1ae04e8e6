// bitdelta inspect PATH [--json]: what a checkpoint folder or any safetensors file (a model
// shard, an adapter) holds: tensors, parameter count, metadata, fingerprint; for a .bitdelta
// adapter also its fields, per-tensor scales, sizes and compression ratios.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "io/adapter.h"
#include "io/checkpoint.h"

namespace bd {

namespace {

using nlohmann::ordered_json;

const CommandSpec kSpec = {
    "inspect",
    "PATH [--json]",
    "Shows the tensors (name, dtype, shape), parameter count, metadata and fingerprint of a\n"
    "Hugging Face checkpoint folder or of any safetensors file (a shard, an adapter). For a\n"
    "BitDelta adapter also its fields, per-tensor scales, sizes and compression ratios.",
    {{"--json", "", "print one JSON object instead of text"}},
    1,
};

// What inspect reports, whichever kind of input it came from.
struct Summary {
  std::string path, kind;
  std::vector<NamedTensor> tensors;  // sorted by name
  std::map<std::string, std::string> metadata;
  ordered_json config;  // null for a plain safetensors file
  std::string fingerprint;
  ordered_json adapter;  // null unless the file is a BitDelta adapter

  int64_t parameters() const {
    int64_t count = 0;
    for (const NamedTensor& tensor : tensors) count += tensor.view.numel();
    return count;
  }
};

ordered_json to_json(const Summary& summary) {
  ordered_json out;
  out["path"] = summary.path;
  out["kind"] = summary.kind;
  out["tensors"] = ordered_json::array();
  for (const NamedTensor& tensor : summary.tensors)
    out["tensors"].push_back({{"name", tensor.name},
                              {"dtype", std::string(dtype_name(tensor.view.dtype))},
                              {"shape", tensor.view.shape},
                              {"bytes", tensor.view.bytes()}});
  out["parameters"] = summary.parameters();
  out["metadata"] = summary.metadata;
  if (!summary.config.is_null()) out["config"] = summary.config;
  out["fingerprint"] = summary.fingerprint;
  if (!summary.adapter.is_null()) out["adapter"] = summary.adapter;
  return out;
}

// count, min, mean, max and the first few of some scale values.
ordered_json scale_summary(const float* values, int64_t count) {
  constexpr int64_t kFirst = 4;
  float low = values[0], high = values[0];
  double sum = 0;
  ordered_json first = ordered_json::array();
  for (int64_t i = 0; i < count; ++i) {
    low = std::min(low, values[i]);
    high = std::max(high, values[i]);
    sum += values[i];
    if (i < kFirst) first.push_back(values[i]);
  }
  return {{"count", count}, {"min", low}, {"mean", sum / count}, {"max", high}, {"first", first}};
}

ordered_json adapter_summary(const AdapterFile& adapter, int64_t file_bytes) {
  const AdapterInfo& info = adapter.info();
  const AdapterSizes sizes = adapter_sizes(adapter.matrices(), adapter.exact());
  std::vector<float> all_scales;
  ordered_json matrices = ordered_json::array(), exact = ordered_json::array();
  for (const AdapterMatrix& matrix : adapter.matrices()) {
    const float* scale = matrix.scale.as<float>();
    all_scales.insert(all_scales.end(), scale, scale + matrix.scale.numel());
    matrices.push_back({{"name", matrix.name},
                        {"shape", {matrix.out, matrix.in}},
                        {"scales", scale_summary(scale, matrix.scale.numel())}});
  }
  for (const AdapterExact& kept : adapter.exact())
    exact.push_back({{"name", kept.name},
                     {"dtype", std::string(dtype_name(kept.delta.dtype))},
                     {"shape", kept.delta.shape}});
  ordered_json out = {
      {"format_version", info.version},
      {"base_fingerprint", info.base_fingerprint},
      {"finetune_fingerprint", info.finetune_fingerprint},
      {"owner", info.owner.empty() ? ordered_json(nullptr) : ordered_json(info.owner)},
      {"scale_mode", info.scale_mode},
      {"granularity", info.granularity},
      {"privacy", info.privacy.empty() ? ordered_json(nullptr) : ordered_json::parse(info.privacy)},
      {"tool_version", info.tool_version},
      {"created", info.created},
      {"extra", info.extra},
      {"file_bytes", file_bytes},
      {"sign_bytes", sizes.sign_bytes},
      {"scale_bytes", sizes.scale_bytes},
      {"exact_bytes", sizes.exact_bytes},
      {"compressed_parameters", sizes.compressed_parameters},
      {"exact_parameters", sizes.exact_parameters},
      {"fp16_bytes_compressed", sizes.fp16_compressed_bytes()},
      {"fp16_bytes_changed", sizes.fp16_changed_bytes()},
      {"ratio_compressed_vs_fp16", sizes.ratio_compressed_vs_fp16()},
      {"ratio_changed_vs_fp16", sizes.ratio_changed_vs_fp16(file_bytes)},
      {"scales", all_scales.empty() ? ordered_json(nullptr)
                                    : scale_summary(all_scales.data(), int64_t(all_scales.size()))},
      {"matrices", matrices},
      {"exact", exact}};
  return out;
}

// 1234567 -> "1,234,567"
std::string grouped(int64_t value) {
  std::string digits = std::to_string(value), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

void print_text(const Summary& summary) {
  std::printf("path         %s\n", summary.path.c_str());
  std::printf("kind         %s\n", summary.kind.c_str());
  if (!summary.config.is_null()) {
    const ordered_json& c = summary.config;
    std::printf(
        "config       vocab %s, hidden %s, layers %s, heads %s (kv %s), head_dim %s, "
        "intermediate %s, %s embeddings\n",
        c["vocab_size"].dump().c_str(), c["hidden_size"].dump().c_str(),
        c["num_hidden_layers"].dump().c_str(), c["num_attention_heads"].dump().c_str(),
        c["num_key_value_heads"].dump().c_str(), c["head_dim"].dump().c_str(),
        c["intermediate_size"].dump().c_str(),
        c["tie_word_embeddings"].get<bool>() ? "tied" : "untied");
  }
  std::printf("parameters   %s\n", grouped(summary.parameters()).c_str());
  std::printf("fingerprint  %s\n", summary.fingerprint.c_str());
  std::printf("metadata%s\n", summary.metadata.empty() ? "     (none)" : "");
  for (const auto& [key, value] : summary.metadata) {
    if (!summary.adapter.is_null() && key == "bitdelta.shapes") {  // shown with the scales
      std::printf("  %s = (%zu shapes, listed under scales below)\n", key.c_str(),
                  summary.adapter["matrices"].size());
      continue;
    }
    std::printf("  %s = %s\n", key.c_str(), value.c_str());
  }
  std::printf("tensors      %zu\n", summary.tensors.size());
  size_t width = 0;
  for (const NamedTensor& tensor : summary.tensors) width = std::max(width, tensor.name.size());
  for (const NamedTensor& tensor : summary.tensors)
    std::printf("  %-*s  %-4s  %s\n", int(width), tensor.name.c_str(),
                std::string(dtype_name(tensor.view.dtype)).c_str(),
                shape_str(tensor.view.shape).c_str());
}

std::string scale_line(const ordered_json& scales) {
  if (scales["count"] == 1) return cat("scale ", scales["min"].get<float>());
  std::string first;
  for (const ordered_json& value : scales["first"]) first += " " + cat(value.get<float>());
  return cat(scales["count"].get<int64_t>(), " values, min ", scales["min"].get<float>(), ", mean ",
             scales["mean"].get<double>(), ", max ", scales["max"].get<float>(), ", first", first);
}

void print_adapter(const ordered_json& a) {
  std::printf("adapter      BitDelta format %d, %s scales per %s, written by bitdelta %s at %s\n",
              a["format_version"].get<int>(), a["scale_mode"].get<std::string>().c_str(),
              a["granularity"].get<std::string>().c_str(),
              a["tool_version"].get<std::string>().c_str(),
              a["created"].get<std::string>().c_str());
  std::printf("base         %s\n", a["base_fingerprint"].get<std::string>().c_str());
  std::printf("fine-tune    %s\n", a["finetune_fingerprint"].get<std::string>().c_str());
  std::printf("owner        %s\n",
              a["owner"].is_null() ? "(none)" : a["owner"].get<std::string>().c_str());
  std::printf("privacy      %s\n", a["privacy"].is_null() ? "(none)" : a["privacy"].dump().c_str());
  std::printf("sizes        %s bytes: signs %s, scales %s, exact deltas %s\n",
              grouped(a["file_bytes"]).c_str(), grouped(a["sign_bytes"]).c_str(),
              grouped(a["scale_bytes"]).c_str(), grouped(a["exact_bytes"]).c_str());
  std::printf(
      "ratio        %.1fx vs the compressed weights in fp16 (%s bytes), %.1fx vs everything "
      "that changed in fp16 (%s bytes)\n",
      a["ratio_compressed_vs_fp16"].get<double>(), grouped(a["fp16_bytes_compressed"]).c_str(),
      a["ratio_changed_vs_fp16"].get<double>(), grouped(a["fp16_bytes_changed"]).c_str());
  std::printf("scales       %zu compressed weights%s%s\n", a["matrices"].size(),
              a["scales"].is_null() ? "" : ": ",
              a["scales"].is_null() ? "" : scale_line(a["scales"]).c_str());
  for (const ordered_json& matrix : a["matrices"])
    std::printf("  %s %s: %s\n", matrix["name"].get<std::string>().c_str(),
                shape_str(matrix["shape"].get<Shape>()).c_str(),
                scale_line(matrix["scales"]).c_str());
  std::printf("exact        %zu tensors kept exactly\n", a["exact"].size());
  for (const ordered_json& kept : a["exact"])
    std::printf("  %s %s %s\n", kept["name"].get<std::string>().c_str(),
                kept["dtype"].get<std::string>().c_str(),
                shape_str(kept["shape"].get<Shape>()).c_str());
}

}  // namespace

int run_inspect(int argc, char** argv) {
  Args args(kSpec, argc, argv);
  if (args.positional().empty()) throw UsageError("PATH is required (see bitdelta inspect --help)");
  Summary summary;
  summary.path = args.positional()[0];
  std::error_code error;
  if (std::filesystem::is_directory(summary.path, error)) {
    Checkpoint checkpoint(summary.path);
    summary.kind = "checkpoint";
    summary.tensors = checkpoint.tensors();
    summary.metadata = checkpoint.metadata();
    summary.config = ordered_json::parse(llama_config_json(checkpoint.config()));
    summary.fingerprint = checkpoint.fingerprint();
  } else {
    SafetensorsFile file(summary.path);
    summary.kind = "safetensors";
    summary.tensors = file.tensors();
    std::sort(summary.tensors.begin(), summary.tensors.end(),
              [](const NamedTensor& a, const NamedTensor& b) { return a.name < b.name; });
    summary.metadata = file.metadata();
    summary.fingerprint = fingerprint_tensors(summary.tensors);
    if (summary.metadata.count("bitdelta.format_version")) {  // docs/format.md
      summary.kind = "adapter";
      summary.adapter = adapter_summary(AdapterFile(summary.path),
                                        int64_t(std::filesystem::file_size(summary.path)));
    }
  }
  if (args.has("--json")) {
    std::printf("%s\n", to_json(summary).dump().c_str());
    return 0;
  }
  print_text(summary);
  if (!summary.adapter.is_null()) print_adapter(summary.adapter);
  return 0;
}

}  // namespace bd
