#include "core/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace bd {

namespace {
std::string parent_dir(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}
}  // namespace

bool path_exists(const std::string& path) {
  std::error_code error;
  return std::filesystem::exists(path, error);
}

void make_dirs(const std::string& path) {
  std::error_code error;
  std::filesystem::create_directories(path, error);
  if (error) fail(path, ": cannot create folder: ", error.message());
}

AtomicFile::AtomicFile(const std::string& path, bool overwrite) : path_(path) {
  if (!overwrite && path_exists(path)) fail(path, ": already exists (use --force to overwrite)");
  std::string pattern = path + ".tmp.XXXXXX";
  int fd = ::mkstemp(pattern.data());
  if (fd < 0)
    fail(path, ": cannot create temp file in ", parent_dir(path), ": ", std::strerror(errno));
  temp_path_ = pattern;
  ::fchmod(fd, 0644);
  file_ = ::fdopen(fd, "wb");
  if (!file_) {
    ::close(fd);
    ::unlink(temp_path_.c_str());
    fail(path, ": cannot open temp file: ", std::strerror(errno));
  }
}

AtomicFile::~AtomicFile() {
  if (file_) std::fclose(file_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

void AtomicFile::write(const void* data, size_t size) {
  if (size && std::fwrite(data, 1, size, file_) != size)
    fail(path_, ": write failed: ", std::strerror(errno));
}

void AtomicFile::commit() {
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0)
    fail(path_, ": cannot flush: ", std::strerror(errno));
  std::fclose(file_);
  file_ = nullptr;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
    fail(path_, ": cannot rename temp file into place: ", std::strerror(errno));
  committed_ = true;
  int dir = ::open(parent_dir(path_).c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

void write_file_atomic(const std::string& path, const std::string& contents, bool overwrite) {
  AtomicFile file(path, overwrite);
  file.write(contents.data(), contents.size());
  file.commit();
}

void write_new_private_file(const std::string& path, const std::string& contents) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) fail(path, " exists; a key file is never overwritten");
    fail("cannot create ", path, ": ", std::strerror(errno));
  }
  const bool written =
      ::write(fd, contents.data(), contents.size()) == ssize_t(contents.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!written) {
    ::unlink(path.c_str());
    fail("cannot write ", path);
  }
}

}  // namespace bd
