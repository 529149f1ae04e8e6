// Reading tokenizer.json fields with errors that name the file and the field's path, e.g.
// "/m/tokenizer.json: pre_tokenizer.pretokenizers[0].behavior: expected a string".
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace bd::tokjson {

using nlohmann::json;

// `where` is "<file>: <path of obj>"; these return `where` + "." + key and so on.
std::string child(const std::string& where, const std::string& key);
std::string item(const std::string& where, size_t index);

const json& field(const json& obj, const std::string& key, const std::string& where);  // required
std::string string_field(const json& obj, const std::string& key, const std::string& where);
bool bool_field(const json& obj, const std::string& key, const std::string& where, bool fallback);
const json& array_field(const json& obj, const std::string& key, const std::string& where);
std::string type_of(const json& obj, const std::string& where);  // obj["type"]

[[noreturn]] void unsupported(const std::string& where, const std::string& what);

}  // namespace bd::tokjson
