#include "soup/soup_inputs.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "core/error.h"
#include "core/mapped_file.h"

namespace bd {

namespace {

// Row r of a compressed weight, dequantised: γ[r] (or γ) · (±1) for each of `cols` signs.
void dequantize_row(const AdapterMatrix& m, int64_t r, float* out) {
  const uint8_t* bits = m.sign.as<uint8_t>() + r * ((m.in + 7) / 8);
  const float* scale = m.scale.as<float>();
  const float gamma = m.per_row() ? scale[r] : scale[0];
  for (int64_t j = 0; j < m.in; ++j) out[j] = (bits[j >> 3] >> (j & 7)) & 1 ? gamma : -gamma;
}

}  // namespace

SoupInputs::SoupInputs(const std::vector<std::string>& paths) {
  if (paths.empty()) fail("a soup needs at least one input adapter");
  for (const std::string& path : paths) {
    SoupContribution c;
    c.path = path;
    c.file = std::make_unique<AdapterFile>(path);
    c.reader = std::make_unique<FileReader>(path, c.file->safetensors().identity());
    c.fingerprint = adapter_fingerprint(path);
    c.owner = c.file->info().owner;
    c.privacy = c.file->info().privacy;
    if (contributions_.empty()) base_fingerprint_ = c.file->info().base_fingerprint;
    if (c.file->info().base_fingerprint != base_fingerprint_)
      fail(path, ": made for the base with fingerprint ", c.file->info().base_fingerprint, ", but ",
           contributions_.front().path, " for ", base_fingerprint_,
           " (every input must share one base)");
    contributions_.push_back(std::move(c));
  }
  std::stable_sort(contributions_.begin(), contributions_.end(),
                   [](const SoupContribution& a, const SoupContribution& b) {
                     return std::tie(a.fingerprint, a.owner) < std::tie(b.fingerprint, b.owner);
                   });
  // The union of the tensors, each with one shape.
  std::map<std::string, SoupTensor> tensors;
  auto add = [&](const SoupContribution& c, SoupTensor tensor) {
    auto [it, inserted] = tensors.emplace(tensor.name, tensor);
    SoupTensor& known = it->second;
    if (!inserted && (known.rows != tensor.rows || known.cols != tensor.cols))
      fail(c.path, ": ", tensor.name, " is [", tensor.rows, ", ", tensor.cols, "] here but [",
           known.rows, ", ", known.cols, "] in another input");
    if (!inserted && !known.compressed && !tensor.compressed && known.dtype != tensor.dtype)
      fail(c.path, ": ", tensor.name, ".delta is ", dtype_name(tensor.dtype), " here but ",
           dtype_name(known.dtype), " in another input");
    known.compressed = known.compressed || tensor.compressed;
  };
  for (const SoupContribution& c : contributions_) {
    for (const AdapterMatrix& m : c.file->matrices())
      add(c, SoupTensor{m.name, true, m.out, m.in, {m.out, m.in}, DType::F32});
    for (const AdapterExact& e : c.file->exact()) {
      const Shape& shape = e.delta.shape;
      const int64_t rows = shape.size() >= 2 ? shape[0] : 1;
      add(c,
          SoupTensor{e.name, false, rows, rows ? e.delta.numel() / rows : 0, shape, e.delta.dtype});
    }
  }
  for (auto& [name, tensor] : tensors) {
    tensors_.push_back(tensor);
    std::vector<Source>& sources = sources_.emplace_back();
    for (const SoupContribution& c : contributions_)
      sources.push_back(Source{c.file->find_matrix(name), c.file->find_exact(name)});
  }
}

int64_t block_rows(const SoupTensor& tensor) {
  return std::max<int64_t>(1, kSoupBlockCoordinates / std::max<int64_t>(1, tensor.cols));
}

int64_t block_count(const SoupTensor& tensor) {
  const int64_t rows = block_rows(tensor);
  return (tensor.rows + rows - 1) / rows;
}

int64_t SoupInputs::coordinates() const {
  int64_t total = 0;
  for (const SoupTensor& tensor : tensors_) total += tensor.numel();
  return total;
}

void SoupInputs::read_block(size_t t, int64_t row0, int64_t rows, float* out) const {
  const SoupTensor& tensor = tensors_[t];
  const int64_t block = rows * tensor.cols;
  for (size_t k = 0; k < contributions_.size(); ++k) {
    float* dst = out + int64_t(k) * block;
    const Source& source = sources_[t][k];
    if (source.matrix) {
      for (int64_t r = 0; r < rows; ++r)
        dequantize_row(*source.matrix, row0 + r, dst + r * tensor.cols);
    } else if (source.exact) {
      const TensorView& delta = source.exact->delta;
      const size_t element = dtype_size(delta.dtype);
      const uint8_t* bytes =
          static_cast<const uint8_t*>(delta.data) + size_t(row0 * tensor.cols) * element;
      to_f32(delta.dtype, bytes, dst, size_t(block));
      MappedFile::drop_pages(bytes, size_t(block) * element);

    } else {
      std::fill_n(dst, block, 0.0f);
    }
  }
}

void SoupInputs::read_signs(size_t t, size_t k, int64_t row0, int64_t rows, uint8_t* out) const {
  const AdapterMatrix& m = *sources_[t][k].matrix;
  const int64_t row_bytes = (m.in + 7) / 8;
  const size_t bytes = size_t(rows * row_bytes), skip = size_t(row0 * row_bytes);
  const SoupContribution& c = contributions_[k];
  const std::optional<uint64_t> offset = c.file->safetensors().file_offset(m.sign);
  if (c.reader->ok() && offset) {
    c.reader->read_at(*offset + skip, bytes, out);
  } else {
    std::memcpy(out, m.sign.as<uint8_t>() + skip, bytes);
  }
}

void SoupInputs::release(size_t t) const {
  for (const Source& source : sources_[t]) {
    if (source.matrix) {
      MappedFile::drop_pages(source.matrix->sign.data, source.matrix->sign.bytes());
      MappedFile::drop_pages(source.matrix->scale.data, source.matrix->scale.bytes());
    }
    if (source.exact) MappedFile::drop_pages(source.exact->delta.data, source.exact->delta.bytes());
  }
}

std::vector<const AdapterMatrix*> SoupInputs::sign_matrices(size_t t) const {
  std::vector<const AdapterMatrix*> matrices;
  for (const Source& source : sources_[t]) {
    if (!source.matrix) return {};
    matrices.push_back(source.matrix);
  }
  return matrices;
}

}  // namespace bd
