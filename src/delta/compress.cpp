#include "delta/compress.h"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "core/error.h"
#include "core/mapped_file.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "core/threads.h"
#include "core/utc_time.h"
#include "io/fingerprint.h"
#include "io/fingerprint_cache.h"
#include "kernels/matmul_gemv.h"
#include "kernels/parallel.h"
#include "kernels/sign_matmul.h"
#include "kernels/sign_pack.h"

namespace bd {

namespace {

// Work is handed to threads in blocks of about this many elements (a few hundred KB of input).
constexpr int64_t kBlockElements = int64_t(1) << 16;

// Runs work(block) for blocks [0, blocks) on `threads` threads (one for small tensors, whose
// parallel region would cost more than it saves). `work` must not throw.
template <typename Work>
void parallel_blocks(int threads, int64_t elements, int64_t blocks, const Work& work) {
#pragma omp parallel for num_threads(threads) \
    schedule(dynamic, 1) if (threads > 1 && elements >= kMinParallelWork)
  for (int64_t block = 0; block < blocks; ++block) work(block);
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

float element_f32(const TensorView& view, int64_t index) {
  float value;
  to_f32(view.dtype, static_cast<const uint8_t*>(view.data) + index * dtype_size(view.dtype),
         &value, 1);
  return value;
}

// The first element of δ = finetune − base (both F32-widened) that is NaN or ±inf, as a message.
[[noreturn]] void fail_non_finite(const Checkpoint& finetune, const std::string& name,
                                  const TensorView& base, const TensorView& tuned) {
  for (int64_t i = 0; i < base.numel(); ++i) {
    const float b = element_f32(base, i), f = element_f32(tuned, i);
    if (std::isfinite(f - b)) continue;
    std::string where = cat("[", i, "]");
    if (base.shape.size() == 2) where = cat("[", i / base.shape[1], ", ", i % base.shape[1], "]");
    fail(finetune.dir(), ": tensor ", quote_bytes(name), ": delta at ", where, " is ", f - b,
         " (fine-tune ", f, ", base ", b, "); refusing to compress a delta holding NaN or inf");
  }
  fail(finetune.dir(), ": tensor ", quote_bytes(name), ": the sum of |delta| overflows F32");
}

// The fine-tune's "privacy.*" metadata as a JSON object text, or "" when it has none.
std::string privacy_spent(const Checkpoint& finetune) {
  nlohmann::json privacy = nlohmann::json::object();
  for (const auto& [key, value] : finetune.metadata())
    if (key.rfind("privacy.", 0) == 0) privacy[key] = value;
  return privacy.empty() ? "" : privacy.dump();
}

// Compresses one tensor pair at a time into `out`, packing on `threads` threads.
class Compressor {
 public:
  Compressor(const Checkpoint& finetune, const CompressOptions& options, int threads,
             CompressedDelta& out)
      : finetune_(finetune), options_(options), threads_(threads), out_(out) {}

  // Adds the tensor to the adapter (compressed or exact) unless it equals the base's.
  void add(const NamedTensor& base, const NamedTensor& tuned);

 private:
  // Each returns false when δ = 0 everywhere (the tensor is left out).
  bool pack_matrix(const NamedTensor& base, const NamedTensor& tuned, std::vector<uint8_t>& signs,
                   std::vector<float>& scales);
  bool subtract_exact(const NamedTensor& base, const NamedTensor& tuned,
                      std::vector<uint8_t>& delta);

  const Checkpoint& finetune_;
  const CompressOptions& options_;
  const int threads_;
  CompressedDelta& out_;
};

void Compressor::add(const NamedTensor& base, const NamedTensor& tuned) {
  const Shape& shape = base.view.shape;
  bool changed;
  if (is_compressed_weight(base.name)) {
    std::vector<uint8_t> signs;
    std::vector<float> scales;
    changed = pack_matrix(base, tuned, signs, scales);
    if (changed) {
      out_.add_matrix(base.name, shape[0], shape[1], std::move(signs), std::move(scales));
      ++out_.stats.compressed_tensors;
    }
  } else {
    std::vector<uint8_t> delta;
    changed = subtract_exact(base, tuned, delta);
    if (changed) {
      out_.add_exact(base.name, base.view.dtype, shape, std::move(delta));
      ++out_.stats.exact_tensors;
    }
  }
  out_.stats.unchanged_tensors += !changed;
  ++out_.stats.tensors;
  out_.stats.input_bytes += int64_t(base.view.bytes() + tuned.view.bytes());
}

bool Compressor::pack_matrix(const NamedTensor& base, const NamedTensor& tuned,
                             std::vector<uint8_t>& signs, std::vector<float>& scales) {
  const TensorView& b = base.view;
  const int64_t rows = b.shape[0], in = b.shape[1];
  const int64_t row_bytes = sign_row_bytes(in), element = int64_t(dtype_size(b.dtype));
  const int64_t block_rows = std::max<int64_t>(1, kBlockElements / in);
  signs.resize(size_t(rows * row_bytes));
  std::vector<double> abs_sums(static_cast<size_t>(rows));
  parallel_blocks(threads_, rows * in, ceil_div(rows, block_rows), [&](int64_t block) {
    const int64_t first = block * block_rows, count = std::min(block_rows, rows - first);
    const int64_t offset = first * in * element;
    pack_delta_signs(b.dtype, static_cast<const uint8_t*>(b.data) + offset,
                     static_cast<const uint8_t*>(tuned.view.data) + offset, count, in,
                     signs.data() + first * row_bytes, abs_sums.data() + first);
  });
  double total = 0;
  for (double sum : abs_sums) total += sum;
  if (!std::isfinite(total)) fail_non_finite(finetune_, base.name, b, tuned.view);
  if (total == 0) return false;  // δ = 0: the fine-tune left this weight alone
  scales.resize(options_.per_row ? size_t(rows) : 1);
  mean_abs_scales(abs_sums.data(), rows, in, options_.per_row, scales.data());
  return true;
}

bool Compressor::subtract_exact(const NamedTensor& base, const NamedTensor& tuned,
                                std::vector<uint8_t>& delta) {
  const TensorView& b = base.view;
  const int64_t n = b.numel(), element = int64_t(dtype_size(b.dtype));
  const int64_t blocks = ceil_div(n, kBlockElements);
  const uint8_t* base_bytes = static_cast<const uint8_t*>(b.data);
  const uint8_t* tuned_bytes = static_cast<const uint8_t*>(tuned.view.data);
  std::atomic<bool> differs = false;
  parallel_blocks(threads_, n, blocks, [&](int64_t block) {
    const int64_t first = block * kBlockElements, count = std::min(kBlockElements, n - first);
    if (std::memcmp(base_bytes + first * element, tuned_bytes + first * element,
                    size_t(count * element)))
      differs = true;
  });
  if (!differs) return false;
  if (!is_float(b.dtype))
    fail(finetune_.dir(), ": tensor ", quote_bytes(base.name), " is ", dtype_name(b.dtype),
         " and differs from the base; only float tensors can be kept as deltas");

  // δ = round(f − b) in the tensor's dtype; also counts the elements where b + δ, computed in
  // F32 and rounded, does not give back f bit for bit (what `apply` will reconstruct).
  delta.resize(size_t(n * element));
  std::atomic<int64_t> non_finite = 0, nonzero = 0, rounded = 0;
  const size_t capacity = size_t(std::min(n, kBlockElements));
#pragma omp parallel num_threads(threads_) if (threads_ > 1 && n >= kMinParallelWork)
  {
    std::vector<float> bf(capacity), ff(capacity), df(capacity);
    std::vector<uint8_t> rebuilt(capacity * size_t(element));
#pragma omp for schedule(dynamic, 1)
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t first = block * kBlockElements, count = std::min(kBlockElements, n - first);
      const size_t offset = size_t(first * element), bytes = size_t(count * element);
      widen_to_f32(b.dtype, base_bytes + offset, bf.data(), size_t(count));
      widen_to_f32(b.dtype, tuned_bytes + offset, ff.data(), size_t(count));
      int64_t block_non_finite = 0, block_nonzero = 0, block_rounded = 0;
      for (int64_t i = 0; i < count; ++i) {
        df[i] = ff[i] - bf[i];
        block_non_finite += !std::isfinite(df[i]);
        block_nonzero += df[i] != 0;
      }
      from_f32(b.dtype, df.data(), delta.data() + offset, size_t(count));
      widen_to_f32(b.dtype, delta.data() + offset, df.data(), size_t(count));
      for (int64_t i = 0; i < count; ++i) df[i] += bf[i];
      from_f32(b.dtype, df.data(), rebuilt.data(), size_t(count));
      for (size_t at = 0; at < bytes; at += size_t(element))
        block_rounded +=
            std::memcmp(rebuilt.data() + at, tuned_bytes + offset + at, size_t(element)) != 0;
      non_finite += block_non_finite;
      nonzero += block_nonzero;
      rounded += block_rounded;
    }
  }
  if (non_finite > 0) fail_non_finite(finetune_, base.name, b, tuned.view);
  if (nonzero == 0) return false;  // only signed zeros differ: the same values
  out_.stats.exact_rounded_elements += rounded;
  return true;
}

// Feeds every tensor pair, in name order, through the fingerprints still to compute (a null
// hash: the fingerprint came from the cache) and the compressor. SHA-256 is one sequential stream
// per model, so with two or more threads each model is hashed by a thread of its own while the
// calling thread compresses (on the threads left, at least one): they work on the same tensor
// and meet at a barrier (blocking, not spinning), whose completion gives the tensor's pages back.
// At most one tensor per model is resident.
class TensorStream {
 public:
  TensorStream(const std::vector<NamedTensor>& base, const std::vector<NamedTensor>& tuned,
               Progress& progress)
      : base_(base), tuned_(tuned), progress_(progress) {}

  void run(int threads, Compressor& compressor, Sha256* base_hash, Sha256* tuned_hash) {
    if (threads == 1 || (!base_hash && !tuned_hash)) {
      for (size_t i = 0; i < base_.size(); ++i) {
        if (base_hash) fingerprint_update(*base_hash, base_[i]);
        if (tuned_hash) fingerprint_update(*tuned_hash, tuned_[i]);
        compressor.add(base_[i], tuned_[i]);
        finish(i);
      }
      return;
    }
    Meet meet(1 + (base_hash != nullptr) + (tuned_hash != nullptr), FinishTensor{this});
    std::exception_ptr errors[3];
    std::vector<std::thread> hashers;
    if (base_hash) hashers.emplace_back([&] { hash(base_, *base_hash, meet, errors[0]); });
    if (tuned_hash) hashers.emplace_back([&] { hash(tuned_, *tuned_hash, meet, errors[1]); });
    for (size_t i = 0; i < base_.size() && !stop_; ++i) {
      try {
        compressor.add(base_[i], tuned_[i]);
      } catch (...) {
        errors[2] = std::current_exception();
        stop_ = true;
        meet.arrive_and_drop();
        break;
      }
      meet.arrive_and_wait();
    }
    for (std::thread& hasher : hashers) hasher.join();
    for (const std::exception_ptr& error : errors)
      if (error) std::rethrow_exception(error);
  }

 private:
  // The barrier's completion: runs once per tensor, when all workers are done with it.
  struct FinishTensor {
    TensorStream* stream;
    void operator()() noexcept { stream->finish(stream->done_++); }
  };
  using Meet = std::barrier<FinishTensor>;

  void hash(const std::vector<NamedTensor>& tensors, Sha256& hash, Meet& meet,
            std::exception_ptr& error) {
    for (const NamedTensor& tensor : tensors) {
      if (stop_) break;
      try {
        fingerprint_update(hash, tensor);
      } catch (...) {
        error = std::current_exception();
        stop_ = true;
        break;
      }
      meet.arrive_and_wait();
    }
    meet.arrive_and_drop();
  }
  // Gives tensor i's pages back. When a worker stops early, the others drop out of the barrier,
  // which may complete one phase past the last tensor.
  void finish(size_t i) noexcept {
    if (i >= base_.size()) return;
    MappedFile::drop_pages(base_[i].view.data, base_[i].view.bytes());
    MappedFile::drop_pages(tuned_[i].view.data, tuned_[i].view.bytes());
    bytes_done_ += int64_t(base_[i].view.bytes() + tuned_[i].view.bytes());
    try {
      progress_.update(bytes_done_ >> 20, cat("MB, tensor ", i + 1, "/", base_.size()));
    } catch (...) {  // a progress line that cannot be drawn is not worth stopping for
    }
  }

  const std::vector<NamedTensor>& base_;
  const std::vector<NamedTensor>& tuned_;
  Progress& progress_;
  std::atomic<bool> stop_ = false;
  size_t done_ = 0;  // tensors all workers have finished
  int64_t bytes_done_ = 0;
};

}  // namespace

bool is_compressed_weight(const std::string& name) {
  const std::string prefix = "model.layers.";
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  size_t at = prefix.size();
  const size_t digits = at;
  while (at < name.size() && std::isdigit(static_cast<unsigned char>(name[at]))) ++at;
  if (at == digits || at >= name.size() || name[at] != '.') return false;
  static const std::set<std::string> kLinears = {
      "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
      "self_attn.o_proj.weight", "mlp.gate_proj.weight",    "mlp.up_proj.weight",
      "mlp.down_proj.weight"};
  return kLinears.count(name.substr(at + 1)) > 0;
}

void check_same_architecture(const Checkpoint& base, const Checkpoint& finetune) {
  nlohmann::ordered_json base_config =
      nlohmann::ordered_json::parse(llama_config_json(base.config()));
  nlohmann::ordered_json tuned_config =
      nlohmann::ordered_json::parse(llama_config_json(finetune.config()));
  for (const auto& [key, value] : base_config.items())
    if (key != "torch_dtype" && tuned_config[key] != value)
      fail(finetune.dir(), ": config.json differs from the base's: ", key, " is ",
           tuned_config[key].dump(), " here but ", value.dump(), " in ", base.dir());

  const std::vector<std::string> base_names = base.tensor_names();
  const std::vector<std::string> tuned_names = finetune.tensor_names();
  for (const std::string& name : base_names)
    if (!finetune.find(name))
      fail(finetune.dir(), ": has no tensor ", quote_bytes(name), ", which the base ", base.dir(),
           " has");
  for (const std::string& name : tuned_names)
    if (!base.find(name))
      fail(finetune.dir(), ": tensor ", quote_bytes(name), " is not in the base ", base.dir());
  for (const std::string& name : base_names) {
    const TensorView& b = base.get(name);
    const TensorView& f = finetune.get(name);
    if (b.shape != f.shape || b.dtype != f.dtype)
      fail(finetune.dir(), ": tensor ", quote_bytes(name), " is ", dtype_name(f.dtype), " ",
           shape_str(f.shape), " here but ", dtype_name(b.dtype), " ", shape_str(b.shape),
           " in the base ", base.dir());
  }
}

std::vector<float*> CompressedDelta::scale_pointers() {
  std::vector<float*> pointers;
  for (AdapterMatrix& matrix : matrices)
    pointers.push_back(const_cast<float*>(matrix.scale.as<float>()));  // views of scales_
  return pointers;
}

void CompressedDelta::write(const std::string& path, bool overwrite) const {
  write_adapter(path, info, matrices, exact, overwrite);
}

void CompressedDelta::add_matrix(const std::string& name, int64_t out, int64_t in,
                                 std::vector<uint8_t> signs, std::vector<float> scales) {
  signs_.push_back(std::move(signs));
  scales_.push_back(std::move(scales));
  matrices.push_back(
      {name, out, in, TensorView{DType::U8, {out, sign_row_bytes(in)}, signs_.back().data()},
       TensorView{DType::F32, {int64_t(scales_.back().size())}, scales_.back().data()}});
}

void CompressedDelta::add_exact(const std::string& name, DType dtype, const Shape& shape,
                                std::vector<uint8_t> delta) {
  deltas_.push_back(std::move(delta));
  exact.push_back({name, TensorView{dtype, shape, deltas_.back().data()}});
}

CompressedDelta compress_delta(const Checkpoint& base, const Checkpoint& finetune,
                               const CompressOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (!options.owner.empty() && !valid_owner_did(options.owner))
    fail("--owner ", quote_bytes(options.owner),
         " is not a did:lux DID (did:lux:<id>, see docs/format.md)");
  validate_llama_tensors(base);
  validate_llama_tensors(finetune);
  check_same_architecture(base, finetune);

  CompressedDelta out;
  const std::vector<NamedTensor> base_tensors = base.tensors();  // name order, as fingerprints
  std::vector<NamedTensor> tuned_tensors;
  int64_t total_bytes = 0;
  for (const NamedTensor& tensor : base_tensors) {
    tuned_tensors.push_back({tensor.name, finetune.get(tensor.name)});
    total_bytes += 2 * int64_t(tensor.view.bytes());
  }
  // A model whose fingerprint the machine's cache holds is not hashed: its thread is not started.
  // The packer keeps threads − 2 all the same: on shared cores, packing on the threads the hashes
  // left measured slower (OpenMP's spin-waits between per-tensor loops; docs/benchmarks.md).
  const FingerprintLookup base_lookup(base), tuned_lookup(finetune);
  Sha256 base_hash, tuned_hash;
  Sha256* base_hashing = base_lookup.cached() ? nullptr : &base_hash;
  Sha256* tuned_hashing = tuned_lookup.cached() ? nullptr : &tuned_hash;
  const int threads = num_threads();
  Progress progress("compress", total_bytes >> 20, "MB", options.quiet);
  Compressor compressor(finetune, options, std::max(1, threads - 2), out);
  TensorStream(base_tensors, tuned_tensors, progress)
      .run(threads, compressor, base_hashing, tuned_hashing);
  progress.finish();
  if (out.matrices.empty() && out.exact.empty())
    fail(finetune.dir(), ": every tensor equals the base's in ", base.dir(),
         "; there is no delta to compress");

  AdapterInfo& info = out.info;
  info.base_fingerprint = base_hashing ? base_hash.hex_digest() : *base_lookup.cached();
  info.finetune_fingerprint = tuned_hashing ? tuned_hash.hex_digest() : *tuned_lookup.cached();
  if (base_hashing) base_lookup.remember(info.base_fingerprint);
  if (tuned_hashing) tuned_lookup.remember(info.finetune_fingerprint);
  out.stats.base_fingerprint_cached = !base_hashing;
  out.stats.finetune_fingerprint_cached = !tuned_hashing;
  info.owner = options.owner;
  info.scale_mode = "mean";
  info.granularity = options.per_row ? "row" : "matrix";
  info.privacy = privacy_spent(finetune);
  info.tool_version = BITDELTA_VERSION;
  info.created = utc_now();
  out.stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace bd
