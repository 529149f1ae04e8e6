// bitdelta inspect PATH [--json]: what a checkpoint folder or any safetensors file (a model
// shard, an adapter) holds: tensors, parameter count, metadata, fingerprint.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "io/checkpoint.h"

namespace bd {

namespace {

using nlohmann::ordered_json;

const CommandSpec kSpec = {
    "inspect",
    "PATH [--json]",
    "Shows the tensors (name, dtype, shape), parameter count, metadata and fingerprint of a\n"
    "Hugging Face checkpoint folder or of any safetensors file (a shard, an adapter).",
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
  for (const auto& [key, value] : summary.metadata)
    std::printf("  %s = %s\n", key.c_str(), value.c_str());
  std::printf("tensors      %zu\n", summary.tensors.size());
  size_t width = 0;
  for (const NamedTensor& tensor : summary.tensors) width = std::max(width, tensor.name.size());
  for (const NamedTensor& tensor : summary.tensors)
    std::printf("  %-*s  %-4s  %s\n", int(width), tensor.name.c_str(),
                std::string(dtype_name(tensor.view.dtype)).c_str(),
                shape_str(tensor.view.shape).c_str());
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
  }
  if (args.has("--json"))
    std::printf("%s\n", to_json(summary).dump().c_str());
  else
    print_text(summary);
  return 0;
}

}  // namespace bd
