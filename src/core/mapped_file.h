// A read-only memory map of a whole file; tensors are zero-copy views into it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace bd {

// What tells a file's contents apart without reading them, as git's index does: any write,
// truncation, rename over it, chmod or touch changes at least one field (ctime cannot be set
// back by a user). Times are nanoseconds since the Unix epoch.
struct FileIdentity {
  uint64_t device = 0, inode = 0;
  int64_t size = 0, mtime_ns = 0, ctime_ns = 0;
  bool operator==(const FileIdentity&) const = default;
};

// The identity of the file at `path` now (symlinks followed); nullopt when it cannot be stat'ed.
std::optional<FileIdentity> file_identity(const std::string& path);

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws bd::Error naming the path
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // The file as it was opened (fstat of the descriptor that was mapped).
  const FileIdentity& identity() const { return identity_; }

  // Gives back the resident pages that overlap [data, data + size), when that range lies in a
  // live MappedFile (anything else, e.g. a heap copy of a tensor, is left alone). The bytes stay
  // readable: the next access maps them again from the page cache. Streaming jobs call it on
  // what they have processed so that their resident memory stays bounded by a few tensors
  // instead of growing to the size of the files they map.
  static void drop_pages(const void* data, size_t size);

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  FileIdentity identity_;
};

// Reads a whole (small) file into a string; throws bd::Error naming the path.
std::string read_file(const std::string& path);

}  // namespace bd
