#include "delta/compress.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/mapped_file.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "io/fingerprint.h"
#include "kernels/matmul_gemv.h"
#include "kernels/parallel.h"
#include "kernels/sign_matmul.h"
#include "kernels/sign_pack.h"

namespace bd {

namespace {

// Work is handed to threads in blocks of about this many elements (a few hundred KB of input):
// small enough to balance two threads that join late after hashing, large enough to be cheap.
constexpr int64_t kBlockElements = int64_t(1) << 16;

struct Fingerprints {
  Sha256 base, finetune;
};

// Runs work(block) for blocks [0, blocks) on the thread team while two of its threads feed
// the tensor into each model's fingerprint. SHA-256 is one sequential stream per model, so the
// hashes run beside the parallel work rather than before or after it; the threads that hashed
// then join the remaining blocks. Small tensors stay on one thread. `work` must not throw.
template <typename Work>
void hash_beside(Fingerprints& hashes, const NamedTensor& base, const NamedTensor& finetune,
                 int64_t blocks, const Work& work) {
#pragma omp parallel if (base.view.numel() >= kMinParallelWork)
  {
#pragma omp single nowait
    fingerprint_update(hashes.base, base);
#pragma omp single nowait
    fingerprint_update(hashes.finetune, finetune);
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t block = 0; block < blocks; ++block) work(block);
  }
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

double element_f32(const TensorView& view, int64_t index) {
  float value;
  to_f32(view.dtype, static_cast<const uint8_t*>(view.data) + index * dtype_size(view.dtype),
         &value, 1);
  return value;
}

// The first element of δ = finetune − base (both F32-widened) that is NaN or ±inf, as a message.
[[noreturn]] void fail_non_finite(const Checkpoint& finetune, const std::string& name,
                                  const TensorView& base, const TensorView& tuned) {
  for (int64_t i = 0; i < base.numel(); ++i) {
    const float b = float(element_f32(base, i)), f = float(element_f32(tuned, i));
    if (std::isfinite(f - b)) continue;
    std::string where = cat("[", i, "]");
    if (base.shape.size() == 2) where = cat("[", i / base.shape[1], ", ", i % base.shape[1], "]");
    fail(finetune.dir(), ": tensor '", name, "': delta at ", where, " is ", f - b, " (fine-tune ",
         f, ", base ", b, "); refusing to compress a delta holding NaN or inf");
  }
  fail(finetune.dir(), ": tensor '", name, "': the sum of |delta| overflows F32");
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm utc;
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

// The fine-tune's "privacy.*" metadata as a JSON object text, or "" when it has none.
std::string privacy_spent(const Checkpoint& finetune) {
  nlohmann::json privacy = nlohmann::json::object();
  for (const auto& [key, value] : finetune.metadata())
    if (key.rfind("privacy.", 0) == 0) privacy[key] = value;
  return privacy.empty() ? "" : privacy.dump();
}

// The streaming state of one compress_delta() call.
class Compressor {
 public:
  Compressor(const Checkpoint& base, const Checkpoint& finetune, const CompressOptions& options,
             CompressedDelta& out)
      : base_(base), finetune_(finetune), options_(options), out_(out) {}

  // Returns true when the tensor differs from the base and was added to the adapter.
  bool add_matrix(const NamedTensor& base, const NamedTensor& tuned, std::vector<uint8_t>& signs,
                  std::vector<float>& scales);
  bool add_exact(const NamedTensor& base, const NamedTensor& tuned, std::vector<uint8_t>& delta);
  std::string base_fingerprint() { return hashes_.base.hex_digest(); }
  std::string finetune_fingerprint() { return hashes_.finetune.hex_digest(); }

 private:
  const Checkpoint& base_;
  const Checkpoint& finetune_;
  const CompressOptions& options_;
  CompressedDelta& out_;
  Fingerprints hashes_;
};

bool Compressor::add_matrix(const NamedTensor& base, const NamedTensor& tuned,
                            std::vector<uint8_t>& signs, std::vector<float>& scales) {
  const TensorView& b = base.view;
  const int64_t rows = b.shape[0], in = b.shape[1];
  const int64_t row_bytes = sign_row_bytes(in), element = int64_t(dtype_size(b.dtype));
  const int64_t block_rows = std::max<int64_t>(1, kBlockElements / in);
  signs.resize(size_t(rows * row_bytes));
  std::vector<double> abs_sums(static_cast<size_t>(rows));
  hash_beside(hashes_, base, tuned, ceil_div(rows, block_rows), [&](int64_t block) {
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
  out_.matrices.push_back({base.name, rows, in,
                           TensorView{DType::U8, {rows, row_bytes}, signs.data()},
                           TensorView{DType::F32, {int64_t(scales.size())}, scales.data()}});
  return true;
}

bool Compressor::add_exact(const NamedTensor& base, const NamedTensor& tuned,
                           std::vector<uint8_t>& delta) {
  const TensorView& b = base.view;
  const int64_t n = b.numel(), element = int64_t(dtype_size(b.dtype));
  const int64_t blocks = ceil_div(n, kBlockElements);
  const uint8_t* base_bytes = static_cast<const uint8_t*>(b.data);
  const uint8_t* tuned_bytes = static_cast<const uint8_t*>(tuned.view.data);
  std::atomic<bool> differs = false;
  hash_beside(hashes_, base, tuned, blocks, [&](int64_t block) {
    const int64_t first = block * kBlockElements, count = std::min(kBlockElements, n - first);
    if (std::memcmp(base_bytes + first * element, tuned_bytes + first * element,
                    size_t(count * element)))
      differs = true;
  });
  if (!differs) return false;
  if (!is_float(b.dtype))
    fail(finetune_.dir(), ": tensor '", base.name, "' is ", dtype_name(b.dtype),
         " and differs from the base; only float tensors can be kept as deltas");

  // δ = round(f − b) in the tensor's dtype; also counts the elements where b + δ, computed in
  // F32 and rounded, does not give back f bit for bit (what `apply` will reconstruct).
  delta.resize(size_t(n * element));
  std::atomic<int64_t> non_finite = 0, nonzero = 0, rounded = 0;
  const size_t capacity = size_t(std::min(n, kBlockElements));
#pragma omp parallel if (n >= kMinParallelWork)
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
  out_.exact.push_back({base.name, TensorView{b.dtype, b.shape, delta.data()}});
  return true;
}

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
      fail(finetune.dir(), ": has no tensor '", name, "', which the base ", base.dir(), " has");
  for (const std::string& name : tuned_names)
    if (!base.find(name))
      fail(finetune.dir(), ": tensor '", name, "' is not in the base ", base.dir());
  for (const std::string& name : base_names) {
    const TensorView& b = base.get(name);
    const TensorView& f = finetune.get(name);
    if (b.shape != f.shape || b.dtype != f.dtype)
      fail(finetune.dir(), ": tensor '", name, "' is ", dtype_name(f.dtype), " ",
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

CompressedDelta compress_delta(const Checkpoint& base, const Checkpoint& finetune,
                               const CompressOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (!options.owner.empty() && !valid_owner_did(options.owner))
    fail("--owner '", options.owner, "' is not a did:lux DID (did:lux:<id>, see docs/format.md)");
  validate_llama_tensors(base);
  validate_llama_tensors(finetune);
  check_same_architecture(base, finetune);

  CompressedDelta out;
  const std::vector<NamedTensor> base_tensors = base.tensors();  // name order, as fingerprints
  int64_t total_bytes = 0;
  for (const NamedTensor& tensor : base_tensors) total_bytes += 2 * int64_t(tensor.view.bytes());
  Progress progress("compress", total_bytes >> 20, "MB", options.quiet);
  Compressor compressor(base, finetune, options, out);
  for (const NamedTensor& base_tensor : base_tensors) {
    const NamedTensor tuned{base_tensor.name, finetune.get(base_tensor.name)};
    bool changed;
    if (is_compressed_weight(base_tensor.name)) {
      std::vector<uint8_t> signs;
      std::vector<float> scales;
      changed = compressor.add_matrix(base_tensor, tuned, signs, scales);
      if (changed) {
        out.signs_.push_back(std::move(signs));
        out.scales_.push_back(std::move(scales));
        ++out.stats.compressed_tensors;
      }
    } else {
      std::vector<uint8_t> delta;
      changed = compressor.add_exact(base_tensor, tuned, delta);
      if (changed) {
        out.deltas_.push_back(std::move(delta));
        ++out.stats.exact_tensors;
      }
    }
    out.stats.unchanged_tensors += !changed;
    ++out.stats.tensors;
    MappedFile::drop_pages(base_tensor.view.data, base_tensor.view.bytes());
    MappedFile::drop_pages(tuned.view.data, tuned.view.bytes());
    out.stats.input_bytes += 2 * int64_t(base_tensor.view.bytes());
    progress.update(out.stats.input_bytes >> 20,
                    cat("MB, tensor ", out.stats.tensors, "/", base_tensors.size()));
  }
  progress.finish();
  if (out.matrices.empty() && out.exact.empty())
    fail(finetune.dir(), ": every tensor equals the base's in ", base.dir(),
         "; there is no delta to compress");

  AdapterInfo& info = out.info;
  info.base_fingerprint = compressor.base_fingerprint();
  info.finetune_fingerprint = compressor.finetune_fingerprint();
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
