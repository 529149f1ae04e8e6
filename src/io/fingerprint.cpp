#include "io/fingerprint.h"

#include <algorithm>

#include "core/error.h"
#include "core/sha256.h"

namespace bd {

void fingerprint_update(Sha256& hash, const NamedTensor& tensor) {
  std::string shape;
  for (size_t d = 0; d < tensor.view.shape.size(); ++d)
    shape += (d ? "," : "") + std::to_string(tensor.view.shape[d]);
  const std::string bytes = std::to_string(tensor.view.bytes());
  const char separator = 0;
  for (std::string_view field : {std::string_view(tensor.name), dtype_name(tensor.view.dtype),
                                 std::string_view(shape), std::string_view(bytes)}) {
    hash.update(field);
    hash.update(&separator, 1);
  }
  hash.update(tensor.view.data, tensor.view.bytes());
}

std::string fingerprint_tensors(const std::vector<NamedTensor>& tensors) {
  std::vector<const NamedTensor*> by_name;
  for (const NamedTensor& tensor : tensors) by_name.push_back(&tensor);
  std::sort(by_name.begin(), by_name.end(),
            [](const NamedTensor* a, const NamedTensor* b) { return a->name < b->name; });
  for (size_t i = 1; i < by_name.size(); ++i)
    if (by_name[i]->name == by_name[i - 1]->name)
      fail("fingerprint: duplicate tensor name ", quote_bytes(by_name[i]->name));

  Sha256 hash;
  for (const NamedTensor* tensor : by_name) fingerprint_update(hash, *tensor);
  return hash.hex_digest();
}

}  // namespace bd
