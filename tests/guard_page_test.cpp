// Highway's LoadMaskBits / StoreMaskBits may touch 8 bytes at their pointer, more than a vector's
// lanes own, and a packed sign row can end exactly where a mapped file ends. Here every sign
// kernel reads (or writes) a matrix whose last row ends at the last byte of a page followed by an
// inaccessible guard page: a read or write past the row is a SIGSEGV, not a silent pass. Results
// are checked against a scalar reference over the same bits, so the guarded run also computes
// the right thing.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/sign_matmul.h"
#include "kernels/sign_pack.h"

namespace bd {
namespace {

// `bytes` readable and writable bytes that end exactly where a PROT_NONE guard page begins.
class GuardedBytes {
 public:
  explicit GuardedBytes(size_t bytes) {
    const size_t page = size_t(::sysconf(_SC_PAGESIZE));
    const size_t usable = (bytes + page - 1) / page * page;
    mapped_ = usable + page;
    void* map =
        ::mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) throw std::runtime_error("mmap failed");
    map_ = static_cast<uint8_t*>(map);
    if (::mprotect(map_ + usable, page, PROT_NONE) != 0) throw std::runtime_error("mprotect");
    data_ = map_ + usable - bytes;
  }
  ~GuardedBytes() { ::munmap(map_, mapped_); }
  GuardedBytes(const GuardedBytes&) = delete;
  GuardedBytes& operator=(const GuardedBytes&) = delete;

  uint8_t* data() { return data_; }

 private:
  uint8_t* map_ = nullptr;
  uint8_t* data_ = nullptr;
  size_t mapped_ = 0;
};

bool sign_bit(const uint8_t* bits, int64_t I, int64_t o, int64_t i) {
  return (bits[o * sign_row_bytes(I) + i / 8] >> (i % 8)) & 1;
}

// y[T, O] = scale[o] · Σ_i S[o, i] · x[t, i], in double.
std::vector<double> reference_product(const std::vector<float>& x, const uint8_t* bits,
                                      const std::vector<float>& scale, int64_t T, int64_t O,
                                      int64_t I) {
  std::vector<double> y(size_t(T * O));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < O; ++o) {
      double sum = 0;
      for (int64_t i = 0; i < I; ++i) sum += (sign_bit(bits, I, o, i) ? 1.0 : -1.0) * x[t * I + i];
      y[t * O + o] = double(scale[size_t(o)]) * sum;
    }
  return y;
}

struct Shape {
  int64_t O, I;
};

// Row lengths that end on a whole vector of any width (I = 256), mid-vector (I = 200: 25 bytes)
// and mid-byte (I = 61); rows enough to cross the kernels' threshold for threads.
const Shape kShapes[] = {{300, 256}, {7, 200}, {300, 61}, {1, 8}};

class SignRowAtThePageEnd : public testing::TestWithParam<Shape> {};

TEST_P(SignRowAtThePageEnd, ProductsReadNoByteBeyondTheLastRow) {
  const auto [O, I] = GetParam();
  std::mt19937 rng(uint32_t(O * 1000 + I));
  const size_t bytes = size_t(O * sign_row_bytes(I));
  GuardedBytes guarded(bytes);
  uint8_t* bits = guarded.data();
  std::uniform_int_distribution<int> byte(0, 255);
  for (size_t b = 0; b < bytes; ++b) bits[b] = uint8_t(byte(rng));
  if (I % 8)  // padding bits are 0, as the format requires
    for (int64_t o = 0; o < O; ++o)
      bits[(o + 1) * sign_row_bytes(I) - 1] &= uint8_t(0xff >> (8 - I % 8));

  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> scale(static_cast<size_t>(O));
  for (float& s : scale) s = 0.5f + uniform(rng) * 0.25f;
  // Few tokens take the quantized GEMV, many the widened SGEMM: both read every row.
  for (int64_t T : {int64_t(1), int64_t(3), kSignGemvMaxTokens + 5}) {
    std::vector<float> x(size_t(T * I));
    for (float& v : x) v = uniform(rng);
    std::vector<float> y(size_t(T * O), 0.0f);
    sign_matmul(y.data(), x.data(), bits, scale.data(), /*per_row=*/true, T, O, I);
    const std::vector<double> want = reference_product(x, bits, scale, T, O, I);
    // The few-token path quantizes x to steps of max|x| / kSignQuantMax (kernels/sign_matmul.h):
    // |x| < 1 and scales < 0.75 put each output within I·0.504·0.75 / kSignQuantMax of the exact
    // one.
    const double quantization =
        T <= kSignGemvMaxTokens ? double(I) * 0.504 * 0.75 / kSignQuantMax : 0;
    for (size_t k = 0; k < y.size(); ++k)
      ASSERT_NEAR(y[k], want[k], quantization + 1e-5 * (1 + std::abs(want[k])))
          << "T=" << T << " at " << k;

    // dx[T, I] = (dy ⊙ scale) · S, the transposed product over the same bits.
    std::vector<float> dy(size_t(T * O)), dx(size_t(T * I), 0.0f);
    for (float& v : dy) v = uniform(rng);
    sign_matmul_backward_x(dx.data(), dy.data(), bits, scale.data(), true, T, O, I);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < I; ++i) {
        double sum = 0;
        for (int64_t o = 0; o < O; ++o)
          sum += double(dy[t * O + o]) * scale[o] * (sign_bit(bits, I, o, i) ? 1.0 : -1.0);
        ASSERT_NEAR(dx[t * I + i], sum, 1e-4 * (1 + std::abs(sum))) << "T=" << T;
      }
  }

  // Reconstruction base + scale ⊙ S reads the same rows.
  std::vector<float> base(size_t(O * I)), out(size_t(O * I));
  for (float& v : base) v = uniform(rng);
  add_scaled_signs(DType::F32, base.data(), bits, scale.data(), true, O, I, DType::F32, out.data());
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i)
      ASSERT_EQ(out[o * I + i], base[o * I + i] + (sign_bit(bits, I, o, i) ? scale[o] : -scale[o]));
}

TEST_P(SignRowAtThePageEnd, PackingWritesNoByteBeyondTheLastRow) {
  const auto [O, I] = GetParam();
  std::mt19937 rng(uint32_t(O * 7 + I));
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> base(size_t(O * I)), finetune(size_t(O * I));
  for (float& v : base) v = uniform(rng);
  for (float& v : finetune) v = uniform(rng);
  GuardedBytes guarded(size_t(O * sign_row_bytes(I)));
  uint8_t* bits = guarded.data();
  std::vector<double> abs_sums(static_cast<size_t>(O));
  pack_delta_signs(DType::F32, base.data(), finetune.data(), O, I, bits, abs_sums.data());
  for (int64_t o = 0; o < O; ++o) {
    double abs_sum = 0;
    for (int64_t i = 0; i < I; ++i) {
      const float delta = finetune[o * I + i] - base[o * I + i];
      abs_sum += std::abs(delta);
      ASSERT_EQ(sign_bit(bits, I, o, i), delta >= 0.0f) << o << ", " << i;
    }
    for (int64_t i = I; i < sign_row_bytes(I) * 8; ++i)
      ASSERT_FALSE(sign_bit(bits, I, o, i)) << "padding bit " << i << " of row " << o;
    ASSERT_NEAR(abs_sums[o], abs_sum, 1e-5 * abs_sum);
  }
}

// The guard is real: one byte past the row is a fault (so the tests above would crash on a
// kernel that touched it, rather than pass).
TEST(GuardedBytesDeathTest, TheByteAfterTheRowFaults) {
  GuardedBytes guarded(13);
  guarded.data()[12] = 1;  // the last byte is writable
  EXPECT_DEATH(
      {
        volatile uint8_t* past = guarded.data() + 13;
        *past = 1;
      },
      "");
}

INSTANTIATE_TEST_SUITE_P(Shapes, SignRowAtThePageEnd, testing::ValuesIn(kShapes),
                         [](const testing::TestParamInfo<Shape>& info) {
                           return "O" + std::to_string(info.param.O) + "_I" +
                                  std::to_string(info.param.I);
                         });

}  // namespace
}  // namespace bd
