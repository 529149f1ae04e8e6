#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "core/atomic_file.h"
#include "core/error.h"

namespace bd {

namespace {

using nlohmann::json;

uint64_t read_u64_le(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

void write_u64_le(uint64_t value, uint8_t* bytes) {
  for (int i = 0; i < 8; ++i) bytes[i] = uint8_t(value >> (8 * i));
}

std::string tensor_suffix(const std::string& name) {
  return " (tensor " + quote_bytes(name) + ")";
}

// Parses the header JSON. nlohmann keeps the last of duplicate keys silently, so the parser
// callback records keys per object and reports the first one that repeats.
json parse_header_json(const std::string& path, const char* text, size_t size) {
  if (size == 0 || text[0] != '{')
    fail(path, ": header is not a JSON object (must start with '{')");
  // nlohmann stops at a NUL as if the input ended; valid JSON never holds a raw NUL.
  if (std::memchr(text, '\0', size)) fail(path, ": header is not valid JSON: it holds a NUL byte");
  std::vector<std::set<std::string>> keys_per_object;
  std::string duplicate;
  int duplicate_depth = 0;
  auto check_duplicates = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) keys_per_object.emplace_back();
    if (event == json::parse_event_t::object_end) keys_per_object.pop_back();
    if (event == json::parse_event_t::key && duplicate.empty() &&
        !keys_per_object.back().insert(parsed.get<std::string>()).second) {
      duplicate = parsed.get<std::string>();
      duplicate_depth = depth;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text, text + size, check_duplicates);
  } catch (const json::exception& error) {
    fail(path, ": header is not valid JSON: ", escape_bytes(error.what(), 2 * kMaxQuotedBytes));
  }
  if (!duplicate.empty()) {
    if (duplicate_depth == 1) fail(path, ": duplicate tensor name", tensor_suffix(duplicate));
    fail(path, ": duplicate key ", quote_bytes(duplicate), " in header");
  }
  if (!header.is_object()) fail(path, ": header is not a JSON object");
  return header;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& value) {
  if (!value.is_object()) fail(path, ": __metadata__ is not a JSON object");
  std::map<std::string, std::string> metadata;
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string())
      fail(path, ": __metadata__ value of ", quote_bytes(key), " is not a string");
    metadata[key] = item.get<std::string>();
  }
  return metadata;
}

// One header entry before its bytes are located in the file.
struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

uint64_t parse_offset(const std::string& path, const std::string& name, const json& value) {
  if (!value.is_number_unsigned())
    fail(path, ": data_offsets must be non-negative integers", tensor_suffix(name));
  return value.get<uint64_t>();
}

Entry parse_entry(const std::string& path, const std::string& name, const json& value) {
  std::string where = tensor_suffix(name);
  if (name.empty()) fail(path, ": empty tensor name");
  if (!value.is_object()) fail(path, ": entry is not a JSON object", where);
  for (const auto& [key, item] : value.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail(path, ": unknown field ", quote_bytes(key), where);
  if (!value.contains("dtype") || !value["dtype"].is_string())
    fail(path, ": missing or non-string dtype", where);
  Entry entry{name, DType::F32, {}, 0, 0};
  std::string dtype = value["dtype"].get<std::string>();
  if (!parse_dtype(dtype, &entry.dtype))
    fail(path, ": unsupported dtype ", quote_bytes(dtype), where);

  if (!value.contains("shape") || !value["shape"].is_array())
    fail(path, ": missing or non-array shape", where);
  if (value["shape"].size() > kMaxTensorRank)
    fail(path, ": shape has ", value["shape"].size(), " dimensions, more than the limit of ",
         kMaxTensorRank, where);
  uint64_t numel = 1;
  for (const json& dim : value["shape"]) {
    if (!dim.is_number_unsigned()) fail(path, ": shape must hold non-negative integers", where);
    if (dim.get<uint64_t>() > kMaxTensorExtent)
      fail(path, ": shape extent ", dim.get<uint64_t>(), " exceeds the limit of ", kMaxTensorExtent,
           where);
    uint64_t extent = dim.get<uint64_t>();
    if (__builtin_mul_overflow(numel, extent, &numel) || numel > uint64_t(INT64_MAX))
      fail(path, ": shape ", escape_bytes(value["shape"].dump(), kMaxQuotedBytes), " is too large",
           where);
    entry.shape.push_back(int64_t(extent));
  }

  const json& offsets = value.contains("data_offsets") ? value["data_offsets"] : json();
  if (!offsets.is_array() || offsets.size() != 2)
    fail(path, ": data_offsets must be [begin, end]", where);
  entry.begin = parse_offset(path, name, offsets[0]);
  entry.end = parse_offset(path, name, offsets[1]);
  if (entry.end < entry.begin)
    fail(path, ": data_offsets [", entry.begin, ", ", entry.end, "] end before begin", where);
  uint64_t expected = 0;
  if (__builtin_mul_overflow(numel, uint64_t(dtype_size(entry.dtype)), &expected) ||
      entry.end - entry.begin != expected)
    fail(path, ": data_offsets [", entry.begin, ", ", entry.end, "] hold ", entry.end - entry.begin,
         " bytes but ", dtype, " ", shape_str(entry.shape), " needs ",
         numel * dtype_size(entry.dtype), where);
  return entry;
}

// The spec requires the tensors to tile the data section exactly: sorted by offset, each one
// starts where the previous ended, the first at 0 and the last at the section's end.
void check_tiling(const std::string& path, std::vector<Entry>& entries, uint64_t data_size) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t cursor = 0;
  for (const Entry& entry : entries) {
    if (entry.end > data_size)
      fail(path, ": data_offsets [", entry.begin, ", ", entry.end, "] run past the data section (",
           data_size, " bytes; file truncated?)", tensor_suffix(entry.name));
    if (entry.begin < cursor)
      fail(path, ": data_offsets [", entry.begin, ", ", entry.end,
           "] overlap the previous tensor, which ends at ", cursor, tensor_suffix(entry.name));
    if (entry.begin > cursor)
      fail(path, ": gap in the data section: bytes [", cursor, ", ", entry.begin,
           ") belong to no tensor", tensor_suffix(entry.name));
    cursor = entry.end;
  }
  if (cursor != data_size)
    fail(path, ": data section has ", data_size, " bytes but the tensors cover ", cursor,
         " (trailing bytes)");
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path)
    : path_(path), file_(std::make_unique<MappedFile>(path)) {
  const uint8_t* bytes = file_->data();
  uint64_t file_size = file_->size();
  if (file_size < 8)
    fail(path, ": truncated: ", file_size, " bytes, too short for a safetensors header");
  uint64_t header_size = read_u64_le(bytes);
  if (header_size > kMaxSafetensorsHeader)
    fail(path, ": header size ", header_size, " exceeds the limit of ", kMaxSafetensorsHeader);
  if (header_size > file_size - 8)
    fail(path, ": header size ", header_size, " is larger than the ", file_size - 8,
         " bytes after it (truncated file?)");
  json header = parse_header_json(path, reinterpret_cast<const char*>(bytes + 8), header_size);

  std::vector<Entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__")
      metadata_ = parse_metadata(path, value);
    else
      entries.push_back(parse_entry(path, name, value));
  }
  uint64_t data_size = file_size - 8 - header_size;
  check_tiling(path, entries, data_size);

  const uint8_t* data = bytes + 8 + header_size;
  uint64_t copied_bytes = 0;
  for (const Entry& entry : entries) {
    const uint8_t* tensor_data = data + entry.begin;
    if (reinterpret_cast<uintptr_t>(tensor_data) % dtype_size(entry.dtype) != 0) {
      const uint64_t size = entry.end - entry.begin;
      std::vector<uint64_t>& copy = aligned_copies_.emplace_back((size + 7) / 8);
      std::memcpy(copy.data(), tensor_data, size);
      tensor_data = reinterpret_cast<const uint8_t*>(copy.data());
      copied_bytes += size;
    }
    names_.push_back(entry.name);
    tensors_[entry.name] = TensorView{entry.dtype, entry.shape, tensor_data};
  }
  if (!aligned_copies_.empty())
    warn(path, ": ", aligned_copies_.size(), " of ", entries.size(),
         " tensors are not aligned to their dtype in the file (its header is not padded to a "
         "multiple of 8 bytes); copying ",
         copied_bytes, " bytes of them to memory");
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const TensorView& SafetensorsFile::get(const std::string& name) const {
  const TensorView* view = find(name);
  if (!view) fail(path_, ": no tensor ", quote_bytes(name));
  return *view;
}

std::vector<NamedTensor> SafetensorsFile::tensors() const {
  std::vector<NamedTensor> out;
  for (const std::string& name : names_) out.push_back({name, tensors_.at(name)});
  return out;
}

namespace {

// The tensors in data-section order, checked: valid unique names, no negative extents.
std::vector<const NamedTensor*> data_order(const std::string& path,
                                           const std::vector<NamedTensor>& tensors) {
  std::vector<const NamedTensor*> order;
  std::set<std::string> seen;
  for (const NamedTensor& tensor : tensors) {
    if (tensor.name.empty() || tensor.name == "__metadata__")
      fail(path, ": invalid tensor name", tensor_suffix(tensor.name));
    if (!seen.insert(tensor.name).second)
      fail(path, ": duplicate tensor name", tensor_suffix(tensor.name));
    for (int64_t extent : tensor.view.shape)
      if (extent < 0)
        fail(path, ": negative dimension in shape ", shape_str(tensor.view.shape),
             tensor_suffix(tensor.name));
    order.push_back(&tensor);
  }
  // Largest element size first: every offset is then a multiple of each tensor's dtype size.
  std::sort(order.begin(), order.end(), [](const NamedTensor* a, const NamedTensor* b) {
    size_t size_a = dtype_size(a->view.dtype), size_b = dtype_size(b->view.dtype);
    return size_a != size_b ? size_a > size_b : a->name < b->name;
  });
  return order;
}

}  // namespace

std::optional<uint64_t> SafetensorsFile::file_offset(const TensorView& view) const {
  const uint8_t* begin = static_cast<const uint8_t*>(view.data);
  const uint8_t* map = file_->data();
  if (!begin || !map || begin < map || begin + view.bytes() > map + file_->size())
    return std::nullopt;
  return uint64_t(begin - map);
}

SafetensorsLayout safetensors_layout(const std::string& path,
                                     const std::vector<NamedTensor>& tensors,
                                     const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<std::pair<std::string, uint64_t>> data_offsets;
  for (const NamedTensor* tensor : data_order(path, tensors)) {
    uint64_t end = offset + tensor->view.bytes();
    header[tensor->name] = {{"dtype", std::string(dtype_name(tensor->view.dtype))},
                            {"shape", tensor->view.shape},
                            {"data_offsets", {offset, end}}};
    data_offsets.emplace_back(tensor->name, offset);
    offset = end;
  }
  std::string header_text = header.dump();
  header_text.resize((header_text.size() + 7) / 8 * 8, ' ');  // keeps the data 8-byte aligned
  SafetensorsLayout layout;
  layout.head.resize(8);
  write_u64_le(header_text.size(), reinterpret_cast<uint8_t*>(layout.head.data()));
  layout.head += header_text;
  for (const auto& [name, data_offset] : data_offsets)
    layout.offsets[name] = layout.head.size() + data_offset;
  layout.file_size = layout.head.size() + offset;
  return layout;
}

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata, bool overwrite) {
  for (const NamedTensor& tensor : tensors)
    if (tensor.view.bytes() > 0 && !tensor.view.data)
      fail(path, ": tensor has no data", tensor_suffix(tensor.name));
  const SafetensorsLayout layout = safetensors_layout(path, tensors, metadata);
  AtomicFile file(path, overwrite);
  file.write(layout.head.data(), layout.head.size());
  for (const NamedTensor* tensor : data_order(path, tensors))
    file.write(tensor->view.data, tensor->view.bytes());
  file.commit();
}

}  // namespace bd
