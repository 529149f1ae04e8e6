// libFuzzer target: a Hugging Face checkpoint folder, read by bd::Checkpoint and checked by
// bd::validate_llama_tensors (src/io/checkpoint.h).
//
// Input: up to four files joined by the separator line "\n--8<--\n" (fuzz_util.h):
//   part 0  config.json (always written, even when empty)
//   part 1  model.safetensors.index.json, written only when non-empty
//   part 2  model.safetensors without an index; with one, model-00001-of-00002.safetensors
//   part 3  model-00002-of-00002.safetensors (only with an index)
// Missing parts are not written; parts after the fourth are ignored. The seeds (scripts/fuzz.sh,
// fuzz/make_seeds.cpp) hold a real tiny checkpoint both as one file and as two shards, so the
// index's weight_map names exactly these shard files.
#include "fuzz_util.h"
#include "io/checkpoint.h"
#include "io/fingerprint.h"

namespace {

using bd::fuzz::die;
using bd::fuzz::shown;

void write_folder(const std::vector<std::string_view>& parts, bd::fuzz::Scratch& scratch) {
  scratch.write("config.json", parts[0]);
  const bool indexed = parts.size() > 1 && !parts[1].empty();
  if (indexed) scratch.write("model.safetensors.index.json", parts[1]);
  const char* first_shard = indexed ? "model-00001-of-00002.safetensors" : "model.safetensors";
  if (parts.size() > 2) scratch.write(first_shard, parts[2]);
  if (indexed && parts.size() > 3) scratch.write("model-00002-of-00002.safetensors", parts[3]);
}

// Reads every byte of every tensor (directly and through the fingerprint) and checks that the
// accessors agree with each other.
void check_tensors(const bd::Checkpoint& checkpoint) {
  uint64_t sum = 0;
  int64_t numel = 0;
  const std::vector<bd::NamedTensor> tensors = checkpoint.tensors();
  for (const bd::NamedTensor& tensor : tensors) {
    sum += bd::fuzz::sum_bytes(tensor.view.data, tensor.view.bytes());
    numel += tensor.view.numel();
    if (checkpoint.find(tensor.name) != &checkpoint.get(tensor.name))
      die("find() and get() disagree on " + shown(tensor.name));
  }
  if (numel != checkpoint.parameter_count()) die("parameter_count() is not the sum of numel");
  if (checkpoint.tensor_names().size() != tensors.size()) die("tensor_names() misses tensors");
  if (bd::fingerprint_tensors(tensors).size() != 64) die("fingerprint is not 64 hex digits");
  if (sum == UINT64_MAX) die("impossible byte sum");  // keeps the reads
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bd::fuzz::Scratch& scratch = bd::fuzz::Scratch::get();
  scratch.clear();
  write_folder(bd::fuzz::split_parts(bd::fuzz::as_text(data, size)), scratch);
  bd::fuzz::refused([&] {
    const bd::Checkpoint checkpoint(scratch.path());
    check_tensors(checkpoint);
    bd::validate_llama_tensors(checkpoint);
  });
  return 0;
}
