#include "io/checkpoint.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"
#include "io/fingerprint_cache.h"

namespace bd {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char kConfigFile[] = "config.json";
const char kSingleFile[] = "model.safetensors";
const char kIndexFile[] = "model.safetensors.index.json";
const char kTokenizerFile[] = "tokenizer.json";

std::string join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

// model.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor: shard file}}.
std::map<std::string, std::string> read_weight_map(const std::string& index_path) {
  json index;
  try {
    index = json::parse(read_file(index_path));
  } catch (const json::exception& error) {
    fail(index_path, ": not valid JSON: ", escape_bytes(error.what(), 2 * kMaxQuotedBytes));
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail(index_path, ": missing 'weight_map' object");
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string())
      fail(index_path, ": weight_map entry for ", quote_bytes(name), " is not a string");
    std::string shard = file.get<std::string>();
    // Shards live in the folder itself; anything else could read outside it.
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos)
      fail(index_path, ": shard ", quote_bytes(shard), " for tensor ", quote_bytes(name),
           " is not a file in the folder");
    weight_map[name] = shard;
  }
  return weight_map;
}

// The safetensors shards an index in `dir` names, to be replaced by a save; none when there is
// no index, or it is unreadable (it is removed all the same).
std::set<std::string> stale_shards(const std::string& dir) {
  std::set<std::string> shards;
  std::string index_path = join(dir, kIndexFile);
  if (!path_exists(index_path)) return shards;
  try {
    for (const auto& [name, shard] : read_weight_map(index_path))
      if (shard.ends_with(".safetensors") && shard != kSingleFile) shards.insert(shard);
  } catch (const Error&) {
  }
  return shards;
}

// The tensors a Llama with this config needs, with the shapes config.json implies.
struct Requirement {
  std::string name;
  Shape shape;
  std::string because;  // the config fields that fix the shape
};

std::vector<Requirement> llama_requirements(const LlamaConfig& c) {
  int64_t H = c.hidden_size, V = c.vocab_size, I = c.intermediate_size;
  int64_t q_rows = c.num_attention_heads * c.head_dim, kv_rows = c.num_key_value_heads * c.head_dim;
  std::string h = cat("hidden_size ", H), v = cat("vocab_size ", V),
              i = cat("intermediate_size ", I);
  std::string heads = cat("num_attention_heads ", c.num_attention_heads, ", head_dim ", c.head_dim);
  std::string kv = cat("num_key_value_heads ", c.num_key_value_heads, ", head_dim ", c.head_dim);
  std::vector<Requirement> needs = {{"model.embed_tokens.weight", {V, H}, v + ", " + h}};
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    std::string prefix = cat("model.layers.", layer, ".");
    needs.push_back({prefix + "input_layernorm.weight", {H}, h});
    needs.push_back({prefix + "post_attention_layernorm.weight", {H}, h});
    needs.push_back({prefix + "self_attn.q_proj.weight", {q_rows, H}, heads + ", " + h});
    needs.push_back({prefix + "self_attn.k_proj.weight", {kv_rows, H}, kv + ", " + h});
    needs.push_back({prefix + "self_attn.v_proj.weight", {kv_rows, H}, kv + ", " + h});
    needs.push_back({prefix + "self_attn.o_proj.weight", {H, q_rows}, h + ", " + heads});
    needs.push_back({prefix + "mlp.gate_proj.weight", {I, H}, i + ", " + h});
    needs.push_back({prefix + "mlp.up_proj.weight", {I, H}, i + ", " + h});
    needs.push_back({prefix + "mlp.down_proj.weight", {H, I}, h + ", " + i});
  }
  needs.push_back({"model.norm.weight", {H}, h});
  needs.push_back({"lm_head.weight", {V, H}, v + ", " + h});
  return needs;
}

// True when some tensor belongs to decoder layer `layer`.
bool has_layer(const std::map<std::string, TensorView>& tensors, int64_t layer) {
  const std::string prefix = cat("model.layers.", layer, ".");
  auto it = tensors.lower_bound(prefix);
  return it != tensors.end() && it->first.starts_with(prefix);
}

// Shared by validate_llama_tensors (a folder read back) and save_checkpoint (before writing).
void check_llama_tensors(const LlamaConfig& config,
                         const std::map<std::string, TensorView>& tensors,
                         const std::string& where) {
  check_llama_config(config, where);  // bounds every size before the shapes below use them
  // A config naming more layers than were saved fails before the full list of up to 36,864
  // requirements is built, naming the first tensor of the first missing layer.
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer)
    if (!has_layer(tensors, layer))
      fail(where, ": missing tensor ",
           quote_bytes(cat("model.layers.", layer, ".input_layernorm.weight")),
           " (config.json: num_hidden_layers ", config.num_hidden_layers,
           ", but the checkpoint has no layer ", layer, ")");
  std::set<std::string> known;
  for (const Requirement& need : llama_requirements(config)) {
    known.insert(need.name);
    auto it = tensors.find(need.name);
    bool optional = need.name == "lm_head.weight" && config.tie_word_embeddings;
    if (it == tensors.end()) {
      if (optional) continue;
      fail(where, ": missing tensor ", quote_bytes(need.name), " (config.json: ", need.because,
           need.name == "lm_head.weight" ? ", tie_word_embeddings false" : "", ")");
    }
    const TensorView& view = it->second;
    if (view.shape != need.shape)
      fail(where, ": tensor ", quote_bytes(need.name), " has shape ", shape_str(view.shape),
           " but config.json (", need.because, ") implies ", shape_str(need.shape));
    if (!is_float(view.dtype))
      fail(where, ": tensor ", quote_bytes(need.name), " has dtype ", dtype_name(view.dtype),
           "; Llama weights must be F32, F16 or BF16");
  }
  for (const auto& [name, view] : tensors) {
    // Old exports store RoPE's inverse frequencies; they follow from config.json, so skip them.
    if (known.count(name) || name.ends_with(".self_attn.rotary_emb.inv_freq")) continue;
    fail(where, ": unexpected tensor ", quote_bytes(name), " for a Llama with config.json's ",
         config.num_hidden_layers, " layers (a layer too many, a bias, or another architecture?)");
  }
}

}  // namespace

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  std::error_code error;
  if (!fs::is_directory(dir, error))
    fail(dir,
         path_exists(dir) ? ": not a checkpoint folder (not a directory)" : ": no such folder");
  std::string config_path = join(dir, kConfigFile);
  config_ = parse_llama_config(read_file(config_path), config_path);

  std::string index_path = join(dir, kIndexFile);
  if (!path_exists(index_path)) {
    if (!path_exists(join(dir, kSingleFile))) fail(dir, ": no ", kSingleFile, " or ", kIndexFile);
    files_.push_back(std::make_unique<SafetensorsFile>(join(dir, kSingleFile)));
    for (const std::string& name : files_[0]->names()) tensors_[name] = files_[0]->find(name);
    metadata_ = files_[0]->metadata();
    return;
  }

  std::map<std::string, std::string> weight_map = read_weight_map(index_path);
  std::set<std::string> shard_names;
  for (const auto& [name, shard] : weight_map) shard_names.insert(shard);
  std::map<std::string, std::string> shard_of;  // tensor -> the shard that holds it
  for (const std::string& shard : shard_names) {
    files_.push_back(std::make_unique<SafetensorsFile>(join(dir, shard)));
    const SafetensorsFile& file = *files_.back();
    for (const std::string& name : file.names()) {
      if (shard_of.count(name))
        fail(dir, ": tensor ", quote_bytes(name), " is in two shards: ", shard_of[name], " and ",
             shard);
      shard_of[name] = shard;
      tensors_[name] = file.find(name);
    }
    metadata_.insert(file.metadata().begin(), file.metadata().end());
  }
  // The index and the shards must agree both ways.
  for (const auto& [name, shard] : shard_of) {
    auto listed = weight_map.find(name);
    if (listed == weight_map.end())
      fail(index_path, ": tensor ", quote_bytes(name), " in shard ", shard,
           " is not in weight_map");
    if (listed->second != shard)
      fail(index_path, ": weight_map puts tensor ", quote_bytes(name), " in ", listed->second,
           " but it is in ", shard);
  }
  for (const auto& [name, shard] : weight_map)
    if (!shard_of.count(name))
      fail(index_path, ": weight_map puts tensor ", quote_bytes(name), " in ", shard,
           ", which has no such tensor");
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> names;
  for (const auto& [name, view] : tensors_) names.push_back(name);
  return names;
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

const TensorView& Checkpoint::get(const std::string& name) const {
  const TensorView* view = find(name);
  if (!view) fail(dir_, ": no tensor ", quote_bytes(name));
  return *view;
}

std::vector<NamedTensor> Checkpoint::tensors() const {
  std::vector<NamedTensor> out;
  for (const auto& [name, view] : tensors_) out.push_back({name, *view});
  return out;
}

std::vector<const SafetensorsFile*> Checkpoint::files() const {
  std::vector<const SafetensorsFile*> files;
  for (const auto& file : files_) files.push_back(file.get());
  return files;
}

std::string Checkpoint::fingerprint() const {
  const FingerprintLookup lookup(*this);
  if (lookup.cached()) return *lookup.cached();
  const std::string fingerprint = fingerprint_tensors(tensors());
  lookup.remember(fingerprint);
  return fingerprint;
}

int64_t Checkpoint::parameter_count() const {
  int64_t count = 0;
  for (const auto& [name, view] : tensors_) count += view->numel();
  return count;
}

void validate_llama_tensors(const Checkpoint& checkpoint) {
  std::map<std::string, TensorView> tensors;
  for (const NamedTensor& tensor : checkpoint.tensors()) tensors[tensor.name] = tensor.view;
  check_llama_tensors(checkpoint.config(), tensors, checkpoint.dir());
}

void save_checkpoint(const std::string& dir, const LlamaConfig& config,
                     const std::vector<NamedTensor>& tensors, const std::string& tokenizer_json,
                     const std::map<std::string, std::string>& metadata, bool overwrite) {
  std::map<std::string, TensorView> by_name;
  for (const NamedTensor& tensor : tensors)
    if (!by_name.emplace(tensor.name, tensor.view).second)
      fail(dir, ": duplicate tensor name ", quote_bytes(tensor.name));
  check_llama_tensors(config, by_name, dir);

  std::error_code error;
  if (path_exists(dir)) {
    if (!fs::is_directory(dir, error)) fail(dir, ": exists and is not a folder");
    if (!overwrite && !fs::is_empty(dir, error))
      fail(dir, ": folder exists and is not empty (use --force to overwrite)");
  }
  make_dirs(dir);
  std::set<std::string> old_shards = stale_shards(dir);

  std::map<std::string, std::string> file_metadata = metadata;
  file_metadata.emplace("format", "pt");  // transformers refuses safetensors without it
  write_safetensors(join(dir, kSingleFile), tensors, file_metadata, overwrite);
  if (!tokenizer_json.empty())
    write_file_atomic(join(dir, kTokenizerFile), tokenizer_json, overwrite);
  write_file_atomic(join(dir, kConfigFile), llama_config_json(config), overwrite);

  // An old index would take precedence over the new model.safetensors: remove it first, then
  // the shards it listed.
  if (path_exists(join(dir, kIndexFile)) && !fs::remove(join(dir, kIndexFile), error))
    fail(join(dir, kIndexFile), ": cannot remove stale index: ", error.message());
  for (const std::string& shard : old_shards) fs::remove(join(dir, shard), error);
}

}  // namespace bd
