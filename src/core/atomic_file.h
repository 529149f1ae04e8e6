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

// A file that several processes write at once, each its own byte ranges, then one renames into
// place: `create` (one process) makes PATH.partial with its final size, `write_at` (any process)
// writes and syncs a range, `commit` (the creator, after every write) renames it over PATH, and
// `discard` removes it. PATH.partial is the same name in every process, so it is never reused:
// one left behind by a stopped run must be removed by hand (the error says so).
class SharedFile {
 public:
  SharedFile(const std::string& path, bool overwrite);  // creates nothing yet
  void create(uint64_t size) const;
  void write_at(uint64_t offset, const void* data, size_t size) const;
  void commit() const;
  void discard() const;
  const std::string& temp_path() const { return temp_path_; }

 private:
  std::string path_, temp_path_;
  bool overwrite_;
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
