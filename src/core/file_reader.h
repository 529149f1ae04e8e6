// Reads byte ranges of a file with pread(2): the kernel copies from its page cache through its
// own (huge-page) mapping of memory, where copying out of a memory map of the file walks one
// 4 KiB page table entry per page in this process (costly when many files are read a few KiB at
// a time, and more so in a virtual machine). DeltaSoup reads its inputs' signs this way.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/mapped_file.h"

namespace bd {

class FileReader {
 public:
  // Opens `path` when it is still the file described by `identity` (the one that was mapped);
  // else ok() is false and nothing can be read. Never throws.
  FileReader(const std::string& path, const FileIdentity& identity);
  ~FileReader();
  FileReader(const FileReader&) = delete;
  FileReader& operator=(const FileReader&) = delete;

  bool ok() const { return fd_ >= 0; }
  // size bytes at offset into out; throws bd::Error naming the file on a failed or short read.
  void read_at(uint64_t offset, size_t size, void* out) const;

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace bd
