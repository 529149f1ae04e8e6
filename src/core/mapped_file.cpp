#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "core/error.h"

namespace bd {

namespace {

// The live read-only maps (begin -> size), so that drop_pages() can tell a mapped range from
// memory where MADV_DONTNEED would zero the bytes instead of refetching them.
std::mutex live_maps_mutex;
std::map<const uint8_t*, size_t> live_maps;

FileIdentity identity_of(const struct stat& info) {
  auto nanoseconds = [](const struct timespec& time) {
    return int64_t(time.tv_sec) * 1'000'000'000 + int64_t(time.tv_nsec);
  };
  return {uint64_t(info.st_dev), uint64_t(info.st_ino), int64_t(info.st_size),
          nanoseconds(info.st_mtim), nanoseconds(info.st_ctim)};
}

}  // namespace

std::optional<FileIdentity> file_identity(const std::string& path) {
  struct stat info;
  if (::stat(path.c_str(), &info) != 0) return std::nullopt;
  return identity_of(info);
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat info;
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  size_ = size_t(info.st_size);
  identity_ = identity_of(info);
  if (size_ > 0) {
    void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      ::close(fd);
      fail(path, ": cannot map: ", std::strerror(errno));
    }
    data_ = static_cast<const uint8_t*>(map);
    std::lock_guard<std::mutex> lock(live_maps_mutex);
    live_maps[data_] = size_;
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (!data_) return;
  {
    std::lock_guard<std::mutex> lock(live_maps_mutex);
    live_maps.erase(data_);
  }
  ::munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::drop_pages(const void* data, size_t size) {
  const uint8_t* begin = static_cast<const uint8_t*>(data);
  std::lock_guard<std::mutex> lock(live_maps_mutex);
  auto map = live_maps.upper_bound(begin);  // the first map that starts after `begin`
  if (size == 0 || map == live_maps.begin()) return;
  --map;
  const uint8_t* map_end = map->first + map->second;
  if (begin >= map_end || size > size_t(map_end - begin)) return;
  // A private read-only map holds no modified pages, so dropping them loses nothing. The range
  // is widened to whole pages, which the map covers (it starts on a page and ends on one).
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t first = uintptr_t(begin) & ~(page - 1);
  const uintptr_t last = (uintptr_t(begin + size) + page - 1) & ~(page - 1);
  ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open: ", std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail(path, ": read error");
  return buffer.str();
}

}  // namespace bd
