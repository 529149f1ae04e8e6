#!/usr/bin/env python3
"""Convert the decode benchmark model (HF Llama layout, BF16) to a BF16 GGUF for llama.cpp.

Usage: PYTHONPATH=<llama.cpp>/gguf-py python3 bench/llama_cpp_gguf.py MODEL_DIR OUT.gguf

MODEL_DIR holds config.json, model.safetensors and tokenizer.json as written by
build/decode_bench or build/serve_bench. Used by bench/llama_cpp_peer.sh.

Why not llama.cpp's convert_hf_to_gguf.py: it needs torch, transformers and
sentencepiece/tokenizers, which Debian 12 does not package together. This script
needs only numpy and gguf-py (from the same llama.cpp tree), and does what
convert_hf_to_gguf.py does for a plain LlamaForCausalLM with --outtype bf16:
  - llama arch metadata from config.json,
  - tensor names mapped by gguf-py's own TensorNameMap (token_embd, blk.N.attn_q, ...),
  - q_proj/k_proj rows permuted the way LlamaModel.permute does (HF rotates
    half-split pairs, ggml's rope_norm rotates adjacent pairs),
  - 2-D weights kept as BF16 bit-exact, 1-D norm weights stored as F32,
  - the vocab from tokenizer.json as a "llama" (SentencePiece-style) vocab:
    ids 0..255 are the byte tokens <0xNN> (type BYTE), 256/257 are bos/eos.
The GGUF container itself is written by gguf.GGUFWriter.
"""
import json
import sys
from pathlib import Path

import numpy as np
import gguf


def read_safetensors(path):
    """Yield (name, uint16 array) for each BF16 tensor; zero-copy via memmap.
    Format: u64 little-endian header size, JSON header, then raw tensor bytes."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "BF16", (name, info["dtype"])
        begin, end = info["data_offsets"]
        yield name, data[begin:end].view(np.uint16).reshape(info["shape"])


def permute(w, n_head):
    # Same as LlamaModel.permute in llama.cpp's converter (n_head is n_kv_head for k_proj).
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    model_dir, out_path = Path(sys.argv[1]), sys.argv[2]
    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    n_layer, n_head, n_kv = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head

    w = gguf.GGUFWriter(out_path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    w.add_name("bitdelta-decode-bench-1.1b")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    w.add_block_count(n_layer)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_rope_dimension_count(head_dim)

    # Vocab: tokenizer.json is a byte-fallback BPE without merges (bytes + bos/eos + padding
    # tokens "wNNN"), which is what llama.cpp's SPM ("llama") tokenizer models.
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    for t in tok["added_tokens"]:
        vocab[t["id"]] = (t["content"], t["id"])
    assert [i for _, i in vocab] == list(range(cfg["vocab_size"]))
    special = {t["id"] for t in tok["added_tokens"]}
    types = [gguf.TokenType.CONTROL if i in special
             else gguf.TokenType.BYTE if i < 256 else gguf.TokenType.NORMAL for _, i in vocab]
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([s for s, _ in vocab])
    w.add_token_scores([-float(i) for _, i in vocab])
    w.add_token_types(types)
    w.add_bos_token_id(256)
    w.add_eos_token_id(257)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    for name, t in read_safetensors(model_dir / "model.safetensors"):
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert new is not None, f"unmapped tensor {name}"
        if name.endswith("q_proj.weight"):
            t = permute(t, n_head)
        elif name.endswith("k_proj.weight"):
            t = permute(t, n_kv)
        if t.ndim == 1:  # norms: F32, as convert_hf_to_gguf does (bf16 -> f32 is exact)
            w.add_tensor(new, (t.astype(np.uint32) << 16).view(np.float32))
        else:  # raw BF16 bits; gguf-py takes the byte view plus raw_dtype
            w.add_tensor(new, t.view(np.uint8), raw_dtype=gguf.GGMLQuantizationType.BF16)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


if __name__ == "__main__":
    main()
