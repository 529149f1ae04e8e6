#include "io/fingerprint_cache.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/sha256.h"
#include "io/checkpoint.h"

namespace bd {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kEntryVersion = 1;
const char kEntryKind[] = "bitdelta fingerprint cache entry";
// Temp files a killed writer left behind are removed once they are this old.
constexpr std::chrono::hours kStaleTempAge{1};

int64_t nanoseconds_since_epoch(std::chrono::system_clock::time_point time) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count();
}

json files_json(const FingerprintKey& key) {
  json files = json::array();
  for (const FingerprintKey::File& file : key.files)
    files.push_back({{"path", file.path},
                     {"device", file.identity.device},
                     {"inode", file.identity.inode},
                     {"size", file.identity.size},
                     {"mtime_ns", file.identity.mtime_ns},
                     {"ctime_ns", file.identity.ctime_ns}});
  return files;
}

bool is_fingerprint(const std::string& text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// The racy-clean rule (fingerprint_cache.h): every time at least kRacyWindow before the key.
bool settled(const FingerprintKey& key) {
  const int64_t limit = nanoseconds_since_epoch(key.taken) -
                        std::chrono::duration_cast<std::chrono::nanoseconds>(kRacyWindow).count();
  for (const FingerprintKey::File& file : key.files)
    if (file.identity.mtime_ns > limit || file.identity.ctime_ns > limit) return false;
  return true;
}

bool unchanged(const FingerprintKey& key) {
  for (const FingerprintKey::File& file : key.files)
    if (file_identity(file.path) != file.identity) return false;
  return true;
}

bool switched_off(const char* value) {
  return value && *value && std::string(value) != "0";
}

}  // namespace

std::optional<FingerprintKey> fingerprint_key(const Checkpoint& checkpoint) {
  return fingerprint_key(checkpoint.files());
}

std::optional<FingerprintKey> fingerprint_key(const std::vector<const SafetensorsFile*>& files) {
  try {
    FingerprintKey key;
    key.taken = std::chrono::system_clock::now();
    for (const SafetensorsFile* file : files) {
      std::error_code error;
      const fs::path path = fs::canonical(file->path(), error);
      if (error) return std::nullopt;
      const std::optional<FileIdentity> now = file_identity(path.string());
      if (!now || *now != file->identity()) return std::nullopt;
      key.files.push_back({path.string(), *now});
    }
    if (key.files.empty()) return std::nullopt;
    return key;
  } catch (...) {  // e.g. out of memory: hash as if there were no cache
    return std::nullopt;
  }
}

FingerprintCache FingerprintCache::from_environment() {
  if (switched_off(std::getenv("BITDELTA_NO_FINGERPRINT_CACHE"))) return FingerprintCache("");
  const char* own = std::getenv("BITDELTA_CACHE_DIR");
  if (own && *own) return FingerprintCache((fs::path(own) / "fingerprints").string());
  // The XDG spec: a relative XDG_CACHE_HOME is invalid and is to be ignored.
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg == '/')
    return FingerprintCache((fs::path(xdg) / "bitdelta/fingerprints").string());
  const char* home = std::getenv("HOME");
  if (home && *home)
    return FingerprintCache((fs::path(home) / ".cache/bitdelta/fingerprints").string());
  return FingerprintCache("");
}

std::string FingerprintCache::entry_path(const FingerprintKey& key) const {
  Sha256 hash;
  hash.update(files_json(key).dump());
  return (fs::path(folder_) / (hash.hex_digest() + ".json")).string();
}

std::optional<std::string> FingerprintCache::find(const FingerprintKey& key) const {
  if (!enabled()) return std::nullopt;
  try {
    const std::string path = entry_path(key);
    if (!path_exists(path)) return std::nullopt;
    const json entry = json::parse(read_file(path));
    if (!entry.is_object() || entry.value("kind", "") != kEntryKind ||
        entry.value("version", 0) != kEntryVersion ||
        entry.value("files", json()) != files_json(key))
      return std::nullopt;
    const std::string fingerprint = entry.value("fingerprint", "");
    if (!is_fingerprint(fingerprint)) return std::nullopt;
    ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);  // recently used: kept by keep_newest()
    return fingerprint;
  } catch (...) {  // unreadable or not JSON: a miss
    return std::nullopt;
  }
}

bool FingerprintCache::store(const FingerprintKey& key, const std::string& fingerprint) const {
  if (!enabled() || key.files.empty() || !is_fingerprint(fingerprint) || !settled(key) ||
      !unchanged(key))
    return false;
  try {
    const json entry = {{"kind", kEntryKind},
                        {"version", kEntryVersion},
                        {"files", files_json(key)},
                        {"fingerprint", fingerprint}};
    make_dirs(folder_);
    write_file_atomic(entry_path(key), entry.dump(1) + "\n", true);
    keep_newest();
    return true;
  } catch (...) {  // a cache that cannot be written costs a hash next time, nothing more
    return false;
  }
}

// Removes the least recently used entries beyond kMaxEntries, and stale temp files.
void FingerprintCache::keep_newest() const {
  std::vector<std::pair<fs::file_time_type, fs::path>> entries;
  const auto now = fs::file_time_type::clock::now();
  std::error_code error;
  for (fs::directory_iterator it(folder_, error), end; !error && it != end; it.increment(error)) {
    std::error_code stat_error;
    const fs::file_time_type time = it->last_write_time(stat_error);
    if (stat_error) continue;
    const std::string name = it->path().filename().string();
    if (name.find(".json.tmp.") != std::string::npos && now - time > kStaleTempAge)
      fs::remove(it->path(), stat_error);
    else if (name.ends_with(".json"))
      entries.emplace_back(time, it->path());
  }
  if (entries.size() <= kMaxEntries) return;
  std::sort(entries.begin(), entries.end());
  for (size_t i = 0; i < entries.size() - kMaxEntries; ++i) fs::remove(entries[i].second, error);
}

FingerprintLookup::FingerprintLookup(const Checkpoint& checkpoint)
    : FingerprintLookup(checkpoint.files()) {}

FingerprintLookup::FingerprintLookup(const std::vector<const SafetensorsFile*>& files)
    : cache_(FingerprintCache::from_environment()) {
  if (!cache_.enabled()) return;
  key_ = fingerprint_key(files);
  if (key_) cached_ = cache_.find(*key_);
}

void FingerprintLookup::remember(const std::string& fingerprint) const {
  if (key_) cache_.store(*key_, fingerprint);
}

}  // namespace bd
