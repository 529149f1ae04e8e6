// libFuzzer target: bd::SafetensorsFile (src/io/safetensors.h) on arbitrary file bytes.
//
// Input: the whole file. It is written to the scratch folder and opened by path, since the reader
// maps the file. An accepted file must give views that hold exactly the bytes its header's
// data_offsets name in the input: that catches a view outside the data section even where it
// still lies inside the mapping (ASan does not watch mapped memory) and a wrong aligned copy.
#include <cstring>
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "io/safetensors.h"

namespace {

using bd::fuzz::die;
using bd::fuzz::shown;

// Where the input's header puts one tensor: [begin, end) in the input.
struct Located {
  size_t begin, end;
};

// Reads the header independently of the reader. Only called on files the reader accepted, so the
// header is known to be a JSON object with valid data_offsets.
class Header {
 public:
  explicit Header(std::string_view file) {
    uint64_t size = 0;
    for (int i = 7; i >= 0; --i) size = (size << 8) | uint8_t(file[i]);
    json_ = nlohmann::json::parse(file.substr(8, size));
    data_start_ = 8 + size;
  }
  Located locate(const std::string& name) const {
    const nlohmann::json& offsets = json_.at(name).at("data_offsets");
    return {data_start_ + offsets[0].get<size_t>(), data_start_ + offsets[1].get<size_t>()};
  }

 private:
  nlohmann::json json_;
  size_t data_start_ = 0;
};

void check_views(const bd::SafetensorsFile& file, std::string_view input) {
  const Header header(input);
  uint64_t sum = 0;
  for (const bd::NamedTensor& tensor : file.tensors()) {
    const Located at = header.locate(tensor.name);
    const size_t bytes = tensor.view.bytes();
    if (at.end - at.begin != bytes || at.end > input.size())
      die("tensor " + shown(tensor.name) + ": its view's size disagrees with its data_offsets");
    if (bytes && std::memcmp(tensor.view.data, input.data() + at.begin, bytes) != 0)
      die("tensor " + shown(tensor.name) + ": its view does not hold the bytes data_offsets name");
    sum += bd::fuzz::sum_bytes(tensor.view.data, bytes);
    if (file.find(tensor.name) != &file.get(tensor.name)) die("find() and get() disagree");
  }
  if (file.names().size() != file.tensors().size()) die("names() and tensors() disagree");
  // Keeps the reads from being optimised away.
  if (sum == UINT64_MAX) die("impossible byte sum");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input = bd::fuzz::as_text(data, size);
  bd::fuzz::Scratch& scratch = bd::fuzz::Scratch::get();
  scratch.clear();
  const std::string path = scratch.write("input.safetensors", input);
  bd::fuzz::refused([&] {
    const bd::SafetensorsFile file(path);
    check_views(file, input);
  });
  return 0;
}
