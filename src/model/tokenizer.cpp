#include "model/tokenizer.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"
#include "model/bpe_tokenizer.h"
#include "model/tokenizer_json.h"

namespace bd {

std::unique_ptr<Tokenizer> parse_tokenizer_json(std::string_view json_text,
                                                const std::string& source) {
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& error) {  // also out_of_range: a number like 1e999
    fail(source, ": not valid JSON (", error.what(), ")");
  }
  if (!config.is_object()) fail(source, ": expected a JSON object (a Hugging Face tokenizer.json)");
  const nlohmann::json& model = tokjson::field(config, "model", source + ": ");
  // Files from before "type" was written hold a BPE model if they have merges.
  const std::string type = model.is_object() && !model.contains("type") && model.contains("merges")
                               ? "BPE"
                               : tokjson::type_of(model, source + ": model");
  if (type != "BPE")
    tokjson::unsupported(source + ": model.type", "the model type '" + type + "' (supported: BPE)");
  try {
    return std::make_unique<BpeTokenizer>(config, source);
  } catch (const nlohmann::json::exception& error) {  // a value of the wrong JSON type
    fail(source, ": unexpected JSON value (", error.what(), ")");
  }
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& tokenizer_json_path) {
  return parse_tokenizer_json(read_file(tokenizer_json_path), tokenizer_json_path);
}

std::unique_ptr<Tokenizer> load_tokenizer_for_model(const std::string& model_dir) {
  return load_tokenizer(model_dir + "/tokenizer.json");
}

}  // namespace bd
