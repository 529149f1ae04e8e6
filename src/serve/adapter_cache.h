// The adapters a server can run: every NAME.bitdelta in one directory, loaded lazily into an LRU
// cache bounded by count and by bytes. A loaded adapter is its memory-mapped file plus the delta
// table that views it (model/llama_delta.h); running sequences hold it by shared_ptr, so an
// adapter in use is never unmapped, even when it is evicted, replaced or deleted meanwhile.
// Loads run on a loader thread, so that the engine's step loop never waits for a disk.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "io/adapter.h"
#include "model/llama_delta.h"

namespace bd {

class Checkpoint;
struct LlamaWeights;

// Memory of adapters' transposed signs that evicted adapters gave back, kept for the next loads
// (a load then neither faults nor zeroes 30,000 fresh pages for a 1.1B model's 121 MB: 35 ms
// instead of ~100 ms per load in a probe, docs/serving.md). Holds at most kMaxSpare allocations;
// shared by the cache and the deleters of its adapters, which may outlive it.
class SignPagesPool {
 public:
  static constexpr size_t kMaxSpare = 2;
  ~SignPagesPool();
  uint8_t* take(size_t bytes);              // a kept allocation of exactly `bytes`, or null
  bool keep(uint8_t* pages, size_t bytes);  // false: full (the caller unmaps)

 private:
  std::mutex mutex_;
  std::vector<std::pair<uint8_t*, size_t>> spare_;
};

// Hands transposed sign pages to their pool, or unmaps them.
struct SignPagesDeleter {
  size_t bytes = 0;
  std::shared_ptr<SignPagesPool> pool;
  void operator()(uint8_t* pages) const;
};

struct ServedAdapter {
  std::string name;
  std::unique_ptr<AdapterFile> file;
  LlamaDelta delta;  // views into file (and into sign_tiles)
  // The signs of every compressed linear in the lookup kernel's layout, where this CPU's kernel
  // has one (kernels/sign_matmul.h: pack_sign_tiles); null elsewhere.
  // Anonymous pages of their own (mmap), reused through the cache's SignPagesPool.
  std::unique_ptr<uint8_t[], SignPagesDeleter> sign_tiles;
  int64_t bytes = 0;        // what the cache counts: the file's size plus sign_tiles' bytes
  double load_seconds = 0;  // what loading it took (AdapterCacheStats::load_seconds)
};

struct AdapterCacheOptions {
  int64_t max_count = 10000;              // adapters resident at once
  int64_t max_bytes = int64_t(16) << 30;  // their bytes (ServedAdapter::bytes)
  int64_t max_upload_bytes = int64_t(1) << 30;
};

struct AdapterCacheStats {
  int64_t hits = 0, misses = 0, evictions = 0, loads = 0, load_failures = 0;
  int64_t resident = 0, resident_bytes = 0;
  double load_seconds = 0;  // spent in the loads counted by `loads` (the loader thread's work)
};

// Adapter names: 1-128 of [A-Za-z0-9._-], not starting with '.'; "base" is the base model's.
bool valid_adapter_name(const std::string& name);
inline constexpr const char* kBaseModelName = "base";

class AdapterCache {
 public:
  // `base`/`weights`: the served base (adapters must fit it). Starts the loader thread.
  AdapterCache(const Checkpoint& base, const LlamaWeights& weights, std::string dir,
               AdapterCacheOptions options = {});
  ~AdapterCache();  // stops the loader (a load in progress finishes first)
  AdapterCache(const AdapterCache&) = delete;
  AdapterCache& operator=(const AdapterCache&) = delete;

  enum class State { Ready, Loading, Failed, Missing };
  struct Lookup {
    State state = State::Missing;
    std::shared_ptr<const ServedAdapter> adapter;  // when Ready
    std::string error;                             // when Failed or Missing
  };
  // Never blocks on disk: a resident adapter is Ready (and becomes most recently used); otherwise
  // its load is queued (Loading) and `on_loaded` (see set_on_loaded) fires when it settles. A
  // failed load is reported once (Failed) and then forgotten, so a fixed file can be retried.
  Lookup get(const std::string& name);
  // Loads synchronously (benchmarks, tests): the adapter, or throws bd::Error.
  std::shared_ptr<const ServedAdapter> load_now(const std::string& name);
  // Called on the loader thread after each load settles (the engine wakes its loop with it).
  void set_on_loaded(std::function<void()> on_loaded);

  // The directory: names of every NAME.bitdelta (sorted), whether one exists, and its path.
  std::vector<std::string> list() const;
  bool exists(const std::string& name) const;
  std::string path_of(const std::string& name) const;
  // Stores `bytes` as adapter `name`: size-checked, validated as an adapter of this base (in a
  // temporary file of the directory), then renamed over any old version atomically; the old
  // version leaves the cache (running sequences keep it until they finish). Returns the info of
  // the stored file. Throws bd::Error (nothing changes) for an invalid adapter; `approve` sees the
  // validated adapter's metadata before it becomes visible and may throw to refuse it.
  AdapterInfo put(const std::string& name, const std::string& bytes,
                  const std::function<void(const AdapterInfo&)>& approve = {});
  // Deletes the file and drops the cached copy; false when there was none.
  bool remove(const std::string& name);
  // Reads an adapter's metadata (from the cache when resident). Throws bd::Error.
  AdapterInfo info(const std::string& name);

  AdapterCacheStats stats() const;
  const AdapterCacheOptions& options() const { return options_; }

 private:
  struct Entry {
    std::shared_ptr<const ServedAdapter> adapter;
    std::list<std::string>::iterator lru;  // position in lru_ (front: most recent)
  };
  std::shared_ptr<const ServedAdapter> load(const std::string& name) const;
  bool pack_tiles(ServedAdapter& adapter) const;
  void insert(std::shared_ptr<const ServedAdapter> adapter);  // a load that finished; mutex held
  void evict_over_limits();                                   // mutex held
  void forget(const std::string& name);  // drops a put or removed name; mutex held
  void loader_loop();

  const Checkpoint& base_;
  const LlamaWeights& weights_;
  const std::string dir_;
  const AdapterCacheOptions options_;
  std::string base_fingerprint_;
  std::shared_ptr<SignPagesPool> sign_pages_ = std::make_shared<SignPagesPool>();

  mutable std::mutex mutex_;
  std::map<std::string, Entry> resident_;
  std::list<std::string> lru_;
  std::set<std::string> queued_;                 // loads asked for and not settled
  std::deque<std::string> queue_;                // loads to run, in order
  std::map<std::string, std::string> failures_;  // settled failures not yet reported
  std::map<std::string, uint64_t> changes_;      // puts and removes per name
  AdapterCacheStats stats_;
  std::function<void()> on_loaded_;
  std::condition_variable wake_loader_;
  bool stopping_ = false;
  std::thread loader_;
};

}  // namespace bd
