#include "serve/adapter_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>

#include "core/error.h"
#include "core/huge_pages.h"
#include "core/mapped_file.h"
#include "io/checkpoint.h"
#include "kernels/sign_matmul.h"
#include "model/llama.h"

namespace bd {

namespace fs = std::filesystem;

namespace {

constexpr const char* kAdapterSuffix = ".bitdelta";

// Replaces every occurrence of `from` in `text` (error messages that name a temporary file).
std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

void fsync_path(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) fail("cannot open ", path, " to sync it");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) fail("cannot sync ", path);
}

// Reads one byte of every page of the adapter's tensors (with `signs`, the signs too), so that
// their page faults (and disk reads) happen here, on the loader thread, not inside the first step
// that uses the adapter, where they would stall every sequence of the batch.
void prefault(const AdapterFile& file, bool signs) {
  constexpr size_t kPage = 4096;
  uint64_t sum = 0;
  auto touch = [&sum](const TensorView& view) {
    const volatile uint8_t* bytes = static_cast<const uint8_t*>(view.data);
    for (size_t i = 0; i < view.bytes(); i += kPage) sum += bytes[i];
  };
  if (signs)
    for (const AdapterMatrix& m : file.matrices()) touch(m.sign);
  for (const AdapterExact& e : file.exact()) touch(e.delta);
  static std::atomic<uint64_t> sink{0};  // keeps the reads
  sink += sum;
}

}  // namespace

SignPagesPool::~SignPagesPool() {
  for (const auto& [pages, bytes] : spare_) ::munmap(pages, bytes);
}

uint8_t* SignPagesPool::take(size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = spare_.begin(); it != spare_.end(); ++it)
    if (it->second == bytes) {
      uint8_t* pages = it->first;
      spare_.erase(it);
      return pages;
    }
  return nullptr;
}

bool SignPagesPool::keep(uint8_t* pages, size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (spare_.size() >= kMaxSpare) return false;
  spare_.emplace_back(pages, bytes);
  return true;
}

void SignPagesDeleter::operator()(uint8_t* pages) const {
  if (!pool || !pool->keep(pages, bytes)) ::munmap(pages, bytes);
}

// Transposes the signs of every compressed linear into the lookup kernel's layout, where this
// CPU's kernel has one: once here, on the loader thread (one thread), instead of in every step
// that uses the adapter, into pages an evicted adapter gave back when there are some. The mapped
// sign pages are then given back: steps read the copy (the bits stay in the file, and in the
// page cache, for prompt chunks long enough to go through SGEMM). False where there is no layout.
bool AdapterCache::pack_tiles(ServedAdapter& adapter) const {
  int64_t total = 0;
  for (const AdapterMatrix& m : adapter.file->matrices()) total += sign_tiles_bytes(m.out, m.in);
  if (total == 0) return false;
  const size_t bytes = size_t(total);
  uint8_t* pages = sign_pages_->take(bytes);
  if (!pages) {  // in huge pages: every step streams them (core/huge_pages.h)
    const std::string what = "the transposed signs of adapter " + quote_bytes(adapter.name);
    pages = allocate_huge_pages(bytes, what.c_str()).release();  // SignPagesDeleter unmaps them
  }
  adapter.sign_tiles =
      std::unique_ptr<uint8_t[], SignPagesDeleter>(pages, SignPagesDeleter{bytes, sign_pages_});
  uint8_t* next = pages;
  for (const AdapterMatrix& m : adapter.file->matrices()) {
    const uint8_t* bits = m.sign.as<uint8_t>();
    pack_sign_tiles(bits, m.out, m.in, next);
    for (LinearDelta& linear : adapter.delta.linears)
      if (linear.sign.bits == bits) linear.sign.tiles = next;
    MappedFile::drop_pages(bits, m.sign.bytes());
    next += sign_tiles_bytes(m.out, m.in);
  }
  adapter.bytes += total;
  return true;
}

bool valid_adapter_name(const std::string& name) {
  if (name.empty() || name.size() > 128 || name[0] == '.' || name == kBaseModelName) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

AdapterCache::AdapterCache(const Checkpoint& base, const LlamaWeights& weights, std::string dir,
                           AdapterCacheOptions options)
    : base_(base), weights_(weights), dir_(std::move(dir)), options_(options) {
  if (!fs::is_directory(dir_)) fail("adapter directory ", dir_, " does not exist");
  if (options_.max_count < 1 || options_.max_bytes < 1 || options_.max_upload_bytes < 1)
    fail("adapter cache limits must be positive");
  base_fingerprint_ = base_.fingerprint();
  loader_ = std::thread([this] { loader_loop(); });
}

AdapterCache::~AdapterCache() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_loader_.notify_all();
  loader_.join();
}

std::string AdapterCache::path_of(const std::string& name) const {
  return (fs::path(dir_) / (name + kAdapterSuffix)).string();
}

bool AdapterCache::exists(const std::string& name) const {
  return valid_adapter_name(name) && fs::is_regular_file(path_of(name));
}

std::vector<std::string> AdapterCache::list() const {
  std::vector<std::string> names;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir_, error)) {
    const std::string file = entry.path().filename().string();
    if (file.size() <= 9 || file.compare(file.size() - 9, 9, kAdapterSuffix) != 0) continue;
    const std::string name = file.substr(0, file.size() - 9);
    if (valid_adapter_name(name) && entry.is_regular_file(error)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::shared_ptr<const ServedAdapter> AdapterCache::load(const std::string& name) const {
  if (!valid_adapter_name(name)) fail("invalid adapter name ", quote_bytes(name));
  const std::string path = path_of(name);
  if (!fs::is_regular_file(path)) fail("no adapter named ", quote_bytes(name));
  const auto start = std::chrono::steady_clock::now();
  auto adapter = std::make_shared<ServedAdapter>();
  adapter->name = name;
  adapter->file = std::make_unique<AdapterFile>(path);
  adapter->file->check_base(base_, base_fingerprint_);
  adapter->delta =
      make_llama_delta(weights_, base_.dir(), adapter->file->matrices(), adapter->file->exact());
  adapter->bytes = int64_t(fs::file_size(path));
  prefault(*adapter->file, /*signs=*/!pack_tiles(*adapter));
  adapter->load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return adapter;
}

void AdapterCache::insert(std::shared_ptr<const ServedAdapter> adapter) {
  ++stats_.loads;
  stats_.load_seconds += adapter->load_seconds;
  const std::string name = adapter->name;
  auto it = resident_.find(name);
  if (it != resident_.end()) {
    stats_.resident_bytes -= it->second.adapter->bytes;
    lru_.erase(it->second.lru);
    resident_.erase(it);
  }
  lru_.push_front(name);
  stats_.resident_bytes += adapter->bytes;
  resident_[name] = Entry{std::move(adapter), lru_.begin()};
  evict_over_limits();
  stats_.resident = int64_t(resident_.size());
}

// Least recently used first; an adapter a running sequence holds (use_count > 1) stays, so the
// limits may be exceeded while every resident adapter is in use.
void AdapterCache::evict_over_limits() {
  auto over = [&] {
    return int64_t(resident_.size()) > options_.max_count ||
           stats_.resident_bytes > options_.max_bytes;
  };
  for (auto it = lru_.end(); over() && it != lru_.begin();) {
    --it;
    auto entry = resident_.find(*it);
    if (entry->second.adapter.use_count() > 1) continue;
    stats_.resident_bytes -= entry->second.adapter->bytes;
    resident_.erase(entry);
    it = lru_.erase(it);
    ++stats_.evictions;
  }
  stats_.resident = int64_t(resident_.size());
}

AdapterCache::Lookup AdapterCache::get(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = resident_.find(name);
  if (it != resident_.end()) {
    ++stats_.hits;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return Lookup{State::Ready, it->second.adapter, ""};
  }
  if (auto failed = failures_.find(name); failed != failures_.end()) {
    Lookup lookup{State::Failed, nullptr, failed->second};
    failures_.erase(failed);
    return lookup;
  }
  if (!queued_.count(name)) {
    if (!exists(name)) return Lookup{State::Missing, nullptr, cat("no adapter named '", name, "'")};
    ++stats_.misses;
    queued_.insert(name);
    queue_.push_back(name);
    wake_loader_.notify_one();
  }
  return Lookup{State::Loading, nullptr, ""};
}

std::shared_ptr<const ServedAdapter> AdapterCache::load_now(const std::string& name) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = resident_.find(name);
    if (it != resident_.end()) {
      ++stats_.hits;
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      return it->second.adapter;
    }
    ++stats_.misses;
  }
  std::shared_ptr<const ServedAdapter> adapter = load(name);
  std::lock_guard<std::mutex> lock(mutex_);
  insert(adapter);
  return adapter;
}

void AdapterCache::set_on_loaded(std::function<void()> on_loaded) {
  std::lock_guard<std::mutex> lock(mutex_);
  on_loaded_ = std::move(on_loaded);
}

void AdapterCache::loader_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    wake_loader_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    const std::string name = queue_.front();
    queue_.pop_front();
    const uint64_t version = changes_[name];
    lock.unlock();
    std::shared_ptr<const ServedAdapter> adapter;
    std::string error;
    try {
      adapter = load(name);
    } catch (const std::exception& e) {
      error = e.what();
    }
    lock.lock();
    // A put or remove while this load ran made its result stale.
    queued_.erase(name);
    if (changes_[name] == version) {
      if (adapter) {
        insert(std::move(adapter));
      } else {
        ++stats_.load_failures;
        failures_[name] = error;
      }
    }
    std::function<void()> notify = on_loaded_;
    lock.unlock();
    if (notify) notify();
    lock.lock();
  }
}

AdapterInfo AdapterCache::put(const std::string& name, const std::string& bytes,
                              const std::function<void(const AdapterInfo&)>& approve) {
  if (!valid_adapter_name(name))
    fail("invalid adapter name ", quote_bytes(name),
         ": use 1-128 of A-Z a-z 0-9 . _ -, not starting with '.', and not 'base'");
  if (int64_t(bytes.size()) > options_.max_upload_bytes)
    fail("adapter upload of ", bytes.size(), " bytes exceeds the limit of ",
         options_.max_upload_bytes, " bytes");
  std::random_device random;
  const std::string temp =
      (fs::path(dir_) / cat(".", name, ".upload-", random(), random(), ".tmp")).string();
  struct RemoveTemp {
    const std::string& path;
    ~RemoveTemp() {
      std::error_code ignored;
      fs::remove(path, ignored);
    }
  } remove_temp{temp};
  {
    std::FILE* file = std::fopen(temp.c_str(), "wb");
    if (!file) fail("cannot create ", temp);
    const bool written = std::fwrite(bytes.data(), 1, bytes.size(), file) == bytes.size() &&
                         std::fflush(file) == 0 && ::fsync(::fileno(file)) == 0;
    std::fclose(file);
    if (!written) fail("cannot write the uploaded adapter to ", dir_);
  }
  AdapterInfo info;
  try {
    const AdapterFile adapter(temp);
    adapter.check_base(base_, base_fingerprint_);
    make_llama_delta(weights_, base_.dir(), adapter.matrices(), adapter.exact());
    info = adapter.info();
  } catch (const Error& e) {
    throw Error(replace_all(e.what(), temp, "uploaded adapter"));
  }
  if (approve) approve(info);
  std::lock_guard<std::mutex> lock(mutex_);  // no load of this name starts or lands meanwhile
  fs::rename(temp, path_of(name));
  fsync_path(dir_, O_RDONLY | O_DIRECTORY);
  forget(name);
  return info;
}

bool AdapterCache::remove(const std::string& name) {
  if (!valid_adapter_name(name)) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  std::error_code error;
  const bool removed = fs::remove(path_of(name), error);
  forget(name);
  return removed;
}

void AdapterCache::forget(const std::string& name) {
  if (auto it = resident_.find(name); it != resident_.end()) {
    stats_.resident_bytes -= it->second.adapter->bytes;
    lru_.erase(it->second.lru);
    resident_.erase(it);
    stats_.resident = int64_t(resident_.size());
  }
  queued_.erase(name);
  failures_.erase(name);
  ++changes_[name];  // a load of the old file still running is now stale
}

AdapterInfo AdapterCache::info(const std::string& name) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = resident_.find(name);
    if (it != resident_.end()) return it->second.adapter->file->info();
  }
  if (!exists(name)) fail("no adapter named ", quote_bytes(name));
  return AdapterFile(path_of(name)).info();
}

AdapterCacheStats AdapterCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace bd
