#include "core/file_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace bd {

FileReader::FileReader(const std::string& path, const FileIdentity& identity) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) return;
  struct stat info;
  if (::fstat(fd_, &info) != 0 || uint64_t(info.st_dev) != identity.device ||
      uint64_t(info.st_ino) != identity.inode || int64_t(info.st_size) != identity.size) {
    ::close(fd_);
    fd_ = -1;
  }
}

FileReader::~FileReader() {
  if (fd_ >= 0) ::close(fd_);
}

void FileReader::read_at(uint64_t offset, size_t size, void* out) const {
  char* bytes = static_cast<char*>(out);
  size_t done = 0;
  while (done < size) {
    const ssize_t got = ::pread(fd_, bytes + done, size - done, off_t(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail(path_, ": read failed: ", std::strerror(errno));
    if (got == 0) fail(path_, ": file shorter than it was when opened");
    done += size_t(got);
  }
}

}  // namespace bd
