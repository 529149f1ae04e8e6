// Training data: a text file encoded by the model's tokenizer into one token stream, split
// deterministically into a train part and a held-out tail, then cut into batches — random
// windows for training (seeded), consecutive windows for evaluation.
#pragma once
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bd {

// The tokenizer as the data pipeline sees it: text in, token ids out (no special tokens).
using EncodeFn = std::function<std::vector<int32_t>(std::string_view text)>;

struct TokenData {
  std::vector<int32_t> train;
  std::vector<int32_t> heldout;  // the last heldout_fraction of the stream, or a held-out file
  std::string file_sha256;       // of the training file's exact bytes
  int64_t file_bytes = 0;
  std::string heldout_sha256;  // of the held-out file, when there is one
};

// Splits a stream: the last round(n · heldout_fraction) tokens are held out.
void split_tokens(std::vector<int32_t> tokens, double heldout_fraction, TokenData* data);

// Reads and encodes `path`, then splits it. Throws bd::Error naming the file when it is missing,
// empty, or too short: the train part needs one window of seq + 1 tokens, and the held-out part
// (when heldout_fraction > 0) needs 2 tokens, one predicted from the other.
TokenData load_token_data(const std::string& path, const EncodeFn& encode, double heldout_fraction,
                          int64_t seq);

// Replaces data->heldout with the tokens of a separate held-out file, which must hold at least
// 2 tokens; throws bd::Error naming the file otherwise.
void load_heldout_file(const std::string& path, const EncodeFn& encode, TokenData* data);

// B sequences of T positions; targets are the inputs shifted by one token.
struct Batch {
  int64_t batch = 0;
  int64_t seq = 0;
  std::vector<int32_t> inputs;   // [B, T]
  std::vector<int32_t> targets;  // [B, T]
};

// Draws batches of B windows of T + 1 consecutive tokens at uniformly random offsets.
// The same seed gives the same batches on every platform (mt19937_64 + exact rejection).
class BatchSampler {
 public:
  BatchSampler(const std::vector<int32_t>& tokens, int64_t batch, int64_t seq, uint64_t seed);
  Batch next();

 private:
  const std::vector<int32_t>& tokens_;
  int64_t batch_, seq_;
  std::mt19937_64 rng_;
};

// The whole stream as consecutive non-overlapping windows of at most seq + 1 tokens, B windows
// per batch; a last shorter window (>= 2 tokens) becomes its own batch with a shorter T.
// Every window predicts each of its tokens after the first, as `bitdelta eval --context seq+1`.
std::vector<Batch> eval_batches(const std::vector<int32_t>& tokens, int64_t batch, int64_t seq);

// DP-SGD's examples: the stream cut into disjoint windows of seq + 1 tokens, window j starting at
// token j · (seq + 1) (the full windows of eval_batches). No token is in two examples, so a
// guarantee per example is a guarantee per window of text.
int64_t disjoint_window_count(int64_t tokens, int64_t seq);

// A batch of the given disjoint windows (each < disjoint_window_count), in the order given.
Batch window_batch(const std::vector<int32_t>& tokens, int64_t seq,
                   std::span<const int64_t> windows);

// A uniform integer in [0, bound), without modulo bias.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound);

}  // namespace bd
