// safetensors reader and writer: round trips, a cross-check against an independent Python
// reader/writer (tests/reference/safetensors_ref.py), and one test per kind of bad file.
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "core/mapped_file.h"
#include "test_util.h"

namespace bd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::expect_error;
using test::ScratchDir;

// Owns the bytes behind a TensorView.
struct OwnedTensor {
  std::string name;
  DType dtype;
  Shape shape;
  std::vector<uint8_t> bytes;
  NamedTensor named() const { return {name, TensorView{dtype, shape, bytes.data()}}; }
};

// The value patterns shared with safetensors_ref.py: floats (i - n/2) / 4, signed ints 3i - 7,
// unsigned ints 5i (all exact in every dtype at the sizes used here).
double pattern_value(DType dtype, int64_t i, int64_t count) {
  if (is_float(dtype)) return (double(i) - double(count) / 2) / 4.0;
  if (dtype == DType::I8 || dtype == DType::I32) return double(i * 3 - 7);
  return double(i * 5);
}

OwnedTensor make_pattern(const std::string& name, DType dtype, Shape shape) {
  OwnedTensor tensor{name, dtype, shape, {}};
  int64_t count = shape_numel(shape);
  tensor.bytes.resize(size_t(count) * dtype_size(dtype));
  for (int64_t i = 0; i < count; ++i) {
    double value = pattern_value(dtype, i, count);
    uint8_t* out = tensor.bytes.data() + i * dtype_size(dtype);
    // Each dtype's conversion only in its own case: converting a negative double to an unsigned
    // type is undefined behaviour (UBSan's float-cast-overflow).
    const float f = float(value);
    uint16_t half;
    int8_t i8;
    uint8_t u8;
    int32_t i32;
    uint32_t u32;
    switch (dtype) {
      case DType::F32:
        std::memcpy(out, &f, 4);
        break;
      case DType::F16:
        half = f32_to_f16(f);
        std::memcpy(out, &half, 2);
        break;
      case DType::BF16:
        half = f32_to_bf16(f);
        std::memcpy(out, &half, 2);
        break;
      case DType::U8:
        u8 = uint8_t(value);
        std::memcpy(out, &u8, 1);
        break;
      case DType::I8:
        i8 = int8_t(value);
        std::memcpy(out, &i8, 1);
        break;
      case DType::I32:
        i32 = int32_t(value);
        std::memcpy(out, &i32, 4);
        break;
      case DType::U32:
        u32 = uint32_t(value);
        std::memcpy(out, &u32, 4);
        break;
    }
  }
  return tensor;
}

double element(const TensorView& view, int64_t i) {
  switch (view.dtype) {
    case DType::F32:
      return view.as<float>()[i];
    case DType::F16:
      return f16_to_f32(view.as<uint16_t>()[i]);
    case DType::BF16:
      return bf16_to_f32(view.as<uint16_t>()[i]);
    case DType::U8:
      return view.as<uint8_t>()[i];
    case DType::I8:
      return view.as<int8_t>()[i];
    case DType::I32:
      return view.as<int32_t>()[i];
    case DType::U32:
      return view.as<uint32_t>()[i];
  }
  return 0;
}

std::vector<OwnedTensor> every_dtype() {
  return {make_pattern("w.f32", DType::F32, {2, 3}),   make_pattern("w.f16", DType::F16, {5}),
          make_pattern("w.bf16", DType::BF16, {2, 2}), make_pattern("w.u8", DType::U8, {7}),
          make_pattern("w.i8", DType::I8, {3}),        make_pattern("w.i32", DType::I32, {2, 2}),
          make_pattern("w.u32", DType::U32, {3}),      make_pattern("w.empty", DType::F32, {0, 3}),
          make_pattern("w.scalar", DType::F32, {})};
}

std::vector<NamedTensor> views(const std::vector<OwnedTensor>& tensors) {
  std::vector<NamedTensor> out;
  for (const OwnedTensor& tensor : tensors) out.push_back(tensor.named());
  return out;
}

// Writes a file byte by byte: u64 header size, header text, data.
void write_raw(const std::string& path, const std::string& header, const std::string& data,
               uint64_t header_size) {
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 8; ++i) out.put(char(header_size >> (8 * i)));
  out << header << data;
}
void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  write_raw(path, header, data, header.size());
}

// Runs safetensors_ref.py and returns what it printed.
std::string run_python(const std::string& arguments, const ScratchDir& scratch) {
  const test::CommandResult run = test::run_reference("safetensors_ref.py", arguments, scratch);
  EXPECT_EQ(run.exit_code, 0) << arguments << "\n" << run.err;
  return run.out;
}

TEST(Safetensors, RoundTripsEveryDtypeWithMetadata) {
  ScratchDir dir;
  std::vector<OwnedTensor> tensors = every_dtype();
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "ünïcode \"quoted\""}};
  write_safetensors(dir / "a.safetensors", views(tensors), metadata, false);

  SafetensorsFile file(dir / "a.safetensors");
  EXPECT_EQ(file.metadata(), metadata);
  EXPECT_EQ(file.path(), dir / "a.safetensors");
  ASSERT_EQ(file.names().size(), tensors.size());
  for (const OwnedTensor& tensor : tensors) {
    const TensorView& view = file.get(tensor.name);
    EXPECT_EQ(view.dtype, tensor.dtype) << tensor.name;
    EXPECT_EQ(view.shape, tensor.shape) << tensor.name;
    ASSERT_EQ(view.bytes(), tensor.bytes.size()) << tensor.name;
    EXPECT_TRUE(std::equal(tensor.bytes.begin(), tensor.bytes.end(),
                           static_cast<const uint8_t*>(view.data)))
        << tensor.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(view.data) % dtype_size(view.dtype), 0u) << tensor.name;
  }
  EXPECT_EQ(file.find("absent"), nullptr);
  expect_error([&] { file.get("absent"); }, {dir / "a.safetensors", "no tensor 'absent'"});
  // File order: 4-byte dtypes first (by name), then 2-byte, then 1-byte.
  std::vector<std::string> expected_order = {"w.empty", "w.f32", "w.i32", "w.scalar", "w.u32",
                                             "w.bf16",  "w.f16", "w.i8",  "w.u8"};
  EXPECT_EQ(file.names(), expected_order);
  std::vector<NamedTensor> listed = file.tensors();
  ASSERT_EQ(listed.size(), expected_order.size());
  EXPECT_EQ(listed[1].name, "w.f32");
  EXPECT_EQ(listed[1].view.data, file.get("w.f32").data);
}

TEST(Safetensors, RoundTripsAnEmptyFile) {
  ScratchDir dir;
  write_safetensors(dir / "empty.safetensors", {}, {}, false);
  SafetensorsFile file(dir / "empty.safetensors");
  EXPECT_TRUE(file.names().empty());
  EXPECT_TRUE(file.metadata().empty());
  EXPECT_EQ(fs::file_size(dir / "empty.safetensors") % 8, 0u);
}

TEST(Safetensors, PythonReadsWhatWeWrite) {
  ScratchDir dir;
  std::vector<OwnedTensor> tensors = every_dtype();
  write_safetensors(dir / "ours.safetensors", views(tensors), {{"format", "pt"}}, false);
  json parsed = json::parse(run_python("read " + (dir / "ours.safetensors"), dir));
  EXPECT_EQ(parsed["metadata"], json({{"format", "pt"}}));
  ASSERT_EQ(parsed["tensors"].size(), tensors.size());
  for (const OwnedTensor& tensor : tensors) {
    const json& entry = parsed["tensors"][tensor.name];
    EXPECT_EQ(entry["dtype"], std::string(dtype_name(tensor.dtype))) << tensor.name;
    EXPECT_EQ(entry["shape"].get<Shape>(), tensor.shape) << tensor.name;
    int64_t count = shape_numel(tensor.shape);
    ASSERT_EQ(int64_t(entry["values"].size()), count) << tensor.name;
    for (int64_t i = 0; i < count; ++i)
      EXPECT_EQ(entry["values"][i].get<double>(), pattern_value(tensor.dtype, i, count))
          << tensor.name << "[" << i << "]";
  }
}

TEST(Safetensors, WeReadWhatPythonWrites) {
  ScratchDir dir;
  run_python("write " + (dir / "python.safetensors"), dir);
  SafetensorsFile file(dir / "python.safetensors");
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"writer", "python"}};
  EXPECT_EQ(file.metadata(), metadata);
  struct Expected {
    const char* name;
    DType dtype;
    Shape shape;
  };
  std::vector<Expected> expected = {
      {"python.f32", DType::F32, {2, 3}},   {"python.f16", DType::F16, {5}},
      {"python.bf16", DType::BF16, {2, 2}}, {"python.u8", DType::U8, {7}},
      {"python.i8", DType::I8, {3}},        {"python.i32", DType::I32, {2, 2}},
      {"python.u32", DType::U32, {3}},      {"python.empty", DType::F32, {0, 3}},
      {"python.scalar", DType::F32, {}}};
  ASSERT_EQ(file.names().size(), expected.size());
  EXPECT_EQ(file.names().front(), "python.scalar");  // the Python writer put it first in the data
  for (const Expected& want : expected) {
    const TensorView& view = file.get(want.name);
    EXPECT_EQ(view.dtype, want.dtype) << want.name;
    EXPECT_EQ(view.shape, want.shape) << want.name;
    for (int64_t i = 0; i < view.numel(); ++i)
      EXPECT_EQ(element(view, i), pattern_value(want.dtype, i, view.numel())) << want.name;
  }
}

TEST(Safetensors, AcceptsSpacePaddingAndAnnouncesTheCopyOfUnalignedData) {
  ScratchDir dir;
  // Header of odd length with trailing spaces: the F32 data starts at an odd file offset, the U8
  // tensor after it needs no alignment.
  float values[2] = {1.5f, -2.25f};
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("y":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}   )";
  if (header.size() % 2 == 0) header += ' ';
  write_raw(dir / "odd.safetensors", header,
            std::string(reinterpret_cast<char*>(values), 8) + "abc");
  testing::internal::CaptureStderr();
  SafetensorsFile file(dir / "odd.safetensors");
  const std::string warning = testing::internal::GetCapturedStderr();
  EXPECT_EQ(warning, "warning: " + dir / "odd.safetensors" +
                         ": 1 of 2 tensors are not aligned to their dtype in the file (its header "
                         "is not padded to a multiple of 8 bytes); copying 8 bytes of them to "
                         "memory\n");
  const TensorView& view = file.get("x");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(view.data) % 4, 0u);
  EXPECT_EQ(view.as<float>()[0], 1.5f);
  EXPECT_EQ(view.as<float>()[1], -2.25f);
  // Only the unaligned tensor was copied (the warning counts 8 bytes); the U8 one is read in
  // place.
  EXPECT_EQ(std::string(static_cast<const char*>(file.get("y").data), 3), "abc");

  // An aligned file is read in place, without a word.
  testing::internal::CaptureStderr();
  write_safetensors(dir / "even.safetensors", {{"x", TensorView{DType::F32, {2}, values}}}, {},
                    false);
  SafetensorsFile even(dir / "even.safetensors");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

TEST(Safetensors, NeverOverwritesWithoutPermissionAndLeavesNoTempFile) {
  ScratchDir dir;
  std::vector<OwnedTensor> first = {make_pattern("a", DType::F32, {2})};
  std::vector<OwnedTensor> second = {make_pattern("b", DType::U8, {3})};
  std::string path = dir / "model.safetensors";
  write_safetensors(path, views(first), {}, false);
  expect_error([&] { write_safetensors(path, views(second), {}, false); },
               {path, "already exists"});
  EXPECT_NE(SafetensorsFile(path).find("a"), nullptr);
  write_safetensors(path, views(second), {}, true);
  EXPECT_NE(SafetensorsFile(path).find("b"), nullptr);
  EXPECT_EQ(test::folder_entries(dir.path()), std::vector<std::string>{"model.safetensors"});

  // A failure before the data is written leaves nothing behind.
  std::vector<NamedTensor> duplicated = {first[0].named(), first[0].named()};
  expect_error([&] { write_safetensors(dir / "dup.safetensors", duplicated, {}, false); },
               {"dup.safetensors", "duplicate tensor name", "'a'"});
  NamedTensor no_data{"c", TensorView{DType::F32, {4}, nullptr}};
  expect_error([&] { write_safetensors(dir / "null.safetensors", {no_data}, {}, false); },
               {"null.safetensors", "no data", "'c'"});
  expect_error([&] { write_safetensors(dir / "none/x.safetensors", views(first), {}, false); },
               {"none/x.safetensors"});
  EXPECT_EQ(test::folder_entries(dir.path()), std::vector<std::string>{"model.safetensors"});
}

// One hostile or broken file per case: each must be rejected with a message naming the file
// and the problem (and the tensor where there is one), never a crash or an out-of-bounds read.
struct BadFile {
  const char* label;
  std::string header;
  std::string data;
  int64_t header_size;  // -1: the header's real size
  std::vector<std::string> message;
};

void PrintTo(const BadFile& bad, std::ostream* out) {
  *out << bad.label;
}

class SafetensorsRejects : public testing::TestWithParam<BadFile> {};

TEST_P(SafetensorsRejects, WithOneClearMessage) {
  ScratchDir dir;
  const BadFile& bad = GetParam();
  std::string path = dir / "bad.safetensors";
  write_raw(path, bad.header, bad.data,
            bad.header_size < 0 ? bad.header.size() : uint64_t(bad.header_size));
  std::vector<std::string> pieces = bad.message;
  pieces.push_back(path + ": ");
  expect_error([&] { SafetensorsFile file(path); }, pieces);
}

std::string f32_entry(const std::string& name, int count, int begin) {
  return "\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(count) +
         "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(begin + 4 * count) +
         "]}";
}

const BadFile kBadFiles[] = {
    {"header_beyond_file", "{}", "", 1000, {"header size 1000", "larger than"}},
    {"header_over_limit", "{}", "", int64_t(1) << 40, {"exceeds the limit"}},
    {"header_not_json", "{\"x\": [1, 2", "", -1, {"not valid JSON"}},
    {"header_not_object", "[1, 2]", "", -1, {"not a JSON object"}},
    {"header_nul_padding", std::string("{}\0\0", 4), "", -1, {"not valid JSON"}},
    {"lies_about_size",
     R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}})",
     std::string(8, '\0'),
     -1,
     {"hold 8 bytes but F32 [4] needs 16", "(tensor 'w')"}},
    {"data_truncated",
     "{" + f32_entry("w", 4, 0) + "}",
     std::string(10, '\0'),
     -1,
     {"run past the data section", "(tensor 'w')"}},
    {"overlap",
     "{" + f32_entry("a", 2, 0) + "," + f32_entry("b", 2, 4) + "}",
     std::string(12, '\0'),
     -1,
     {"overlap", "(tensor 'b')"}},
    {"gap",
     "{" + f32_entry("a", 1, 0) + "," + f32_entry("b", 1, 8) + "}",
     std::string(12, '\0'),
     -1,
     {"gap in the data section", "(tensor 'b')"}},
    {"trailing_bytes",
     "{" + f32_entry("a", 1, 0) + "}",
     std::string(12, '\0'),
     -1,
     {"trailing bytes"}},
    {"end_before_begin",
     R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})",
     std::string(4, '\0'),
     -1,
     {"end before begin", "(tensor 'w')"}},
    {"unknown_dtype",
     R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})",
     std::string(8, '\0'),
     -1,
     {"unsupported dtype 'F64'", "(tensor 'w')"}},
    {"duplicate_name",
     "{" + f32_entry("w", 1, 0) + "," + f32_entry("w", 1, 4) + "}",
     std::string(8, '\0'),
     -1,
     {"duplicate tensor name", "(tensor 'w')"}},
    {"negative_dim",
     R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})",
     "",
     -1,
     {"non-negative integers", "(tensor 'w')"}},
    {"float_dim",
     R"({"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})",
     "x",
     -1,
     {"non-negative integers", "(tensor 'w')"}},
    {"overflowing_shape",  // each extent within the limit, their product past 2^64
     R"({"w":{"dtype":"F32","shape":[2147483648,2147483648,2147483648],"data_offsets":[0,4]}})",
     std::string(4, '\0'),
     -1,
     {"too large", "(tensor 'w')"}},
    {"negative_offset",
     R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})",
     "x",
     -1,
     {"data_offsets must be non-negative", "(tensor 'w')"}},
    {"missing_offsets",
     R"({"w":{"dtype":"U8","shape":[1]}})",
     "x",
     -1,
     {"data_offsets must be [begin, end]", "(tensor 'w')"}},
    {"missing_dtype",
     R"({"w":{"shape":[1],"data_offsets":[0,1]}})",
     "x",
     -1,
     {"dtype", "(tensor 'w')"}},
    {"unknown_field",
     R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}})",
     "x",
     -1,
     {"unknown field 'x'", "(tensor 'w')"}},
    {"entry_not_object", R"({"w":[1]})", "", -1, {"not a JSON object", "(tensor 'w')"}},
    {"metadata_not_strings",
     R"({"__metadata__":{"format":1}})",
     "",
     -1,
     {"__metadata__", "'format'", "not a string"}},
    {"metadata_not_object", R"({"__metadata__":"pt"})", "", -1, {"__metadata__"}},
};

INSTANTIATE_TEST_SUITE_P(BadFiles, SafetensorsRejects, testing::ValuesIn(kBadFiles),
                         [](const testing::TestParamInfo<BadFile>& info) {
                           return std::string(info.param.label);
                         });

TEST(Safetensors, RejectsTruncatedFilesAtEveryLength) {
  ScratchDir dir;
  std::vector<OwnedTensor> tensors = every_dtype();
  write_safetensors(dir / "whole.safetensors", views(tensors), {{"format", "pt"}}, false);
  const std::string whole = read_file(dir / "whole.safetensors");
  std::string path = dir / "cut.safetensors";
  for (size_t length = 0; length < whole.size(); ++length) {
    test::write_bytes(path, std::string_view(whole).substr(0, length));
    expect_error([&] { SafetensorsFile file(path); }, {path + ": "});
  }
}

// Random corruption of a valid file (flipped bytes in the size, header and data): each variant
// must either load or fail with bd::Error; under ASan/UBSan any bad read would abort the test.
TEST(Safetensors, SurvivesRandomCorruption) {
  ScratchDir dir;
  write_safetensors(dir / "whole.safetensors", views(every_dtype()), {{"k", "v"}}, false);
  const std::string whole = read_file(dir / "whole.safetensors");
  std::mt19937 rng(12345);
  std::string path = dir / "mutant.safetensors";
  int loaded = 0, rejected = 0;
  for (int trial = 0; trial < 1000; ++trial) {
    std::string mutant = whole;
    int flips = 1 + int(rng() % 3);
    for (int i = 0; i < flips; ++i) {
      // Mostly in the size field and header, where the parser looks.
      size_t at = rng() % 4 ? rng() % std::min<size_t>(mutant.size(), 8 + 64 + rng() % 600)
                            : rng() % mutant.size();
      mutant[at] = char(rng() % 4 ? rng() : "0123456789,[]{}\" -"[rng() % 18]);
    }
    test::write_bytes(path, mutant);
    try {
      SafetensorsFile file(path);
      for (const NamedTensor& tensor : file.tensors()) {  // touch every byte a view claims
        const uint8_t* bytes = static_cast<const uint8_t*>(tensor.view.data);
        volatile uint8_t sum = 0;
        for (size_t b = 0; b < tensor.view.bytes(); ++b) sum = sum + bytes[b];
      }
      ++loaded;
    } catch (const Error& error) {
      EXPECT_EQ(std::string(error.what()).rfind(path + ": ", 0), 0u) << error.what();
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 500);  // most random edits break something
  EXPECT_GT(loaded, 0);      // edits inside tensor data are legal
}

TEST(Safetensors, RejectsUnreadablePaths) {
  ScratchDir dir;
  expect_error([&] { SafetensorsFile file(dir / "missing.safetensors"); },
               {dir / "missing.safetensors", "cannot open"});
  expect_error([&] { SafetensorsFile file(dir.path()); }, {dir.path(), "not a regular file"});
}

}  // namespace
}  // namespace bd
