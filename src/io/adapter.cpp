#include "io/adapter.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/fingerprint.h"
#include "io/fingerprint_cache.h"
#include "io/safetensors.h"

namespace bd {

namespace {

using nlohmann::json;

// __metadata__ keys (docs/format.md). Every key under "bitdelta." is one of these.
const std::string kVersionKey = "bitdelta.format_version";
const std::string kBaseKey = "bitdelta.base_fingerprint";
const std::string kFinetuneKey = "bitdelta.finetune_fingerprint";
const std::string kOwnerKey = "bitdelta.owner";
const std::string kScaleModeKey = "bitdelta.scale_mode";
const std::string kGranularityKey = "bitdelta.granularity";
const std::string kPrivacyKey = "bitdelta.privacy";
const std::string kToolKey = "bitdelta.tool_version";
const std::string kCreatedKey = "bitdelta.created";
const std::string kShapesKey = "bitdelta.shapes";  // {W: [out, in]} of the compressed weights
const std::string kNamespace = "bitdelta.";

const std::string kSignSuffix = ".sign", kScaleSuffix = ".scale", kDeltaSuffix = ".delta";

// Bytes per packed sign row (kernels/sign_matmul.h's sign_row_bytes; io sits below kernels).
int64_t sign_row_bytes(int64_t in) {
  return (in + 7) / 8;
}

bool is_hex64(const std::string& text) {
  if (text.size() != 64) return false;
  for (char c : text)
    if (!std::isdigit(static_cast<unsigned char>(c)) && (c < 'a' || c > 'f')) return false;
  return true;
}

// YYYY-MM-DDTHH:MM:SSZ
bool is_utc_timestamp(const std::string& text) {
  static const std::string pattern = "dddd-dd-ddTdd:dd:ddZ";
  if (text.size() != pattern.size()) return false;
  for (size_t i = 0; i < text.size(); ++i)
    if (pattern[i] == 'd' ? !std::isdigit(static_cast<unsigned char>(text[i]))
                          : text[i] != pattern[i])
      return false;
  return true;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() > suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string strip(const std::string& text, const std::string& suffix) {
  return text.substr(0, text.size() - suffix.size());
}

// The fields every adapter must hold, with the values this version understands.
void check_info(const std::string& where, const AdapterInfo& info) {
  if (info.version != kAdapterFormatVersion)
    fail(where, ": unknown adapter format version ", info.version, " (this bitdelta reads ",
         kAdapterFormatVersion, ")");
  if (!is_hex64(info.base_fingerprint))
    fail(where, ": ", kBaseKey, " must be 64 lowercase hex digits, got ",
         quote_bytes(info.base_fingerprint));
  if (!is_hex64(info.finetune_fingerprint))
    fail(where, ": ", kFinetuneKey, " must be 64 lowercase hex digits, got ",
         quote_bytes(info.finetune_fingerprint));
  if (!info.owner.empty() && !valid_owner_did(info.owner))
    fail(where, ": ", kOwnerKey, " ", quote_bytes(info.owner),
         " is not a did:lux DID (did:lux:<id>, see docs/format.md)");
  if (info.scale_mode != "mean" && info.scale_mode != "distill")
    fail(where, ": ", kScaleModeKey, " must be 'mean' or 'distill', got ",
         quote_bytes(info.scale_mode));
  if (info.granularity != "matrix" && info.granularity != "row")
    fail(where, ": ", kGranularityKey, " must be 'matrix' or 'row', got ",
         quote_bytes(info.granularity));
  if (!info.privacy.empty()) {
    json privacy = json::parse(info.privacy, nullptr, false);
    if (!privacy.is_object())
      fail(where, ": ", kPrivacyKey, " must be a JSON object of strings, got ",
           quote_bytes(info.privacy));
    for (const auto& [key, value] : privacy.items())
      if (!value.is_string() || key.rfind("privacy.", 0) != 0)
        fail(where, ": ", kPrivacyKey, " entry ", quote_bytes(key),
             " must be a \"privacy.*\" key with a string value");
  }
  if (info.tool_version.empty()) fail(where, ": ", kToolKey, " is empty");
  if (!is_utc_timestamp(info.created))
    fail(where, ": ", kCreatedKey, " must be UTC ISO 8601 (2026-11-27T10:00:00Z), got ",
         quote_bytes(info.created));
  for (const auto& [key, value] : info.extra)
    if (key.rfind(kNamespace, 0) == 0) fail(where, ": unknown metadata key ", quote_bytes(key));
}

// need_data: false for a tensor another process writes (SharedAdapterWriter): only its shape is
// checked when it has no data here.
void check_matrix(const std::string& where, const AdapterMatrix& matrix, bool per_row,
                  bool need_data = true) {
  const std::string tensor = " (tensor " + quote_bytes(matrix.name) + ")";
  if (matrix.out < 1 || matrix.in < 1 || matrix.out > kMaxAdapterExtent ||
      matrix.in > kMaxAdapterExtent)
    fail(where, ": compressed weight has shape [", matrix.out, ", ", matrix.in,
         "]; each extent must lie in [1, ", kMaxAdapterExtent, "]", tensor);
  const Shape sign_shape = {matrix.out, sign_row_bytes(matrix.in)};
  if (matrix.sign.dtype != DType::U8 || matrix.sign.shape != sign_shape)
    fail(where, ": ", matrix.name, kSignSuffix, " is ", dtype_name(matrix.sign.dtype), " ",
         shape_str(matrix.sign.shape), " but a [", matrix.out, ", ", matrix.in,
         "] weight needs U8 ", shape_str(sign_shape));
  const Shape scale_shape = {per_row ? matrix.out : 1};
  if (matrix.scale.dtype != DType::F32 || matrix.scale.shape != scale_shape)
    fail(where, ": ", matrix.name, kScaleSuffix, " is ", dtype_name(matrix.scale.dtype), " ",
         shape_str(matrix.scale.shape), " but granularity '", per_row ? "row" : "matrix",
         "' needs F32 ", shape_str(scale_shape));
  if (!need_data && !matrix.sign.data && !matrix.scale.data) return;
  if (!matrix.sign.data || !matrix.scale.data) fail(where, ": no data", tensor);
  const float* scale = matrix.scale.as<float>();
  for (int64_t i = 0; i < matrix.scale.numel(); ++i)
    if (!std::isfinite(scale[i]))
      fail(where, ": ", matrix.name, kScaleSuffix, "[", i, "] is ", scale[i]);
  // Padding bits (past `in` in each row's last byte) are 0, so that one adapter has one encoding.
  if (matrix.in % 8 == 0) return;
  const uint8_t padding = uint8_t(0xff << (matrix.in % 8));
  const int64_t row_bytes = sign_row_bytes(matrix.in);
  const uint8_t* bits = matrix.sign.as<uint8_t>();
  for (int64_t row = 0; row < matrix.out; ++row)
    if (bits[row * row_bytes + row_bytes - 1] & padding)
      fail(where, ": ", matrix.name, kSignSuffix, " row ", row, " has padding bits set");
}

void check_exact(const std::string& where, const AdapterExact& exact, bool need_data = true) {
  if (!is_float(exact.delta.dtype))
    fail(where, ": ", exact.name, kDeltaSuffix, " has dtype ", dtype_name(exact.delta.dtype),
         "; deltas are F32, F16 or BF16");
  if (need_data && exact.delta.bytes() > 0 && !exact.delta.data)
    fail(where, ": no data (tensor ", quote_bytes(exact.name), ")");
}

void check_names(const std::string& where, const std::vector<AdapterMatrix>& matrices,
                 const std::vector<AdapterExact>& exact) {
  std::set<std::string> names;
  for (const AdapterMatrix& matrix : matrices)
    if (matrix.name.empty() || !names.insert(matrix.name).second)
      fail(where, ": duplicate or empty weight name ", quote_bytes(matrix.name));
  for (const AdapterExact& kept : exact)
    if (kept.name.empty() || !names.insert(kept.name).second)
      fail(where, ": weight ", quote_bytes(kept.name), " appears twice (compressed and exact?)");
}

std::map<std::string, std::string> to_metadata(const AdapterInfo& info,
                                               const std::vector<AdapterMatrix>& matrices) {
  std::map<std::string, std::string> metadata = info.extra;
  metadata[kVersionKey] = std::to_string(info.version);
  metadata[kBaseKey] = info.base_fingerprint;
  metadata[kFinetuneKey] = info.finetune_fingerprint;
  if (!info.owner.empty()) metadata[kOwnerKey] = info.owner;
  metadata[kScaleModeKey] = info.scale_mode;
  metadata[kGranularityKey] = info.granularity;
  if (!info.privacy.empty()) metadata[kPrivacyKey] = info.privacy;
  metadata[kToolKey] = info.tool_version;
  metadata[kCreatedKey] = info.created;
  json shapes = json::object();
  for (const AdapterMatrix& matrix : matrices) shapes[matrix.name] = {matrix.out, matrix.in};
  metadata[kShapesKey] = shapes.dump();
  return metadata;
}

std::string required(const std::string& where, const std::map<std::string, std::string>& metadata,
                     const std::string& key) {
  auto it = metadata.find(key);
  if (it == metadata.end()) fail(where, ": __metadata__ has no ", quote_bytes(key));
  return it->second;
}

AdapterInfo parse_info(const std::string& where,
                       const std::map<std::string, std::string>& metadata) {
  AdapterInfo info;
  const std::string version = required(where, metadata, kVersionKey);
  if (version != std::to_string(kAdapterFormatVersion))
    fail(where, ": unknown adapter format version ", quote_bytes(version), " (this bitdelta reads ",
         kAdapterFormatVersion, ")");
  info.base_fingerprint = required(where, metadata, kBaseKey);
  info.finetune_fingerprint = required(where, metadata, kFinetuneKey);
  info.scale_mode = required(where, metadata, kScaleModeKey);
  info.granularity = required(where, metadata, kGranularityKey);
  info.tool_version = required(where, metadata, kToolKey);
  info.created = required(where, metadata, kCreatedKey);
  const std::set<std::string> known = {kVersionKey,   kBaseKey,        kFinetuneKey, kOwnerKey,
                                       kScaleModeKey, kGranularityKey, kPrivacyKey,  kToolKey,
                                       kCreatedKey,   kShapesKey};
  for (const auto& [key, value] : metadata) {
    if (key == kOwnerKey) info.owner = value;
    if (key == kPrivacyKey) info.privacy = value;
    if (!known.count(key)) info.extra[key] = value;
  }
  check_info(where, info);
  return info;
}

// bitdelta.shapes: {"W": [out, in], ...}
std::map<std::string, std::pair<int64_t, int64_t>> parse_shapes(
    const std::string& where, const std::map<std::string, std::string>& metadata) {
  const json shapes = json::parse(required(where, metadata, kShapesKey), nullptr, false);
  if (!shapes.is_object()) fail(where, ": ", kShapesKey, " is not a JSON object");
  std::map<std::string, std::pair<int64_t, int64_t>> out;
  for (const auto& [name, shape] : shapes.items()) {
    auto extent_ok = [](const json& extent) {
      return extent.is_number_unsigned() && extent.get<uint64_t>() >= 1 &&
             extent.get<uint64_t>() <= uint64_t(kMaxAdapterExtent);
    };
    if (!shape.is_array() || shape.size() != 2 || !extent_ok(shape[0]) || !extent_ok(shape[1]))
      fail(where, ": ", kShapesKey, " entry for ", quote_bytes(name),
           " must be [out, in] with both in [1, ", kMaxAdapterExtent, "]");
    out[name] = {shape[0].get<int64_t>(), shape[1].get<int64_t>()};
  }
  return out;
}

}  // namespace

bool valid_owner_did(const std::string& did) {
  const std::string prefix = "did:lux:";
  if (did.size() <= prefix.size() || did.compare(0, prefix.size(), prefix) != 0) return false;
  if (did.back() == ':') return false;
  for (size_t i = prefix.size(); i < did.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(did[i]);
    if (std::isalnum(c) || c == '.' || c == '-' || c == '_' || c == ':') continue;
    if (c == '%' && i + 2 < did.size() && std::isxdigit(static_cast<unsigned char>(did[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(did[i + 2]))) {
      i += 2;
      continue;
    }
    return false;
  }
  return true;
}

AdapterSizes adapter_sizes(const std::vector<AdapterMatrix>& matrices,
                           const std::vector<AdapterExact>& exact) {
  AdapterSizes sizes;
  for (const AdapterMatrix& matrix : matrices) {
    sizes.compressed_parameters += matrix.out * matrix.in;
    sizes.sign_bytes += int64_t(matrix.sign.bytes());
    sizes.scale_bytes += int64_t(matrix.scale.bytes());
  }
  for (const AdapterExact& kept : exact) {
    sizes.exact_parameters += kept.delta.numel();
    sizes.exact_bytes += int64_t(kept.delta.bytes());
  }
  return sizes;
}

AdapterFile::AdapterFile(const std::string& path) : file_(std::make_unique<SafetensorsFile>(path)) {
  const auto& metadata = file_->metadata();
  if (!metadata.count(kVersionKey))
    fail(path, ": not a bitdelta adapter (its __metadata__ has no ", kVersionKey, ")");
  info_ = parse_info(path, metadata);
  const bool per_row = info_.granularity == "row";

  std::set<std::string> claimed;  // the file's tensors accounted for
  for (const auto& [name, shape] : parse_shapes(path, metadata)) {
    const TensorView* sign = file_->find(name + kSignSuffix);
    const TensorView* scale = file_->find(name + kScaleSuffix);
    if (!sign || !scale)
      fail(path, ": weight ", quote_bytes(name), " is listed in ", kShapesKey, " but has no ",
           sign ? name + kScaleSuffix : name + kSignSuffix, " tensor");
    matrices_.push_back({name, shape.first, shape.second, *sign, *scale});
    check_matrix(path, matrices_.back(), per_row);
    claimed.insert({name + kSignSuffix, name + kScaleSuffix});
  }
  for (const std::string& tensor : file_->names()) {
    if (claimed.count(tensor)) continue;
    if (!ends_with(tensor, kDeltaSuffix))
      fail(path, ": unexpected tensor ", quote_bytes(tensor), " (an adapter holds W", kSignSuffix,
           " and W", kScaleSuffix, " for the weights in ", kShapesKey, ", and W", kDeltaSuffix,
           ")");
    exact_.push_back({strip(tensor, kDeltaSuffix), file_->get(tensor)});
    check_exact(path, exact_.back());
  }
  std::sort(exact_.begin(), exact_.end(),
            [](const AdapterExact& a, const AdapterExact& b) { return a.name < b.name; });
  check_names(path, matrices_, exact_);
}

AdapterFile::~AdapterFile() = default;

const std::string& AdapterFile::path() const {
  return file_->path();
}

const AdapterMatrix* AdapterFile::find_matrix(const std::string& name) const {
  for (const AdapterMatrix& matrix : matrices_)
    if (matrix.name == name) return &matrix;
  return nullptr;
}

const AdapterExact* AdapterFile::find_exact(const std::string& name) const {
  for (const AdapterExact& kept : exact_)
    if (kept.name == name) return &kept;
  return nullptr;
}

void AdapterFile::check_base(const Checkpoint& base, const std::string& base_fingerprint) const {
  const std::string& where = path();
  const std::string wrong_base = " (is this the adapter's base?)";
  for (const AdapterMatrix& matrix : matrices_) {
    const TensorView* weight = base.find(matrix.name);
    const Shape shape = {matrix.out, matrix.in};
    if (!weight)
      fail(where, ": weight ", quote_bytes(matrix.name), " is not in the base ", base.dir(),
           wrong_base);
    if (weight->shape != shape)
      fail(where, ": weight ", quote_bytes(matrix.name), " is ", shape_str(shape), " here but ",
           shape_str(weight->shape), " in the base ", base.dir(), wrong_base);
  }
  for (const AdapterExact& kept : exact_) {
    const TensorView* weight = base.find(kept.name);
    if (!weight)
      fail(where, ": tensor ", quote_bytes(kept.name), " is not in the base ", base.dir(),
           wrong_base);
    if (weight->shape != kept.delta.shape || weight->dtype != kept.delta.dtype)
      fail(where, ": ", kept.name, kDeltaSuffix, " is ", dtype_name(kept.delta.dtype), " ",
           shape_str(kept.delta.shape), " but the base ", base.dir(), " has ",
           dtype_name(weight->dtype), " ", shape_str(weight->shape), wrong_base);
  }
  const std::string fingerprint = base_fingerprint.empty() ? base.fingerprint() : base_fingerprint;
  if (fingerprint != info_.base_fingerprint)
    fail(where, ": made for the base with fingerprint ", info_.base_fingerprint, ", but ",
         base.dir(), " has fingerprint ", fingerprint);
}

void write_adapter(const std::string& path, const AdapterInfo& info,
                   const std::vector<AdapterMatrix>& matrices,
                   const std::vector<AdapterExact>& exact, bool overwrite) {
  check_info(path, info);
  check_names(path, matrices, exact);
  std::vector<NamedTensor> tensors;
  for (const AdapterMatrix& matrix : matrices) {
    check_matrix(path, matrix, info.granularity == "row");
    tensors.push_back({matrix.name + kSignSuffix, matrix.sign});
    tensors.push_back({matrix.name + kScaleSuffix, matrix.scale});
  }
  for (const AdapterExact& kept : exact) {
    check_exact(path, kept);
    tensors.push_back({kept.name + kDeltaSuffix, kept.delta});
  }
  write_safetensors(path, tensors, to_metadata(info, matrices), overwrite);
}

SharedAdapterWriter::SharedAdapterWriter(const std::string& path, const AdapterInfo& info,
                                         const std::vector<AdapterMatrix>& matrices,
                                         const std::vector<AdapterExact>& exact, bool overwrite)
    : path_(path), info_(info), matrices_(matrices), file_(path, overwrite) {
  info_.finetune_fingerprint = std::string(64, '0');  // the version's place, until commit()
  check_info(path, info_);
  check_names(path, matrices, exact);
  for (const AdapterMatrix& matrix : matrices) {
    check_matrix(path, matrix, info.granularity == "row", /*need_data=*/false);
    tensors_.push_back({matrix.name + kSignSuffix, matrix.sign});
    tensors_.push_back({matrix.name + kScaleSuffix, matrix.scale});
  }
  for (const AdapterExact& kept : exact) {
    check_exact(path, kept, /*need_data=*/false);
    tensors_.push_back({kept.name + kDeltaSuffix, kept.delta});
  }
  layout_ = safetensors_layout(path, tensors_, to_metadata(info_, matrices_));
}

void SharedAdapterWriter::create() const {
  file_.create(layout_.file_size);
  file_.write_at(0, layout_.head.data(), layout_.head.size());
}

void SharedAdapterWriter::write_tensors() const {
  for (const NamedTensor& tensor : tensors_)
    if (tensor.view.data)
      file_.write_at(layout_.offsets.at(tensor.name), tensor.view.data, tensor.view.bytes());
}

std::string SharedAdapterWriter::commit() {
  const std::string version = adapter_fingerprint(file_.temp_path());
  info_.finetune_fingerprint = version;
  const SafetensorsLayout final_layout =
      safetensors_layout(path_, tensors_, to_metadata(info_, matrices_));
  if (final_layout.head.size() != layout_.head.size())
    fail(path_, ": the header changed length when its version was filled in");
  file_.write_at(0, final_layout.head.data(), final_layout.head.size());
  file_.commit();
  return version;
}

void SharedAdapterWriter::discard() const {
  file_.discard();
}

std::string adapter_fingerprint(const std::string& path) {
  const SafetensorsFile file(path);
  const FingerprintLookup lookup({&file});
  if (lookup.cached()) return *lookup.cached();
  std::vector<NamedTensor> tensors = file.tensors();
  std::sort(tensors.begin(), tensors.end(),
            [](const NamedTensor& x, const NamedTensor& y) { return x.name < y.name; });
  const std::string fingerprint = fingerprint_tensors(tensors);
  lookup.remember(fingerprint);
  return fingerprint;
}

}  // namespace bd
