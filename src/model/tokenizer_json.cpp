#include "model/tokenizer_json.h"

#include "core/error.h"

namespace bd::tokjson {

std::string child(const std::string& where, const std::string& key) {
  return where.back() == ' ' ? where + key : where + "." + key;
}

std::string item(const std::string& where, size_t index) {
  return cat(where, "[", index, "]");
}

const json& field(const json& obj, const std::string& key, const std::string& where) {
  if (!obj.is_object()) fail(where, ": expected a JSON object");
  auto it = obj.find(key);
  if (it == obj.end()) fail(child(where, key), ": missing");
  return *it;
}

std::string string_field(const json& obj, const std::string& key, const std::string& where) {
  const json& value = field(obj, key, where);
  if (!value.is_string()) fail(child(where, key), ": expected a string");
  return value.get<std::string>();
}

bool bool_field(const json& obj, const std::string& key, const std::string& where, bool fallback) {
  if (!obj.is_object()) fail(where, ": expected a JSON object");
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail(child(where, key), ": expected true or false");
  return it->get<bool>();
}

const json& array_field(const json& obj, const std::string& key, const std::string& where) {
  const json& value = field(obj, key, where);
  if (!value.is_array()) fail(child(where, key), ": expected an array");
  return value;
}

std::string type_of(const json& obj, const std::string& where) {
  return string_field(obj, "type", where);
}

void unsupported(const std::string& where, const std::string& what) {
  fail(where, ": ", what, " is not supported by bitdelta (see docs/tokenizers.md)");
}

}  // namespace bd::tokjson
