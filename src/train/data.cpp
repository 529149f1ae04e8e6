#include "train/data.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/mapped_file.h"
#include "core/sha256.h"

namespace bd {

void split_tokens(std::vector<int32_t> tokens, double heldout_fraction, TokenData* data) {
  if (!(heldout_fraction >= 0 && heldout_fraction < 1))
    fail("held-out fraction must lie in [0, 1), got ", heldout_fraction);
  const size_t heldout = size_t(std::llround(double(tokens.size()) * heldout_fraction));
  const size_t train = tokens.size() - heldout;
  data->heldout.assign(tokens.begin() + int64_t(train), tokens.end());
  tokens.resize(train);
  data->train = std::move(tokens);
}

namespace {

// The file's bytes (refusing an empty file) and their SHA-256.
std::string read_text(const std::string& path, std::string* sha256) {
  std::string text = read_file(path);
  if (text.empty()) fail(path, ": the data file is empty");
  Sha256 hash;
  hash.update(text);
  *sha256 = hash.hex_digest();
  return text;
}

}  // namespace

TokenData load_token_data(const std::string& path, const EncodeFn& encode, double heldout_fraction,
                          int64_t seq) {
  TokenData data;
  const std::string text = read_text(path, &data.file_sha256);
  data.file_bytes = int64_t(text.size());
  split_tokens(encode(text), heldout_fraction, &data);
  if (int64_t(data.train.size()) < seq + 1)
    fail(path, ": too short: its train part has ", data.train.size(),
         " tokens, one window needs seq + 1 = ", seq + 1, " (lower --seq or add data)");
  if (heldout_fraction > 0 && data.heldout.size() < 2)
    fail(path, ": too short: its held-out part has ", data.heldout.size(),
         " tokens, evaluation needs at least 2 (raise --heldout-fraction or set it to 0)");
  return data;
}

void load_heldout_file(const std::string& path, const EncodeFn& encode, TokenData* data) {
  data->heldout = encode(read_text(path, &data->heldout_sha256));
  if (data->heldout.size() < 2)
    fail(path, ": too short: ", data->heldout.size(), " tokens, evaluation needs at least 2");
}

uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  // Reject the top partial block of 2^64 so every residue is equally likely.
  const uint64_t limit =
      std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % bound;
  uint64_t draw;
  do draw = rng();
  while (draw >= limit);
  return draw % bound;
}

BatchSampler::BatchSampler(const std::vector<int32_t>& tokens, int64_t batch, int64_t seq,
                           uint64_t seed)
    : tokens_(tokens), batch_(batch), seq_(seq), rng_(seed) {
  if (batch < 1 || seq < 1) fail("batch and seq must be positive, got ", batch, " and ", seq);
  if (int64_t(tokens.size()) < seq + 1)
    fail("the token stream has ", tokens.size(), " tokens, one window needs seq + 1 = ", seq + 1);
}

Batch BatchSampler::next() {
  Batch out{batch_, seq_, std::vector<int32_t>(batch_ * seq_), std::vector<int32_t>(batch_ * seq_)};
  const uint64_t offsets = uint64_t(tokens_.size()) - uint64_t(seq_);  // starts of full windows
  for (int64_t b = 0; b < batch_; ++b) {
    const int32_t* window = tokens_.data() + uniform_below(rng_, offsets);
    std::copy(window, window + seq_, out.inputs.begin() + b * seq_);
    std::copy(window + 1, window + seq_ + 1, out.targets.begin() + b * seq_);
  }
  return out;
}

int64_t disjoint_window_count(int64_t tokens, int64_t seq) {
  if (seq < 1) fail("seq must be positive, got ", seq);
  return tokens / (seq + 1);
}

Batch window_batch(const std::vector<int32_t>& tokens, int64_t seq,
                   std::span<const int64_t> windows) {
  const int64_t count = disjoint_window_count(int64_t(tokens.size()), seq);
  Batch out{int64_t(windows.size()), seq, std::vector<int32_t>(windows.size() * size_t(seq)),
            std::vector<int32_t>(windows.size() * size_t(seq))};
  for (size_t b = 0; b < windows.size(); ++b) {
    if (windows[b] < 0 || windows[b] >= count)
      fail("window ", windows[b], " is outside the ", count, " windows of the stream");
    const int32_t* window = tokens.data() + windows[b] * (seq + 1);
    std::copy(window, window + seq, out.inputs.begin() + int64_t(b) * seq);
    std::copy(window + 1, window + seq + 1, out.targets.begin() + int64_t(b) * seq);
  }
  return out;
}

std::vector<Batch> eval_batches(const std::vector<int32_t>& tokens, int64_t batch, int64_t seq) {
  if (batch < 1 || seq < 1) fail("batch and seq must be positive, got ", batch, " and ", seq);
  const int64_t window = seq + 1;
  const int64_t n = int64_t(tokens.size());
  std::vector<Batch> batches;
  auto append_window = [&](Batch& into, int64_t start, int64_t length) {
    into.inputs.insert(into.inputs.end(), tokens.begin() + start,
                       tokens.begin() + start + length - 1);
    into.targets.insert(into.targets.end(), tokens.begin() + start + 1,
                        tokens.begin() + start + length);
    ++into.batch;
  };
  int64_t start = 0;
  for (; start + window <= n; start += window) {
    if (batches.empty() || batches.back().batch == batch) batches.push_back(Batch{0, seq, {}, {}});
    append_window(batches.back(), start, window);
  }
  if (n - start >= 2) {
    batches.push_back(Batch{0, n - start - 1, {}, {}});
    append_window(batches.back(), start, n - start);
  }
  return batches;
}

}  // namespace bd
