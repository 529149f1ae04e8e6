// Atomic file output: write to a temp file in the destination's folder, fsync, rename.
// A crash or an error leaves either the old file or nothing, never a partial file.
#pragma once
#include <cstddef>
#include <cstdio>
#include <string>

namespace bd {

class AtomicFile {
 public:
  // Refuses (bd::Error) if `path` exists and !overwrite.
  AtomicFile(const std::string& path, bool overwrite);
  ~AtomicFile();  // removes the temp file unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void commit();  // flush, fsync, rename over `path`, fsync the folder

 private:
  std::string path_;
  std::string temp_path_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// Writes a whole small file atomically.
void write_file_atomic(const std::string& path, const std::string& contents, bool overwrite);

// Creates `path` readable and writable by its owner only (mode 0600) and writes `contents`
// (key files); never replaces an existing file, and leaves none behind when writing fails.
void write_new_private_file(const std::string& path, const std::string& contents);

// Directory helpers for output folders (HF checkpoints).
bool path_exists(const std::string& path);
void make_dirs(const std::string& path);  // mkdir -p; throws bd::Error

}  // namespace bd
