#include "io/llama_config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace bd {

namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// Reads the fields of one JSON object, naming the file and field in every error.
class FieldReader {
 public:
  FieldReader(const json& object, std::string source, std::string prefix = "")
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  // A field that is absent or null counts as missing.
  bool has(const char* name) const { return object_.contains(name) && !object_[name].is_null(); }

  [[noreturn]] void bad(const char* name, const std::string& expected) const {
    fail(source_, ": field '", prefix_, name, "' must be ", expected,
         has(name) ? " (got " + escape_bytes(object_[name].dump(), kMaxQuotedBytes) + ")"
                   : std::string(" (missing)"));
  }

  // An integer in [1, max]. Values past int64 (nlohmann keeps them as uint64 or double) are out
  // of range too.
  int64_t positive_int(const char* name, int64_t max) const {
    const json& value = has(name) ? object_[name] : json();
    const bool in_range =
        value.is_number_unsigned()
            ? value.get<uint64_t>() >= 1 && value.get<uint64_t>() <= uint64_t(max)
            : value.is_number_integer() && value.get<int64_t>() >= 1 && value.get<int64_t>() <= max;
    if (!in_range) bad(name, cat("an integer in [1, ", max, "]"));
    return value.get<int64_t>();
  }
  int64_t positive_int(const char* name, int64_t max, int64_t fallback) const {
    return has(name) ? positive_int(name, max) : fallback;
  }

  double positive_number(const char* name) const {
    if (!has(name) || !object_[name].is_number() || !(object_[name].get<double>() > 0) ||
        !std::isfinite(object_[name].get<double>()))
      bad(name, "a positive finite number");
    return object_[name].get<double>();
  }
  double positive_number(const char* name, double fallback) const {
    return has(name) ? positive_number(name) : fallback;
  }

  bool boolean(const char* name, bool fallback) const {
    if (!has(name)) return fallback;
    if (!object_[name].is_boolean()) bad(name, "true or false");
    return object_[name].get<bool>();
  }

  std::string string(const char* name, const std::string& fallback) const {
    if (!has(name)) return fallback;
    if (!object_[name].is_string()) bad(name, "a string");
    return object_[name].get<std::string>();
  }

  // bos/eos: an id, a list of ids (the first is used) or null (-1: none).
  int64_t token_id(const char* name) const {
    if (!has(name)) return -1;
    const json& value = object_[name];
    if (value.is_array() && value.empty()) return -1;
    const json& first = value.is_array() && !value.empty() ? value[0] : value;
    if (!first.is_number_integer() || first.get<int64_t>() < 0 ||
        (first.is_number_unsigned() && first.get<uint64_t>() >= uint64_t(kMaxVocab)))
      bad(name, "a non-negative token id, a list of them or null");
    return first.get<int64_t>();
  }

 private:
  const json& object_;
  std::string source_, prefix_;
};

RopeScaling parse_rope_scaling(const json& config, const std::string& source) {
  RopeScaling scaling;
  if (!config.contains("rope_scaling") || config["rope_scaling"].is_null()) return scaling;
  const json& object = config["rope_scaling"];
  if (!object.is_object())
    fail(source, ": field 'rope_scaling' must be an object or null (got ",
         escape_bytes(object.dump(), kMaxQuotedBytes), ")");
  FieldReader fields(object, source, "rope_scaling.");
  // Newer transformers write "rope_type"; older ones "type".
  std::string type = fields.string("rope_type", fields.string("type", ""));
  if (type == "default") return scaling;
  if (type == "linear") {
    scaling.type = RopeScaling::Type::Linear;
    scaling.factor = fields.positive_number("factor");
  } else if (type == "llama3") {
    scaling.type = RopeScaling::Type::Llama3;
    scaling.factor = fields.positive_number("factor");
    scaling.low_freq_factor = fields.positive_number("low_freq_factor");
    scaling.high_freq_factor = fields.positive_number("high_freq_factor");
    scaling.original_max_position_embeddings =
        fields.positive_int("original_max_position_embeddings", kMaxPositions);
    if (scaling.high_freq_factor <= scaling.low_freq_factor)
      fail(source, ": rope_scaling.high_freq_factor (", scaling.high_freq_factor,
           ") must exceed low_freq_factor (", scaling.low_freq_factor, ")");
  } else {
    fail(source, ": rope_scaling type ", quote_bytes(type),
         " is not supported (supported: linear, llama3, default)");
  }
  return scaling;
}

// Features of other architectures or Llama variants that this engine does not implement: a
// config asking for them is rejected rather than silently run wrong.
void reject_unsupported(const json& config, const std::string& source) {
  FieldReader fields(config, source);
  std::string model_type = fields.string("model_type", "llama");
  if (model_type != "llama" && model_type != "mistral")
    fail(source, ": model_type ", quote_bytes(model_type), " is not supported (llama family only)");
  if (fields.has("sliding_window"))
    fail(source, ": sliding_window attention is not supported (set it to null)");
  std::string activation = fields.string("hidden_act", "silu");
  if (activation != "silu")
    fail(source, ": hidden_act ", quote_bytes(activation), " is not supported (only silu)");
  for (const char* bias : {"attention_bias", "mlp_bias"})
    if (fields.boolean(bias, false)) fail(source, ": ", bias, " true is not supported");
}

}  // namespace

void check_llama_config(const LlamaConfig& c, const std::string& source) {
  auto bounded = [&](int64_t value, const char* field, int64_t max) {
    if (value < 1 || value > max)
      fail(source, ": field '", field, "' must be an integer in [1, ", max, "] (got ", value, ")");
  };
  bounded(c.vocab_size, "vocab_size", kMaxVocab);
  bounded(c.hidden_size, "hidden_size", kMaxDimension);
  bounded(c.intermediate_size, "intermediate_size", kMaxDimension);
  bounded(c.num_hidden_layers, "num_hidden_layers", kMaxLayers);
  bounded(c.num_attention_heads, "num_attention_heads", kMaxDimension);
  bounded(c.num_key_value_heads, "num_key_value_heads", kMaxDimension);
  bounded(c.head_dim, "head_dim", kMaxDimension);
  bounded(c.max_position_embeddings, "max_position_embeddings", kMaxPositions);
  // Each factor is at most 2^20 now, so the product cannot overflow.
  if (c.num_attention_heads * c.head_dim > kMaxDimension)
    fail(source, ": num_attention_heads (", c.num_attention_heads, ") x head_dim (", c.head_dim,
         ") must be at most ", kMaxDimension);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail(source, ": num_attention_heads (", c.num_attention_heads,
         ") must be a multiple of num_key_value_heads (", c.num_key_value_heads, ")");
  if (c.head_dim % 2 != 0)
    fail(source, ": head_dim (", c.head_dim, ") must be even for rotary embeddings");
  for (auto [id, name] :
       {std::pair{c.bos_token_id, "bos_token_id"}, std::pair{c.eos_token_id, "eos_token_id"}})
    if (id < -1 || id >= c.vocab_size)
      fail(source, ": field '", name, "' (", id, ") is outside the vocabulary (vocab_size ",
           c.vocab_size, ")");
}

LlamaConfig parse_llama_config(const std::string& json_text, const std::string& source) {
  json config;
  try {
    config = json::parse(json_text);
  } catch (const json::exception& error) {
    fail(source, ": not valid JSON: ", escape_bytes(error.what(), 2 * kMaxQuotedBytes));
  }
  if (!config.is_object()) fail(source, ": not a JSON object");
  reject_unsupported(config, source);

  FieldReader fields(config, source);
  LlamaConfig out;
  out.vocab_size = fields.positive_int("vocab_size", kMaxVocab);
  out.hidden_size = fields.positive_int("hidden_size", kMaxDimension);
  out.intermediate_size = fields.positive_int("intermediate_size", kMaxDimension);
  out.num_hidden_layers = fields.positive_int("num_hidden_layers", kMaxLayers);
  out.num_attention_heads = fields.positive_int("num_attention_heads", kMaxDimension);
  out.num_key_value_heads =
      fields.positive_int("num_key_value_heads", kMaxDimension, out.num_attention_heads);
  if (!fields.has("head_dim") && out.hidden_size % out.num_attention_heads != 0)
    fail(source, ": hidden_size (", out.hidden_size,
         ") must be a multiple of num_attention_heads (", out.num_attention_heads,
         ") when head_dim is not given");
  out.head_dim =
      fields.positive_int("head_dim", kMaxDimension, out.hidden_size / out.num_attention_heads);
  out.rms_norm_eps = fields.positive_number("rms_norm_eps", out.rms_norm_eps);
  out.rope_theta = fields.positive_number("rope_theta", out.rope_theta);
  out.rope_scaling = parse_rope_scaling(config, source);
  out.max_position_embeddings =
      fields.positive_int("max_position_embeddings", kMaxPositions, out.max_position_embeddings);
  out.tie_word_embeddings = fields.boolean("tie_word_embeddings", out.tie_word_embeddings);
  out.bos_token_id = fields.token_id("bos_token_id");
  out.eos_token_id = fields.token_id("eos_token_id");
  // transformers >= 4.56 writes "dtype"; older versions "torch_dtype".
  out.torch_dtype = fields.string("torch_dtype", fields.string("dtype", out.torch_dtype));
  check_llama_config(out, source);
  return out;
}

std::string llama_config_json(const LlamaConfig& config) {
  ordered_json out;
  out["architectures"] = {"LlamaForCausalLM"};
  out["model_type"] = "llama";
  out["vocab_size"] = config.vocab_size;
  out["hidden_size"] = config.hidden_size;
  out["intermediate_size"] = config.intermediate_size;
  out["num_hidden_layers"] = config.num_hidden_layers;
  out["num_attention_heads"] = config.num_attention_heads;
  out["num_key_value_heads"] = config.num_key_value_heads;
  out["head_dim"] = config.head_dim;
  out["hidden_act"] = "silu";
  out["attention_bias"] = false;
  out["mlp_bias"] = false;
  out["rms_norm_eps"] = config.rms_norm_eps;
  out["rope_theta"] = config.rope_theta;
  const RopeScaling& scaling = config.rope_scaling;
  if (scaling.type == RopeScaling::Type::None) {
    out["rope_scaling"] = nullptr;
  } else if (scaling.type == RopeScaling::Type::Linear) {
    // Both spellings, so old and new transformers versions read it.
    out["rope_scaling"] = {{"rope_type", "linear"}, {"type", "linear"}, {"factor", scaling.factor}};
  } else {
    out["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", scaling.factor},
        {"low_freq_factor", scaling.low_freq_factor},
        {"high_freq_factor", scaling.high_freq_factor},
        {"original_max_position_embeddings", scaling.original_max_position_embeddings}};
  }
  out["max_position_embeddings"] = config.max_position_embeddings;
  out["tie_word_embeddings"] = config.tie_word_embeddings;
  out["bos_token_id"] =
      config.bos_token_id < 0 ? ordered_json() : ordered_json(config.bos_token_id);
  out["eos_token_id"] =
      config.eos_token_id < 0 ? ordered_json() : ordered_json(config.eos_token_id);
  out["torch_dtype"] = config.torch_dtype;
  return out.dump(2) + "\n";
}

}  // namespace bd
