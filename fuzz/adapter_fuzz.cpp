// libFuzzer target: bd::AdapterFile (src/io/adapter.h), the .bitdelta reader, on arbitrary bytes.
//
// Input: the whole adapter file, written to the scratch folder and opened by path. For an
// accepted adapter it reads every sign, scale and exact-delta byte, checks what the reader
// promises (sign and scale shapes, finite scales, zero padding bits, float deltas), and for small
// matrices compares the packed-sign kernel (sign_matmul with x = 1) against counting the bits here.
#include <cmath>
#include <vector>

#include "core/tensor.h"
#include "fuzz_util.h"
#include "io/adapter.h"
#include "kernels/sign_matmul.h"

namespace {

using bd::fuzz::die;
using bd::fuzz::shown;

// Larger matrices are only summed: the kernel check should stay well under a millisecond.
constexpr int64_t kMaxCheckedWeights = 1 << 16;

void check_shapes(const bd::AdapterMatrix& m) {
  const std::string name = shown(m.name);
  if (m.out < 1 || m.in < 1) die(name + ": accepted with an empty shape");
  if (m.sign.dtype != bd::DType::U8 || m.sign.shape != bd::Shape{m.out, bd::sign_row_bytes(m.in)})
    die(name + ": accepted with a sign tensor that is not U8 [out, ceil(in/8)]");
  if (m.scale.dtype != bd::DType::F32 || (m.scale.numel() != 1 && m.scale.numel() != m.out))
    die(name + ": accepted with a scale tensor that is not F32 [1] or [out]");
  for (int64_t i = 0; i < m.scale.numel(); ++i)
    if (!std::isfinite(m.scale.as<float>()[i])) die(name + ": accepted with a non-finite scale");
}

bool sign_bit(const bd::AdapterMatrix& m, int64_t row, int64_t column) {
  const uint8_t byte = m.sign.as<uint8_t>()[row * bd::sign_row_bytes(m.in) + column / 8];
  return (byte >> (column % 8)) & 1;
}

void check_padding(const bd::AdapterMatrix& m) {
  const int64_t padded = bd::sign_row_bytes(m.in) * 8;
  for (int64_t row = 0; row < m.out; ++row)
    for (int64_t column = m.in; column < padded; ++column)
      if (sign_bit(m, row, column)) die(shown(m.name) + ": accepted with a padding bit set");
}

// y = scale ⊙ (S · 1) is the scale times (set bits − clear bits) per row; the sums are integers
// below 2^17, exact in float, so only the final scaling rounds.
void check_kernel(const bd::AdapterMatrix& m) {
  if (m.out * m.in > kMaxCheckedWeights) return;
  const std::vector<float> x(m.in, 1.0f);
  std::vector<float> y(m.out, 0.0f);
  bd::sign_matmul(y.data(), x.data(), m.sign.as<uint8_t>(), m.scale.as<float>(), m.per_row(), 1,
                  m.out, m.in);
  for (int64_t row = 0; row < m.out; ++row) {
    int64_t count = 0;
    for (int64_t column = 0; column < m.in; ++column) count += sign_bit(m, row, column) ? 1 : -1;
    const float scale = m.scale.as<float>()[m.per_row() ? row : 0];
    const double expected = double(scale) * double(count);
    const double tolerance = 1e-6 * std::fabs(expected) + 1e-30;
    // Written so that a NaN from the kernel fails too.
    if (std::isinf(float(expected)) ? y[row] != float(expected)
                                    : !(std::fabs(y[row] - expected) <= tolerance))
      die(shown(m.name) + ": sign_matmul row " + std::to_string(row) + " gives " +
          std::to_string(y[row]) + ", counting the bits gives " + std::to_string(expected));
  }
}

void check_adapter(const bd::AdapterFile& adapter) {
  uint64_t sum = 0;
  for (const bd::AdapterMatrix& m : adapter.matrices()) {
    check_shapes(m);
    sum += bd::fuzz::sum_bytes(m.sign.data, m.sign.bytes());
    sum += bd::fuzz::sum_bytes(m.scale.data, m.scale.bytes());
    check_padding(m);
    check_kernel(m);
    if (adapter.find_matrix(m.name) != &m) die(shown(m.name) + ": find_matrix disagrees");
  }
  for (const bd::AdapterExact& kept : adapter.exact()) {
    if (!bd::is_float(kept.delta.dtype)) die(shown(kept.name) + ": accepted a non-float delta");
    sum += bd::fuzz::sum_bytes(kept.delta.data, kept.delta.bytes());
    if (bd::to_f32(kept.delta).size() != size_t(kept.delta.numel())) die("to_f32 lost elements");
  }
  const bd::AdapterSizes sizes = bd::adapter_sizes(adapter.matrices(), adapter.exact());
  if (sizes.sign_bytes < 0 || sizes.exact_bytes < 0) die("adapter_sizes overflowed");
  if (sum == UINT64_MAX) die("impossible byte sum");  // keeps the reads
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bd::fuzz::Scratch& scratch = bd::fuzz::Scratch::get();
  scratch.clear();
  const std::string path = scratch.write("input.bitdelta", bd::fuzz::as_text(data, size));
  bd::fuzz::refused([&] { check_adapter(bd::AdapterFile(path)); });
  return 0;
}
