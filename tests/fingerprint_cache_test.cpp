// The machine's fingerprint cache (io/fingerprint_cache.h): a hit gives the fingerprint computed
// from the bytes; any change to a file (content at the same size, an mtime moved either way, a
// replacement) is a miss; files younger than the racy window are not stored; a corrupt or
// unwritable cache is ignored; BITDELTA_NO_FINGERPRINT_CACHE turns it off; sharded checkpoints;
// the bound on entries; and compress_delta skipping the hash of cached models.
//
// Storing needs files whose mtime and ctime are 2 s old, and no one can set a ctime back, so
// most tests take their keys "3 s later" (FingerprintKey::taken moved forward); one test waits
// out the window for real.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint_pair.h"
#include "core/threads.h"
#include "delta/compress.h"
#include "io/checkpoint.h"
#include "io/fingerprint.h"
#include "io/fingerprint_cache.h"
#include "test_util.h"

namespace bd {
namespace {

namespace fs = std::filesystem;
using test::ScratchDir;
using namespace std::chrono_literals;

// A fingerprint-shaped value no model has: a hit on a "poisoned" entry proves it was read.
const std::string kPoison(64, 'a');

// Sets (or, with nullptr, unsets) an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    value ? ::setenv(name, value, 1) : ::unsetenv(name);
  }
  ~ScopedEnv() { old_ ? ::setenv(name_, old_->c_str(), 1) : ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Sets a file's mtime, `age` before now (negative: in the future). Its ctime becomes now.
void set_mtime(const std::string& path, std::chrono::nanoseconds age) {
  const auto when = std::chrono::system_clock::now() - age;
  const int64_t ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(when.time_since_epoch()).count();
  const struct timespec times[2] = {{0, UTIME_OMIT}, {ns / 1'000'000'000, ns % 1'000'000'000}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
}

// Overwrites the file's last byte in place (same size, other content), then puts its mtime back,
// as `touch -r` or rsync -t would: only the ctime tells.
void rewrite_last_byte_keeping_mtime(const std::string& path) {
  struct stat before;
  ASSERT_EQ(::stat(path.c_str(), &before), 0);
  std::this_thread::sleep_for(20ms);  // a later tick of the file system's coarse clock
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  unsigned char byte;
  ASSERT_EQ(::pread(fd, &byte, 1, before.st_size - 1), 1);
  byte ^= 0x40;
  ASSERT_EQ(::pwrite(fd, &byte, 1, before.st_size - 1), 1);
  const struct timespec times[2] = {{0, UTIME_OMIT}, before.st_mtim};
  ASSERT_EQ(::futimens(fd, times), 0);
  ::close(fd);
}

int entry_count(const std::string& folder) {
  if (!fs::exists(folder)) return 0;
  int count = 0;
  for (const auto& entry : fs::directory_iterator(folder))
    count += entry.path().extension() == ".json";
  return count;
}

// The entry file in `folder` that records `fingerprint`; "" when none does.
std::string entry_holding(const std::string& folder, const std::string& fingerprint) {
  for (const auto& entry : fs::directory_iterator(folder)) {
    if (entry.path().extension() != ".json") continue;
    const nlohmann::json parsed = nlohmann::json::parse(read_file(entry.path()), nullptr, false);
    if (parsed.is_object() && parsed.value("fingerprint", "") == fingerprint)
      return entry.path().string();
  }
  return "";
}

class FingerprintCacheTest : public ::testing::Test {
 protected:
  void SetUp() override { config_ = test::small_llama_config(); }

  // The key of the checkpoint's files as if taken 3 s from now, when they will be settled.
  static FingerprintKey settled_key(const Checkpoint& checkpoint) {
    std::optional<FingerprintKey> key = fingerprint_key(checkpoint);
    EXPECT_TRUE(key.has_value()) << checkpoint.dir();
    key->taken += kRacyWindow + 1s;
    return *key;
  }
  // Saves random tensors (seed) as a one-file checkpoint in `dir`.
  test::LlamaTensors save_model(const std::string& dir, uint32_t seed) {
    test::LlamaTensors weights = test::random_llama_tensors(config_, seed, DType::BF16);
    save_checkpoint(dir, config_, weights.views(), "", {}, false);
    return weights;
  }
  FingerprintCache cache() const { return FingerprintCache::from_environment(); }

  ScratchDir scratch_;
  ScopedEnv cache_dir_{"BITDELTA_CACHE_DIR", (scratch_ / "cache").c_str()};
  ScopedEnv enabled_{"BITDELTA_NO_FINGERPRINT_CACHE", nullptr};
  LlamaConfig config_;
};

TEST_F(FingerprintCacheTest, EnvironmentChoosesTheFolder) {
  EXPECT_EQ(cache().folder(), scratch_ / "cache/fingerprints");
  {
    ScopedEnv own("BITDELTA_CACHE_DIR", nullptr), xdg("XDG_CACHE_HOME", "/x/cache");
    EXPECT_EQ(cache().folder(), "/x/cache/bitdelta/fingerprints");
    ScopedEnv relative("XDG_CACHE_HOME", "relative/cache"), home("HOME", "/home/u");
    EXPECT_EQ(cache().folder(), "/home/u/.cache/bitdelta/fingerprints");
    ScopedEnv no_home("HOME", nullptr);
    EXPECT_FALSE(cache().enabled());
  }
  {
    ScopedEnv off("BITDELTA_NO_FINGERPRINT_CACHE", "1");
    EXPECT_FALSE(cache().enabled());
  }
  ScopedEnv zero("BITDELTA_NO_FINGERPRINT_CACHE", "0");
  EXPECT_TRUE(cache().enabled());
}

TEST_F(FingerprintCacheTest, HitGivesTheComputedFingerprintWithoutHashing) {
  const test::LlamaTensors weights = save_model(scratch_ / "model", 1);
  const std::string computed = fingerprint_tensors(weights.views());
  const Checkpoint checkpoint(scratch_ / "model");
  const FingerprintKey key = settled_key(checkpoint);
  ASSERT_EQ(key.files.size(), 1u);
  EXPECT_EQ(key.files[0].path, fs::canonical(scratch_ / "model/model.safetensors").string());

  EXPECT_FALSE(cache().find(key));
  ASSERT_TRUE(cache().store(key, computed));
  EXPECT_EQ(entry_count(cache().folder()), 1);
  EXPECT_EQ(cache().find(key), computed);
  EXPECT_EQ(Checkpoint(scratch_ / "model").fingerprint(), computed);

  // Checkpoint::fingerprint() returns what the entry says (here a poisoned value), so it did not
  // hash; through a symlinked folder the canonical path finds the same entry.
  ASSERT_TRUE(cache().store(key, kPoison));
  EXPECT_EQ(Checkpoint(scratch_ / "model").fingerprint(), kPoison);
  fs::create_directory_symlink(scratch_ / "model", scratch_ / "link");
  EXPECT_EQ(Checkpoint(scratch_ / "link").fingerprint(), kPoison);
  EXPECT_EQ(entry_count(cache().folder()), 1);
}

TEST_F(FingerprintCacheTest, AnyChangeToTheFileIsAMiss) {
  save_model(scratch_ / "model", 2);
  const std::string file = scratch_ / "model/model.safetensors";
  set_mtime(file, 1h);
  const FingerprintKey original = settled_key(Checkpoint(scratch_ / "model"));
  ASSERT_TRUE(cache().store(original, kPoison));

  // Same size, one byte different, mtime put back: the ctime moved.
  rewrite_last_byte_keeping_mtime(file);
  {
    const Checkpoint changed(scratch_ / "model");
    const FingerprintKey key = settled_key(changed);
    EXPECT_EQ(key.files[0].identity.size, original.files[0].identity.size);
    EXPECT_EQ(key.files[0].identity.mtime_ns, original.files[0].identity.mtime_ns);
    EXPECT_FALSE(cache().find(key));
    EXPECT_EQ(changed.fingerprint(), fingerprint_tensors(changed.tensors()));
    EXPECT_NE(changed.fingerprint(), kPoison);
  }
  // Touched forward, content unchanged: a miss all the same (the cache cannot tell).
  const FingerprintKey rewritten = settled_key(Checkpoint(scratch_ / "model"));
  ASSERT_TRUE(cache().store(rewritten, kPoison));
  set_mtime(file, -1s);
  EXPECT_NE(Checkpoint(scratch_ / "model").fingerprint(), kPoison);

  // A file written after the checkpoint opened it, or replaced under its name: no key at all,
  // since the mapped bytes may not be the file's.
  const Checkpoint opened(scratch_ / "model");
  set_mtime(file, 2h);
  EXPECT_FALSE(fingerprint_key(opened));
  save_model(scratch_ / "other", 3);
  fs::rename(scratch_ / "other/model.safetensors", file);
  EXPECT_FALSE(fingerprint_key(opened));

  // A file changed while it was being hashed: the key no longer matches it, nothing stored.
  const FingerprintKey before = settled_key(Checkpoint(scratch_ / "model"));
  set_mtime(file, 3h);
  EXPECT_FALSE(cache().store(before, kPoison));
}

TEST_F(FingerprintCacheTest, FilesYoungerThanTheRacyWindowAreNotStored) {
  const test::LlamaTensors weights = save_model(scratch_ / "model", 4);
  const std::string computed = fingerprint_tensors(weights.views());
  const Checkpoint fresh(scratch_ / "model");
  const std::optional<FingerprintKey> now = fingerprint_key(fresh);
  ASSERT_TRUE(now);
  EXPECT_FALSE(cache().store(*now, computed));
  EXPECT_EQ(fresh.fingerprint(), computed);  // computed, and not stored either
  EXPECT_EQ(entry_count(cache().folder()), 0);

  // An old mtime does not help: the ctime is now. Nor does an mtime in the future.
  set_mtime(scratch_ / "model/model.safetensors", 1h);
  EXPECT_FALSE(cache().store(*fingerprint_key(Checkpoint(scratch_ / "model")), computed));
  set_mtime(scratch_ / "model/model.safetensors", -1h);
  EXPECT_FALSE(cache().store(settled_key(Checkpoint(scratch_ / "model")), computed));
  EXPECT_EQ(entry_count(cache().folder()), 0);
}

TEST_F(FingerprintCacheTest, CorruptOrUnwritableCacheIsIgnored) {
  const test::LlamaTensors weights = save_model(scratch_ / "model", 5);
  const std::string computed = fingerprint_tensors(weights.views());
  const FingerprintKey key = settled_key(Checkpoint(scratch_ / "model"));
  ASSERT_TRUE(cache().store(key, kPoison));
  const std::string entry = fs::directory_iterator(cache().folder())->path().string();

  const nlohmann::json valid = nlohmann::json::parse(read_file(entry));
  nlohmann::json bad_fingerprint = valid, other_file = valid, other_version = valid;
  bad_fingerprint["fingerprint"] = "xyz";
  other_file["files"][0]["inode"] = 1;
  other_version["version"] = 2;
  for (const std::string& contents :
       {std::string("{not json"), std::string(""), std::string("[1, 2]"), bad_fingerprint.dump(),
        other_file.dump(), other_version.dump()}) {
    SCOPED_TRACE(contents);
    test::write_bytes(entry, contents);
    EXPECT_FALSE(cache().find(key));
    EXPECT_EQ(Checkpoint(scratch_ / "model").fingerprint(), computed);
  }
  ASSERT_TRUE(cache().store(key, kPoison));  // a store repairs the entry
  EXPECT_EQ(cache().find(key), kPoison);

  // The cache folder is a file: nothing can be stored, the fingerprint is still computed.
  test::write_bytes(scratch_ / "blocked", "x");
  ScopedEnv blocked("BITDELTA_CACHE_DIR", (scratch_ / "blocked").c_str());
  EXPECT_FALSE(cache().store(key, computed));
  EXPECT_EQ(Checkpoint(scratch_ / "model").fingerprint(), computed);
}

TEST_F(FingerprintCacheTest, DisabledByTheEnvironment) {
  const test::LlamaTensors weights = save_model(scratch_ / "model", 6);
  const FingerprintKey key = settled_key(Checkpoint(scratch_ / "model"));
  ASSERT_TRUE(cache().store(key, kPoison));
  ScopedEnv off("BITDELTA_NO_FINGERPRINT_CACHE", "1");
  EXPECT_FALSE(cache().find(key));
  EXPECT_FALSE(cache().store(key, kPoison));
  EXPECT_EQ(Checkpoint(scratch_ / "model").fingerprint(), fingerprint_tensors(weights.views()));
}

TEST_F(FingerprintCacheTest, ShardedCheckpointsKeyEveryShard) {
  const test::LlamaTensors weights = test::random_llama_tensors(config_, 7, DType::BF16);
  test::write_sharded_checkpoint(scratch_ / "sharded", config_, weights.views(), 3);
  const std::string computed = fingerprint_tensors(weights.views());
  const FingerprintKey key = settled_key(Checkpoint(scratch_ / "sharded"));
  ASSERT_EQ(key.files.size(), 3u);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(key.files[size_t(i)].path,
              fs::canonical(scratch_ / "sharded/" + test::shard_name(i + 1, 3)).string());
  ASSERT_TRUE(cache().store(key, computed));
  EXPECT_EQ(Checkpoint(scratch_ / "sharded").fingerprint(), computed);

  ASSERT_TRUE(cache().store(key, kPoison));
  set_mtime(scratch_ / "sharded/" + test::shard_name(2, 3), 1h);  // the middle shard only
  EXPECT_EQ(Checkpoint(scratch_ / "sharded").fingerprint(), computed);
}

TEST_F(FingerprintCacheTest, KeepsTheMostRecentlyUsedEntries) {
  const std::string folder = cache().folder();
  fs::create_directories(folder);
  // A full cache of older entries (their contents do not matter here).
  for (size_t i = 0; i < FingerprintCache::kMaxEntries; ++i) {
    const std::string name = folder + "/" + std::to_string(i) + ".json";
    test::write_bytes(name, "{}");
    set_mtime(name, std::chrono::hours(100) - std::chrono::minutes(i));
  }
  save_model(scratch_ / "a", 8);
  save_model(scratch_ / "b", 9);
  const FingerprintKey a = settled_key(Checkpoint(scratch_ / "a"));
  const FingerprintKey b = settled_key(Checkpoint(scratch_ / "b"));
  ASSERT_TRUE(cache().store(a, kPoison));
  EXPECT_EQ(entry_count(folder), int(FingerprintCache::kMaxEntries));
  EXPECT_FALSE(fs::exists(folder + "/0.json"));  // the oldest went
  EXPECT_TRUE(fs::exists(folder + "/1.json"));

  // Found entries count as used: `a`, aged past every other entry and then found, stays when
  // `b` pushes the oldest out.
  const std::string a_entry = entry_holding(folder, kPoison);
  set_mtime(a_entry, 1000h);
  ASSERT_TRUE(cache().find(a));
  ASSERT_TRUE(cache().store(b, std::string(64, 'b')));
  EXPECT_EQ(entry_count(folder), int(FingerprintCache::kMaxEntries));
  EXPECT_EQ(cache().find(a), kPoison);
  EXPECT_FALSE(fs::exists(folder + "/1.json"));
}

// The real thing, once: models older than the racy window, compressed three times.
TEST_F(FingerprintCacheTest, CompressHashesOnlyModelsNotInTheCache) {
  test::PairSpec spec;
  spec.dtype = DType::BF16;
  test::write_checkpoint_pair(scratch_ / "base", scratch_ / "tuned", spec);
  std::this_thread::sleep_for(kRacyWindow + 200ms);
  const Checkpoint base(scratch_ / "base"), tuned(scratch_ / "tuned");
  const std::string base_fingerprint = fingerprint_tensors(base.tensors());
  const std::string tuned_fingerprint = fingerprint_tensors(tuned.tensors());
  CompressOptions options;
  options.quiet = true;

  for (int threads : {2, 1}) {
    SCOPED_TRACE(cat(threads, " threads"));
    set_threads(threads);
    fs::remove_all(cache().folder());
    const CompressedDelta cold = compress_delta(base, tuned, options);
    EXPECT_FALSE(cold.stats.base_fingerprint_cached);
    EXPECT_FALSE(cold.stats.finetune_fingerprint_cached);
    EXPECT_EQ(cold.info.base_fingerprint, base_fingerprint);
    EXPECT_EQ(cold.info.finetune_fingerprint, tuned_fingerprint);
    EXPECT_EQ(entry_count(cache().folder()), 2);  // both stored on the way

    const CompressedDelta warm = compress_delta(base, tuned, options);
    EXPECT_TRUE(warm.stats.base_fingerprint_cached);
    EXPECT_TRUE(warm.stats.finetune_fingerprint_cached);
    EXPECT_EQ(warm.info.base_fingerprint, base_fingerprint);
    EXPECT_EQ(warm.info.finetune_fingerprint, tuned_fingerprint);
    // Packed as before.
    ASSERT_EQ(warm.matrices.size(), cold.matrices.size());
    for (size_t i = 0; i < cold.matrices.size(); ++i) {
      const AdapterMatrix &w = warm.matrices[i], &c = cold.matrices[i];
      EXPECT_EQ(w.name, c.name);
      EXPECT_EQ(std::memcmp(w.sign.data, c.sign.data, c.sign.bytes()), 0) << c.name;
      EXPECT_EQ(std::memcmp(w.scale.data, c.scale.data, c.scale.bytes()), 0) << c.name;
    }
    ASSERT_EQ(warm.exact.size(), cold.exact.size());
    for (size_t i = 0; i < cold.exact.size(); ++i)
      EXPECT_EQ(std::memcmp(warm.exact[i].delta.data, cold.exact[i].delta.data,
                            cold.exact[i].delta.bytes()),
                0);

    // Only the base cached (its entry poisoned, to show it is what compress records): only the
    // fine-tune is hashed, and stored again.
    ASSERT_TRUE(cache().store(settled_key(base), kPoison));
    fs::remove(entry_holding(cache().folder(), tuned_fingerprint));
    const CompressedDelta half = compress_delta(base, tuned, options);
    EXPECT_TRUE(half.stats.base_fingerprint_cached);
    EXPECT_FALSE(half.stats.finetune_fingerprint_cached);
    EXPECT_EQ(half.info.base_fingerprint, kPoison);
    EXPECT_EQ(half.info.finetune_fingerprint, tuned_fingerprint);
    EXPECT_EQ(entry_count(cache().folder()), 2);
  }
  set_threads(0);
}

}  // namespace
}  // namespace bd
