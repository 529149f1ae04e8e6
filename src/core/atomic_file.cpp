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

SharedFile::SharedFile(const std::string& path, bool overwrite)
    : path_(path), temp_path_(path + ".partial"), overwrite_(overwrite) {}

void SharedFile::create(uint64_t size) const {
  if (!overwrite_ && path_exists(path_)) fail(path_, ": already exists (use --force to overwrite)");
  const int fd = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0 && errno == EEXIST)
    fail(temp_path_, ": exists (another run writing ", path_,
         ", or one that was stopped: remove it)");
  if (fd < 0) fail(temp_path_, ": cannot create: ", std::strerror(errno));
  const bool sized = ::ftruncate(fd, off_t(size)) == 0;
  const int error = errno;
  ::close(fd);
  if (!sized) {
    ::unlink(temp_path_.c_str());
    fail(temp_path_, ": cannot size to ", size, " bytes: ", std::strerror(error));
  }
}

void SharedFile::write_at(uint64_t offset, const void* data, size_t size) const {
  const int fd = ::open(temp_path_.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) fail(temp_path_, ": cannot open: ", std::strerror(errno));
  const char* bytes = static_cast<const char*>(data);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd, bytes + done, size - done, off_t(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = errno;
      ::close(fd);
      fail(temp_path_, ": write failed: ", std::strerror(error));
    }
    done += size_t(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced) fail(temp_path_, ": cannot flush: ", std::strerror(errno));
}

void SharedFile::commit() const {
  if (!overwrite_ && path_exists(path_)) fail(path_, ": already exists (use --force to overwrite)");
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
    fail(path_, ": cannot rename ", temp_path_, " into place: ", std::strerror(errno));
  int dir = ::open(parent_dir(path_).c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

void SharedFile::discard() const {
  ::unlink(temp_path_.c_str());
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
