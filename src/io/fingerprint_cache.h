// A machine-local cache of model fingerprints, so that a model already hashed on this machine is
// not hashed again: a base is compressed against by every fine-tune of it, and SHA-256 over a
// 1.1B BF16 model costs about a second of CPU per core even with SHA extensions.
//
// As in git's index, an entry is keyed by the identity of the files the fingerprint covers
// (model.safetensors or every shard): for each, its canonical path, device, inode, size, mtime
// and ctime in nanoseconds. Writing, truncating, replacing, moving or touching a file changes its
// key, and so does restoring an old mtime (the ctime moves, and no user can set it back).
//
// Racy-clean rule: an entry is stored only when every file's mtime and ctime are at least
// kRacyWindow older than the moment its key was taken, just before hashing began. A file written
// in the same timestamp tick as the key was taken could be written again, after the hash read
// it, without its stat changing; once its times lie 2 s in the past (more than any file system's
// timestamp granularity, FAT's 2 s included), any later write gives it new ones. Models written
// moments ago are therefore hashed every time until they are 2 s old.
//
// The cache never fails a command: an unreadable, corrupt or unwritable cache reads as a miss
// and the fingerprint is computed. docs/formats.md (Fingerprint cache) describes the files.
#pragma once
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "core/mapped_file.h"

namespace bd {

class Checkpoint;
class SafetensorsFile;

// A file's mtime and ctime must be at least this much older than FingerprintKey::taken for the
// fingerprint of its bytes to be stored.
inline constexpr std::chrono::seconds kRacyWindow{2};

// The files a fingerprint covers, as stat'ed at `taken`.
struct FingerprintKey {
  struct File {
    std::string path;  // canonical: absolute, symlinks resolved
    FileIdentity identity;
    bool operator==(const File&) const = default;
  };
  std::vector<File> files;
  std::chrono::system_clock::time_point taken;  // just before the files were stat'ed
};

// The key of the checkpoint's files as they are now; nullopt (do not use the cache) when one can
// no longer be stat'ed through its path or is not the file the checkpoint mapped, unchanged
// (replaced or written since it was opened): its fingerprint would describe other bytes.
// Never throws.
std::optional<FingerprintKey> fingerprint_key(const Checkpoint& checkpoint);
// The same for any safetensors files (an adapter: one file).
std::optional<FingerprintKey> fingerprint_key(const std::vector<const SafetensorsFile*>& files);

class FingerprintCache {
 public:
  // Entries kept; storing one more removes the least recently used (stored or found).
  static constexpr size_t kMaxEntries = 1000;

  // The folder the environment selects: none when BITDELTA_NO_FINGERPRINT_CACHE is set to
  // anything but "" or "0"; else $BITDELTA_CACHE_DIR/fingerprints, else
  // $XDG_CACHE_HOME/bitdelta/fingerprints (an absolute XDG_CACHE_HOME), else
  // $HOME/.cache/bitdelta/fingerprints; none when HOME is not set either.
  static FingerprintCache from_environment();
  // One small JSON file per key in `folder` (created on the first store); "" disables the cache.
  explicit FingerprintCache(std::string folder) : folder_(std::move(folder)) {}

  bool enabled() const { return !folder_.empty(); }
  const std::string& folder() const { return folder_; }

  // The fingerprint stored for exactly this key; nullopt when there is none or its entry is
  // unreadable or malformed. A hit marks the entry as recently used. Never throws.
  std::optional<std::string> find(const FingerprintKey& key) const;
  // Stores the fingerprint (64 lowercase hex characters) of the key's files when the racy-clean
  // rule allows it and every file still has the key's identity (none changed while it was
  // hashed); returns whether it did. Writes atomically, then keeps the newest kMaxEntries.
  // Never throws.
  bool store(const FingerprintKey& key, const std::string& fingerprint) const;

 private:
  std::string entry_path(const FingerprintKey& key) const;
  void keep_newest() const;

  std::string folder_;
};

// A checkpoint's fingerprint through the environment's cache, for code that hashes it itself:
// construct it just before hashing; use cached() when set, else hash and remember() the result.
class FingerprintLookup {
 public:
  explicit FingerprintLookup(const Checkpoint& checkpoint);
  explicit FingerprintLookup(const std::vector<const SafetensorsFile*>& files);

  const std::optional<std::string>& cached() const { return cached_; }
  // Stores a fingerprint just computed from the checkpoint's bytes (FingerprintCache::store).
  void remember(const std::string& fingerprint) const;

 private:
  FingerprintCache cache_;
  std::optional<FingerprintKey> key_;
  std::optional<std::string> cached_;
};

}  // namespace bd
