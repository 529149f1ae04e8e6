// The model an inference command runs: --model (or the embedded default) and, with --delta, a
// BitDelta adapter applied inside the forward (it must fit the base).
#pragma once
#include <memory>

#include "cli/args.h"
#include "delta/overlay.h"
#include "io/adapter.h"
#include "io/checkpoint.h"
#include "model/llama.h"

namespace bd {

struct LoadedModel {
  explicit LoadedModel(const Args& args)
      : checkpoint(model_dir_or_default(args)),
        adapter(args.has("--delta") ? std::make_unique<AdapterFile>(args.get("--delta")) : nullptr),
        delta(adapter ? std::make_unique<DeltaWeights>(checkpoint, *adapter) : nullptr),
        weights(delta ? delta->weights() : weights_from_checkpoint(checkpoint)) {}

  Checkpoint checkpoint;
  std::unique_ptr<AdapterFile> adapter;
  std::unique_ptr<DeltaWeights> delta;  // views into checkpoint and adapter
  LlamaWeights weights;
};

}  // namespace bd
