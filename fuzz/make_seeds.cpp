// Writes the seed corpus of every fuzz target from files the project's own tools made, so the
// seeds follow the formats as they change (scripts/fuzz.sh runs it on every fuzzing run):
//
//   make_fuzz_seeds OUT_DIR MODEL_DIR TOKENIZER_JSON CONFIG_JSON ADAPTER...
//
// MODEL_DIR is a tiny checkpoint from `bitdelta train`, ADAPTER a `bitdelta compress` output,
// TOKENIZER_JSON and CONFIG_JSON the default model's. OUT_DIR/<target>/ gets:
//   safetensors     the model, the adapters, and a file with every dtype written here
//   checkpoint      the model as one file and as two shards with an index; the default config
//                   with the tiny model's tensors (refused: the shapes differ)
//   adapter         the adapters
//   tokenizer_json  the default tokenizer.json and each style of tokenizer_styles.h, with texts
//   tokenize        texts: English, many scripts, invalid UTF-8, spelled-out special tokens
//   abi             for each type of abi_types.h, its index byte and a valid encoding
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "abi_types.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "fuzz_util.h"
#include "io/safetensors.h"
#include "tokenizer_styles.h"
#include "trust/abi.h"

namespace {

namespace fs = std::filesystem;
using bd::fuzz::kSeparator;
using namespace std::string_literals;

const std::vector<std::string> kTexts = {
    "Hello, world! It's 2024; we'll see 123456 things.\n\tTabs, two  spaces and a newline.\r\n",
    "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \u043f\u0440\u0438\u0432\u0435\u0442 "
    "\U0001F642 e\u0301 \u2581lead",
    "bytes \xff\xfe\xc3 and a NUL \0 inside"s,
    "<s>hello</s> <|endoftext|><|bos|> x<|eos|> <unk> <|begin_of_text|>",
    "THE'S DON'T I'M  \n\n  trailing   ",
};

void write(const fs::path& path, std::string_view bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out.flush()) bd::fail(path.string(), ": cannot write");
}

std::string join(const std::vector<std::string>& parts) {
  std::string joined;
  for (size_t i = 0; i < parts.size(); ++i) joined += (i ? std::string(kSeparator) : "") + parts[i];
  return joined;
}

// One of each dtype, a scalar and an empty tensor, and metadata.
void write_dtypes_file(const fs::path& path) {
  const std::vector<uint8_t> bytes(64, 0x3c);
  std::vector<bd::NamedTensor> tensors;
  for (bd::DType dtype : {bd::DType::F32, bd::DType::F16, bd::DType::BF16, bd::DType::U8,
                          bd::DType::I8, bd::DType::I32, bd::DType::U32})
    tensors.push_back({"t." + std::string(bd::dtype_name(dtype)), {dtype, {2, 3}, bytes.data()}});
  tensors.push_back({"scalar", {bd::DType::F32, {}, bytes.data()}});
  tensors.push_back({"empty", {bd::DType::F16, {0, 4}, bytes.data()}});
  bd::write_safetensors(path, tensors, {{"format", "pt"}, {"note", "seed"}}, true);
}

// The model's tensors in two shards (the first half of the names, the rest) and their index.
std::vector<std::string> sharded(const bd::SafetensorsFile& model, const fs::path& scratch) {
  const std::vector<bd::NamedTensor> tensors = model.tensors();
  const size_t half = tensors.size() / 2;
  const std::string shard_names[2] = {"model-00001-of-00002.safetensors",
                                      "model-00002-of-00002.safetensors"};
  nlohmann::json index = {{"metadata", {{"total_size", 0}}},
                          {"weight_map", nlohmann::json::object()}};
  std::vector<bd::NamedTensor> shards[2];
  for (size_t i = 0; i < tensors.size(); ++i) {
    shards[i >= half].push_back(tensors[i]);
    index["weight_map"][tensors[i].name] = shard_names[i >= half];
  }
  std::vector<std::string> parts = {index.dump(2)};
  for (int s = 0; s < 2; ++s) {
    const fs::path path = scratch / shard_names[s];
    bd::write_safetensors(path, shards[s], model.metadata(), true);
    parts.push_back(bd::read_file(path));
  }
  return parts;
}

void checkpoint_seeds(const fs::path& out, const fs::path& model_dir, const fs::path& config) {
  const std::string model_config = bd::read_file(model_dir / "config.json");
  const std::string model = bd::read_file(model_dir / "model.safetensors");
  write(out / "checkpoint" / "single", join({model_config, "", model}));
  write(out / "checkpoint" / "default_config", join({bd::read_file(config), "", model}));
  const bd::SafetensorsFile file(model_dir / "model.safetensors");
  std::vector<std::string> parts = sharded(file, out / ".scratch");
  parts.insert(parts.begin(), model_config);
  write(out / "checkpoint" / "sharded", join(parts));
}

void tokenizer_seeds(const fs::path& out, const fs::path& tokenizer_json) {
  write(out / "tokenizer_json" / "default", join({bd::read_file(tokenizer_json), kTexts[0]}));
  const std::vector<bd::fuzz::TokenizerStyle> styles = bd::fuzz::tokenizer_styles();
  for (size_t i = 0; i < styles.size(); ++i)
    write(out / "tokenizer_json" / styles[i].name,
          join({styles[i].json, kTexts[i % kTexts.size()]}));
  for (size_t i = 0; i < kTexts.size(); ++i)
    write(out / "tokenize" / ("text" + std::to_string(i)), kTexts[i]);
}

// A value of `type` with something in every field: words counting up, short texts, two items
// per array.
bd::AbiValue sample(const bd::AbiType& type, uint64_t& counter) {
  switch (type.kind) {
    case bd::AbiType::Kind::bytes:
    case bd::AbiType::Kind::string:
      return bd::abi_bytes("value " + std::to_string(counter++));
    case bd::AbiType::Kind::array:
      return bd::abi_list({sample(type.items[0], counter), sample(type.items[0], counter)});
    case bd::AbiType::Kind::tuple: {
      std::vector<bd::AbiValue> items;
      for (const bd::AbiType& t : type.items) items.push_back(sample(t, counter));
      return bd::abi_list(items);
    }
    default:
      return bd::abi_word(bd::abi_uint(counter++ % 2));  // valid for bool, uint8, … as well
  }
}

void abi_seeds(const fs::path& out) {
  for (size_t i = 0; i < bd::fuzz::kAbiTypes.size(); ++i) {
    const bd::AbiType type = bd::parse_abi_type(bd::fuzz::kAbiTypes[i]);
    uint64_t counter = 1;
    write(out / "abi" / ("type" + std::to_string(i)),
          std::string(1, char(i)) + bd::abi_encode(type, sample(type, counter)));
  }
}

void make_seeds(const std::vector<std::string>& args) {
  const fs::path out = args[0], model_dir = args[1], tokenizer_json = args[2], config = args[3];
  fs::create_directories(out / ".scratch");
  write(out / "safetensors" / "model", bd::read_file(model_dir / "model.safetensors"));
  write_dtypes_file(out / ".scratch" / "dtypes.safetensors");
  write(out / "safetensors" / "dtypes", bd::read_file(out / ".scratch" / "dtypes.safetensors"));
  for (size_t i = 4; i < args.size(); ++i) {
    const std::string adapter = bd::read_file(args[i]);
    const std::string name = fs::path(args[i]).stem().string();
    write(out / "safetensors" / name, adapter);
    write(out / "adapter" / name, adapter);
  }
  checkpoint_seeds(out, model_dir, config);
  tokenizer_seeds(out, tokenizer_json);
  abi_seeds(out);
  fs::remove_all(out / ".scratch");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(
        stderr, "usage: make_fuzz_seeds OUT_DIR MODEL_DIR TOKENIZER_JSON CONFIG_JSON ADAPTER...\n");
    return 2;
  }
  try {
    make_seeds({argv + 1, argv + argc});
  } catch (const std::exception& error) {
    std::fprintf(stderr, "make_fuzz_seeds: %s\n", error.what());
    return 1;
  }
  return 0;
}
