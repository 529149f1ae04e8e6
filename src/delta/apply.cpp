#include "delta/apply.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/progress.h"
#include "kernels/matmul_gemv.h"
#include "kernels/parallel.h"
#include "kernels/sign_pack.h"

namespace bd {

namespace {

namespace fs = std::filesystem;

// Elements converted per step of the exact-delta path (per thread, in L2).
constexpr int64_t kChunk = int64_t(1) << 14;

// out = round_to(out_dtype, widen(base) + widen(delta)), elementwise over n elements.
void add_exact_delta(const TensorView& base, const TensorView& delta, DType out_dtype, void* out) {
  const int64_t n = base.numel();
  const size_t in_size = dtype_size(base.dtype), out_size = dtype_size(out_dtype);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel if (n >= kMinParallelWork)
  {
    std::vector<float> sum(size_t(std::min(n, kChunk))), addend(sum.size());
#pragma omp for schedule(static)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const int64_t first = chunk * kChunk, count = std::min(kChunk, n - first);
      widen_to_f32(base.dtype, base.as<uint8_t>() + first * in_size, sum.data(), size_t(count));
      widen_to_f32(delta.dtype, delta.as<uint8_t>() + first * in_size, addend.data(),
                   size_t(count));
      for (int64_t i = 0; i < count; ++i) sum[i] += addend[i];
      from_f32(out_dtype, sum.data(), static_cast<uint8_t*>(out) + first * out_size, size_t(count));
    }
  }
}

std::string torch_dtype_name(DType dtype) {
  return dtype == DType::BF16 ? "bfloat16" : dtype == DType::F16 ? "float16" : "float32";
}

// Writes the checkpoint into a fresh sibling folder, then renames it into place.
void save_folder_atomically(const std::string& out_dir, const LlamaConfig& config,
                            const std::vector<NamedTensor>& tensors,
                            const std::string& tokenizer_json,
                            const std::map<std::string, std::string>& metadata, bool overwrite) {
  fs::path target = fs::absolute(out_dir).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "out/" names "out"
  const fs::path parent = target.parent_path();
  make_dirs(parent.string());
  const std::string pid = std::to_string(::getpid());
  const fs::path temp = parent / (target.filename().string() + ".tmp." + pid);
  const fs::path old = parent / (target.filename().string() + ".old." + pid);
  std::error_code ignored;
  fs::remove_all(temp, ignored);
  try {
    save_checkpoint(temp.string(), config, tensors, tokenizer_json, metadata, false);
    const bool replace = path_exists(target.string());
    if (replace && !overwrite) fail(out_dir, ": already exists (use --force to overwrite)");
    if (replace) fs::rename(target, old);
    fs::rename(temp, target);
    if (replace) fs::remove_all(old, ignored);
  } catch (const fs::filesystem_error& error) {
    fs::remove_all(temp, ignored);
    fail(out_dir, ": cannot move the new checkpoint into place: ", error.code().message());
  } catch (...) {
    fs::remove_all(temp, ignored);
    throw;
  }
}

}  // namespace

void reconstruct_tensor(const TensorView& base, const AdapterMatrix* matrix,
                        const AdapterExact* exact, DType out_dtype, void* out) {
  if (matrix) {
    add_scaled_signs(base.dtype, base.data, matrix->sign.as<uint8_t>(), matrix->scale.as<float>(),
                     matrix->per_row(), matrix->out, matrix->in, out_dtype, out);
  } else if (exact) {
    add_exact_delta(base, exact->delta, out_dtype, out);
  } else {
    std::vector<float> values = to_f32(base);
    from_f32(out_dtype, values.data(), out, values.size());
  }
}

ApplyStats apply_adapter(const Checkpoint& base, const AdapterFile& adapter,
                         const std::string& out_dir, const ApplyOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (path_exists(out_dir) && !options.overwrite)
    fail(out_dir, ": already exists (use --force to overwrite)");
  validate_llama_tensors(base);
  adapter.check_base(base);

  ApplyStats stats;
  std::vector<NamedTensor> tensors = base.tensors();
  std::vector<std::vector<uint8_t>> buffers;  // the tensors that are not views of the base
  Progress progress("apply", int64_t(tensors.size()), "tensors", options.quiet);
  for (size_t i = 0; i < tensors.size(); ++i) {
    NamedTensor& tensor = tensors[i];
    const TensorView base_view = tensor.view;
    const DType dtype =
        is_float(base_view.dtype) ? options.dtype.value_or(base_view.dtype) : base_view.dtype;
    const AdapterMatrix* matrix = adapter.find_matrix(tensor.name);
    const AdapterExact* exact = adapter.find_exact(tensor.name);
    stats.compressed_tensors += matrix != nullptr;
    stats.exact_tensors += exact != nullptr;
    stats.base_tensors += !matrix && !exact;
    if (matrix || exact || dtype != base_view.dtype) {
      buffers.emplace_back(size_t(base_view.numel()) * dtype_size(dtype));
      reconstruct_tensor(base_view, matrix, exact, dtype, buffers.back().data());
      tensor.view = TensorView{dtype, base_view.shape, buffers.back().data()};
      MappedFile::drop_pages(base_view.data, base_view.bytes());
    }
    stats.output_bytes += int64_t(tensor.view.bytes());
    progress.update(int64_t(i + 1));
  }
  progress.finish();

  LlamaConfig config = base.config();
  if (options.dtype) config.torch_dtype = torch_dtype_name(*options.dtype);
  const AdapterInfo& info = adapter.info();
  std::map<std::string, std::string> metadata = {
      {"bitdelta.version", BITDELTA_VERSION},
      {"apply.adapter", adapter.path()},
      {"apply.base_fingerprint", info.base_fingerprint},
      {"apply.finetune_fingerprint", info.finetune_fingerprint},
      {"apply.scale_mode", info.scale_mode},
      {"apply.granularity", info.granularity},
  };
  if (!info.owner.empty()) metadata["apply.owner"] = info.owner;
  const std::string tokenizer_path = (fs::path(base.dir()) / "tokenizer.json").string();
  const std::string tokenizer_json = path_exists(tokenizer_path) ? read_file(tokenizer_path) : "";
  save_folder_atomically(out_dir, config, tensors, tokenizer_json, metadata, options.overwrite);
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace bd
