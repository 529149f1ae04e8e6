// A read-only memory map of a whole file; tensors are zero-copy views into it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace bd {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws bd::Error naming the path
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole (small) file into a string; throws bd::Error naming the path.
std::string read_file(const std::string& path);

}  // namespace bd
