// The model an inference command runs: --model (or the embedded default) and, with --delta, a
// BitDelta adapter applied inside the forward (it must fit the base).
#pragma once
#include <memory>
#include <optional>

#include "cli/args.h"
#include "io/adapter.h"
#include "io/checkpoint.h"
#include "model/llama.h"
#include "model/llama_delta.h"

namespace bd {

struct LoadedModel {
  // copy_for_decode: the BF16 linears copied into huge pages (copy_linears_for_decode), for
  // commands that decode token by token (0.4–0.6 s for 2 GB in the page cache; each token then
  // reads faster).
  explicit LoadedModel(const Args& args, bool copy_for_decode = false)
      : checkpoint(model_dir_or_default(args)),
        weights(weights_from_checkpoint(checkpoint)),
        adapter(args.has("--delta") ? std::make_unique<AdapterFile>(args.get("--delta"))
                                    : nullptr) {
    if (copy_for_decode) copy_linears_for_decode(weights);
    if (adapter) delta = make_llama_delta(weights, checkpoint, *adapter);
  }
  const LlamaDelta* delta_or_null() const { return delta ? &*delta : nullptr; }

  Checkpoint checkpoint;
  LlamaWeights weights;
  std::unique_ptr<AdapterFile> adapter;
  std::optional<LlamaDelta> delta;  // views into the adapter
};

}  // namespace bd
