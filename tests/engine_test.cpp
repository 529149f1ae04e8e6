// The serving engine and its adapter cache, in process, on the default model with random
// adapters: preemption when the KV cache runs out (the same greedy tokens as each request alone),
// stop strings and max_tokens, refusals at submission, and the LRU cache (eviction by count and
// bytes, adapters in use never evicted, loads off the caller's thread, failed loads reported once,
// hot replacement).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <future>

#include "core/mapped_file.h"
#include "delta_test_util.h"
#include "hwy/aligned_allocator.h"
#include "io/adapter.h"
#include "io/checkpoint.h"
#include "kernels/sign_matmul.h"
#include "model/llama_params.h"
#include "model/tokenizer.h"
#include "serve/adapter_cache.h"
#include "serve/engine.h"
#include "serve_util.h"
#include "test_util.h"

namespace bd {
namespace {

using test::ScratchDir;

// The default model, its tokenizer, and a folder of random adapters of it ("u0", "u1", ...).
class EngineTest : public ::testing::Test {
 protected:
  EngineTest()
      : checkpoint_(test::default_model_dir()),
        weights_(weights_from_checkpoint(checkpoint_)),
        tokenizer_(load_tokenizer_for_model(checkpoint_.dir())) {}

  void SetUp() override {
    std::filesystem::create_directories(dir());
    const LlamaParams base = LlamaParams::from_checkpoint(checkpoint_);
    AdapterInfo info;
    info.base_fingerprint = checkpoint_.fingerprint();
    info.finetune_fingerprint = std::string(64, 'f');
    info.scale_mode = "mean";
    info.granularity = "matrix";
    info.tool_version = "test";
    info.created = "2026-12-02T00:00:00Z";
    for (int u = 0; u < 3; ++u) {
      const test::InMemoryAdapter a = test::compress_in_memory(
          base, test::finetune_of(base, 0.02f, uint64_t(100 + u)),
          [](const std::string&) { return false; }, {}, DType::F32);
      write_adapter(dir() + "/u" + std::to_string(u) + ".bitdelta", info, a.matrices, a.exact,
                    false);
    }
  }
  std::string dir() const { return scratch_ / "adapters"; }

  GenerationRequest request(const std::string& model, const std::string& prompt, int64_t tokens) {
    GenerationRequest r;
    r.model = model;
    r.prompt = tokenizer_->encode(prompt, true);
    r.max_tokens = tokens;
    r.sampling.temperature = 0;
    return r;
  }

  ScratchDir scratch_;
  Checkpoint checkpoint_;
  LlamaWeights weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

// The whole output of a generation.
Generation::Update collect(Generation& generation) {
  Generation::Update all, update;
  do {
    update = generation.next();
    all.text += update.text;
  } while (!update.finished);
  const std::string text = all.text;
  all = update;
  all.text = text;
  return all;
}

TEST_F(EngineTest, PreemptionUnderASmallKvCacheKeepsEveryRequestsGreedyText) {
  const std::vector<std::pair<std::string, std::string>> asks = {
      {"u0", "The computer"}, {"u1", "In the beginning"}, {"base", "Once upon a time"},
      {"u2", "The computer"}, {"u0", "Why is the sky"},   {"u1", "Zippy says"}};
  std::vector<std::string> alone;
  {
    AdapterCache adapters(checkpoint_, weights_, dir());
    Metrics metrics;
    Engine engine(weights_, *tokenizer_, adapters, metrics, EngineOptions{});
    engine.start();
    for (const auto& [model, prompt] : asks)
      alone.push_back(collect(*engine.submit(request(model, prompt, 70))).text);
  }
  // 6 sequences of up to ~85 positions need 36 blocks of 16; 14 force preemptions.
  AdapterCache adapters(checkpoint_, weights_, dir());
  Metrics metrics;
  Engine engine(weights_, *tokenizer_, adapters, metrics,
                EngineOptions{.max_batch = 8, .kv_blocks = 14});
  engine.start();
  std::vector<std::shared_ptr<Generation>> running;
  for (const auto& [model, prompt] : asks)
    running.push_back(engine.submit(request(model, prompt, 70)));
  for (size_t i = 0; i < asks.size(); ++i) {
    const Generation::Update result = collect(*running[i]);
    EXPECT_TRUE(result.error.empty()) << result.error;
    EXPECT_EQ(result.text, alone[i]) << asks[i].first << ": " << asks[i].second;
    EXPECT_EQ(result.completion_tokens, 70);
    EXPECT_EQ(result.finish_reason, "length");
  }
  EXPECT_GT(metrics.preemptions.load(), 0);
  std::printf("%lld preemptions\n", (long long)metrics.preemptions.load());
}

TEST_F(EngineTest, StopStringsEndTheTextBeforeThemAndMaxTokensCountsTokens) {
  AdapterCache adapters(checkpoint_, weights_, dir());
  Metrics metrics;
  Engine engine(weights_, *tokenizer_, adapters, metrics, EngineOptions{});
  engine.start();
  const std::string full = collect(*engine.submit(request("u1", "The computer", 60))).text;
  ASSERT_GT(full.size(), 20u);
  const std::string stop = full.substr(10, 3);  // its first occurrence may come earlier
  GenerationRequest r = request("u1", "The computer", 60);
  r.stop = {"never appears", stop};
  const Generation::Update stopped = collect(*engine.submit(r));
  EXPECT_EQ(stopped.finish_reason, "stop");
  EXPECT_EQ(stopped.text, full.substr(0, full.find(stop)));
  const Generation::Update short_one = collect(*engine.submit(request("u1", "The computer", 5)));
  EXPECT_EQ(short_one.finish_reason, "length");
  EXPECT_EQ(short_one.completion_tokens, 5);
  EXPECT_EQ(short_one.text, full.substr(0, short_one.text.size()));
}

TEST_F(EngineTest, RefusesBadRequestsAtSubmission) {
  AdapterCache adapters(checkpoint_, weights_, dir());
  Metrics metrics;
  Engine engine(weights_, *tokenizer_, adapters, metrics,
                EngineOptions{.max_batch = 4, .kv_blocks = 4, .max_tokens_limit = 32});
  auto status_of = [&](GenerationRequest r) {
    try {
      engine.submit(std::move(r));
    } catch (const RequestError& e) {
      return e.status;
    }
    return 0;
  };
  EXPECT_EQ(status_of(request("nobody", "x", 4)), 404);
  EXPECT_EQ(status_of(request("u0", "x", 0)), 400);
  EXPECT_EQ(status_of(request("u0", "x", 33)), 400);
  EXPECT_EQ(status_of(request("u0", std::string(80, 'x'), 4)), 400);   // 5 blocks > 4
  EXPECT_EQ(status_of(request("u0", std::string(300, 'x'), 4)), 400);  // past the context
  GenerationRequest r = request("u0", "x", 4);
  r.sampling.top_p = 2;
  EXPECT_EQ(status_of(r), 400);
  r = request("u0", "x", 4);
  r.stop = {""};
  EXPECT_EQ(status_of(r), 400);
  EXPECT_EQ(status_of(request("u0", "x", 4)), 0);
}

// With the batch full, the head of the queue asks for its adapter, and so does the sequence
// behind it once the head is ready (it used to wait for a free slot before asking).
TEST_F(EngineTest, QueuedRequestsLoadTheirAdaptersWhileTheBatchIsFull) {
  AdapterCache adapters(checkpoint_, weights_, dir());
  Metrics metrics;
  Engine engine(weights_, *tokenizer_, adapters, metrics, EngineOptions{.max_batch = 2});
  engine.start();
  // Two sequences of u0 fill the batch and finish in the same step.
  const std::shared_ptr<Generation> running = engine.submit(request("u0", "The computer", 200));
  const std::shared_ptr<Generation> beside = engine.submit(request("u0", "The computer", 200));
  Generation::Update update = running->next();
  // Reads the running sequence's tokens until `loads` adapters have loaded or it has finished.
  auto loaded_while_running = [&](int64_t loads) {
    while (adapters.stats().loads < loads && !update.finished) update = running->next();
    return adapters.stats().loads >= loads && !update.finished;
  };
  ASSERT_TRUE(loaded_while_running(1));
  const std::shared_ptr<Generation> head = engine.submit(request("u1", "Why", 3));
  ASSERT_TRUE(loaded_while_running(2));
  const std::shared_ptr<Generation> behind = engine.submit(request("u2", "Why", 3));
  EXPECT_TRUE(loaded_while_running(3));
  while (!update.finished) update = running->next();
  for (const auto& generation : {beside, head, behind}) {
    const Generation::Update result = collect(*generation);
    EXPECT_TRUE(result.error.empty()) << result.error;
    EXPECT_EQ(result.completion_tokens, generation == beside ? 200 : 3);
  }
  EXPECT_EQ(update.completion_tokens, 200);
}

TEST_F(EngineTest, AdapterCacheEvictsLeastRecentlyUsedButNeverAnAdapterInUse) {
  // An adapter's cost to the cache (the users' adapters are the same size).
  const int64_t bytes = AdapterCache(checkpoint_, weights_, dir()).load_now("u0")->bytes;
  AdapterCache cache(checkpoint_, weights_, dir(),
                     AdapterCacheOptions{.max_count = 2, .max_bytes = 100 * bytes});

  EXPECT_EQ(cache.list(), (std::vector<std::string>{"u0", "u1", "u2"}));
  std::shared_ptr<const ServedAdapter> held = cache.load_now("u0");
  cache.load_now("u1");
  cache.load_now("u2");  // over the count: u1 goes (u0 is held), not u0
  AdapterCacheStats s = cache.stats();
  EXPECT_EQ(s.resident, 2);
  EXPECT_EQ(s.evictions, 1);
  EXPECT_EQ(cache.get("u0").state, AdapterCache::State::Ready);
  // What the cache counts: the file, plus its signs transposed where the CPU's kernel wants them.
  const int64_t file_bytes = int64_t(std::filesystem::file_size(dir() + "/u0.bitdelta"));
  EXPECT_GE(held->bytes, file_bytes);
  EXPECT_EQ(held->bytes > file_bytes, held->sign_tiles != nullptr);
  held.reset();
  cache.load_now("u1");  // now the least recently used unheld one, u2, goes
  EXPECT_EQ(cache.get("u2").state, AdapterCache::State::Loading);
  // Bytes bound the cache too.
  AdapterCache small(checkpoint_, weights_, dir(),
                     AdapterCacheOptions{.max_count = 100, .max_bytes = 2 * bytes});
  for (const char* name : {"u0", "u1", "u2"}) small.load_now(name);
  EXPECT_EQ(small.stats().resident, 2);
  EXPECT_LE(small.stats().resident_bytes, 2 * bytes);
}

// A load after an eviction transposes its signs into the pages the evicted adapter gave back
// (where this CPU's kernel keeps transposed signs), and they hold its own signs, not the old ones.
TEST_F(EngineTest, AdapterCacheReusesTheTransposedSignsOfAnEvictedAdapter) {
  AdapterCache cache(checkpoint_, weights_, dir(), AdapterCacheOptions{.max_count = 1});
  const uint8_t* first = cache.load_now("u0")->sign_tiles.get();
  cache.load_now("u1");  // evicts u0 after it loaded: u0's pages are kept for the next load
  const std::shared_ptr<const ServedAdapter> third = cache.load_now("u2");
  EXPECT_EQ(cache.stats().evictions, 2);
  if (!first) {
    EXPECT_EQ(third->sign_tiles, nullptr);  // no transposed layout on this CPU
    return;
  }
  EXPECT_EQ(third->sign_tiles.get(), first);
  for (const LinearDelta& linear : third->delta.linears) {
    if (!linear.sign.bits) continue;
    const AdapterMatrix* matrix = nullptr;
    for (const AdapterMatrix& m : third->file->matrices())
      if (m.sign.as<uint8_t>() == linear.sign.bits) matrix = &m;
    ASSERT_NE(matrix, nullptr);
    const int64_t bytes = sign_tiles_bytes(matrix->out, matrix->in);
    auto want = hwy::AllocateAligned<uint8_t>(size_t(bytes));
    pack_sign_tiles(linear.sign.bits, matrix->out, matrix->in, want.get());
    ASSERT_TRUE(std::equal(want.get(), want.get() + bytes, linear.sign.tiles)) << matrix->name;
  }
}

TEST_F(EngineTest, AdapterCacheLoadsOnItsOwnThreadReportsFailuresOnceAndReplacesHot) {
  AdapterCache cache(checkpoint_, weights_, dir());
  std::promise<void> loaded;
  std::atomic<int> settled{0};
  cache.set_on_loaded([&] {
    if (settled++ == 0) loaded.set_value();
  });
  EXPECT_EQ(cache.get("u1").state, AdapterCache::State::Loading);
  loaded.get_future().wait();
  const AdapterCache::Lookup ready = cache.get("u1");
  ASSERT_EQ(ready.state, AdapterCache::State::Ready);
  EXPECT_EQ(cache.get("nobody").state, AdapterCache::State::Missing);

  // A broken file fails once, with the reason, then is retried.
  test::write_bytes(dir() + "/broken.bitdelta", "not a safetensors file");
  EXPECT_EQ(cache.get("broken").state, AdapterCache::State::Loading);
  AdapterCache::Lookup broken;
  for (int i = 0; i < 500 && broken.state != AdapterCache::State::Failed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    broken = cache.get("broken");
  }
  ASSERT_EQ(broken.state, AdapterCache::State::Failed);
  EXPECT_NE(broken.error.find("broken.bitdelta"), std::string::npos);
  EXPECT_EQ(cache.get("broken").state, AdapterCache::State::Loading);

  // Replacing u1 by u2's bytes: the old version stays valid for whoever holds it.
  const std::string u2 = read_file(dir() + "/u2.bitdelta");
  cache.put("u1", u2);
  EXPECT_EQ(read_file(dir() + "/u1.bitdelta"), u2);
  EXPECT_EQ(ready.adapter->file->info().base_fingerprint, checkpoint_.fingerprint());
  EXPECT_NE(ready.adapter->delta.linear(0).sign.bits, nullptr);
  const std::shared_ptr<const ServedAdapter> fresh = cache.load_now("u1");
  EXPECT_NE(fresh.get(), ready.adapter.get());
  // A refused upload leaves nothing behind.
  EXPECT_THROW(cache.put("u9", u2, [](const AdapterInfo&) { throw Error("refused"); }), Error);
  EXPECT_THROW(cache.put("u9", "garbage"), Error);
  EXPECT_THROW(cache.put("../u9", u2), Error);
  EXPECT_FALSE(std::filesystem::exists(dir() + "/u9.bitdelta"));
  EXPECT_EQ(test::folder_entries(dir()).size(), 4u);  // u0, u1, u2, broken
  EXPECT_TRUE(cache.remove("u2"));
  EXPECT_FALSE(cache.remove("u2"));
}

}  // namespace
}  // namespace bd
