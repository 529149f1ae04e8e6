#!/usr/bin/python3
"""Independent reference for bitdelta's tokenizers (run by tests/tokenizer_test.cpp).

  tokenizer_ref.py pretokenize OUT.json
      random and edge-case texts with their splits under the GPT-2, cl100k and Qwen2 patterns,
      computed by the `regex` module (which, unlike `re`, knows \\p{L} and \\p{N}).
  tokenizer_ref.py bytelevel CORPUS OUTDIR
      trains small byte-level BPE vocabularies on CORPUS, writes them as tokenizer.json files
      (GPT-2 style, GPT-2 with add_prefix_space, Llama-3 style), and the ids this file's own BPE
      encoder (written from the published algorithm, not from bitdelta) gives for test texts.
  tokenizer_ref.py sentencepiece CORPUS OUTDIR
      trains a SentencePiece BPE model with byte_fallback (Google's library, python3-sentencepiece),
      converts it to tokenizer.json the way Llama-2 / Mistral files are written, and records
      SentencePiece's own ids and decodings for test texts.
"""
import json
import os
import random
import sys
from collections import Counter

import regex

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CL100K = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
          r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2 = CL100K.replace(r"\p{N}{1,3}", r"\p{N}")

# Characters chosen to hit every class boundary of the patterns: ASCII and non-ASCII letters,
# modifier letters (Lm), marks (Mn, not letters), numbers of all three kinds (Nd, Nl, No),
# Unicode whitespace and look-alikes that are not White_Space (U+001C, U+200B), apostrophes
# with and without contraction letters (including U+017F, which folds to 's'), emoji, CJK.
ALPHABET = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") * 3 +
            list("éüßçñøåαβγΩдомЖ日本語中文한국어ʰ々") +
            list("0123456789") * 2 + list("٣٤Ⅻ²½") +
            list("      \t\n\n\r\u00a0\u3000\u2028\x0b\x0c\x85\x1c\u200b") +
            list("!?.,;:-_()[]{}\"`~@#$%^&*+=/\\|<>") + ["'"] * 6 +
            ["'s", "'S", "'t", "'re", "'VE", "'m", "'ll", "'LL", "'d", "'ſ", "'x"] +
            list("\u0301\u0308\u200d\u00ad😀🎉▁"))

EDGE_CASES = ["", " ", "  ", "   ", "\n", "\n\n", " \n", "\n ", "a", " a", "  a", "a  ", "a\n\nb",
              "'s", "don't", "I'M HERE", "you'll'", "'ſ", "12345678", "1 22 333 4444", "Ⅻ²",
              "hello world", "Hello, world!", "  leading", "trailing  ", "tab\tsep", "x\r\ny",
              "naïve café", "日本語のテキスト", "emoji 😀 test", "a\u0301b", "   \n  x"]


def random_texts(count, seed, max_len=40):
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, max_len))) for _ in range(count)]


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=True)


# ---- pre-tokenization ------------------------------------------------------------------------

def pretokenize(out_path):
    texts = EDGE_CASES + random_texts(3000, seed=1)
    cases = [{"text": t, "gpt2": regex.findall(GPT2, t), "cl100k": regex.findall(CL100K, t),
              "qwen2": regex.findall(QWEN2, t)} for t in texts]
    write_json(out_path, cases)


# ---- byte-level BPE --------------------------------------------------------------------------

def bytes_to_unicode():
    """GPT-2's byte -> printable character table, from its published description."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_CHARS = bytes_to_unicode()


def byte_chars(text):
    return "".join(BYTE_CHARS[b] for b in text.encode("utf-8"))


def train_merges(words, num_merges):
    """Plain BPE training: repeatedly merge the most frequent adjacent pair."""
    corpus = Counter(tuple(w) for w in words)
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for word, freq in corpus.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += freq
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged = Counter()
        for word, freq in corpus.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += freq
        corpus = merged
    return merges


def bpe_word(word, ranks):
    """Merge the lowest-ranked adjacent pair (leftmost among equals) until none is left."""
    symbols = list(word)
    while len(symbols) > 1:
        best = None
        for i in range(len(symbols) - 1):
            rank = ranks.get((symbols[i], symbols[i + 1]))
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            break
        i = best[1]
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def split_specials(text, specials):
    """Leftmost, then longest, occurrences of the special tokens."""
    out, pos, start = [], 0, 0
    while pos < len(text):
        match = max((s for s in specials if text.startswith(s, pos)), key=len, default=None)
        if match is None:
            pos += 1
            continue
        if start < pos:
            out.append((text[start:pos], False))
        out.append((match, True))
        pos = start = pos + len(match)
    if start < len(text):
        out.append((text[start:], False))
    return out


class ByteLevelBpe:
    def __init__(self, pattern, merges, specials, add_prefix_space=False, ignore_merges=False, extra_words=()):
        self.pattern, self.add_prefix_space, self.ignore_merges = pattern, add_prefix_space, ignore_merges
        self.vocab = {}
        for b in range(256):
            self.vocab[BYTE_CHARS[b]] = len(self.vocab)
        for a, b in merges:
            self.vocab.setdefault(a + b, len(self.vocab))
        for w in extra_words:  # whole-word tokens that no merge produces (tests ignore_merges)
            self.vocab.setdefault(w, len(self.vocab))
        self.merges = merges
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.specials = {s: len(self.vocab) + i for i, s in enumerate(specials)}

    def encode(self, text, bos=None):
        ids = [] if bos is None else [self.specials[bos]]
        for segment, special in split_specials(text, list(self.specials)):
            if special:
                ids.append(self.specials[segment])
                continue
            if self.add_prefix_space and not segment.startswith(" "):
                segment = " " + segment
            for word in regex.findall(self.pattern, segment):
                mapped = byte_chars(word)
                if self.ignore_merges and mapped in self.vocab:
                    ids.append(self.vocab[mapped])
                else:
                    ids.extend(self.vocab[s] for s in bpe_word(mapped, self.ranks))
        return ids

    def added_tokens(self):
        return [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True} for s, i in self.specials.items()]

    def model(self, pair_merges):
        merges = [[a, b] for a, b in self.merges] if pair_merges else [a + " " + b for a, b in self.merges]
        return {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                "ignore_merges": self.ignore_merges, "vocab": self.vocab, "merges": merges}


def bytelevel(corpus_path, out_dir):
    corpus = open(corpus_path, encoding="utf-8").read()
    texts = EDGE_CASES + corpus.split("\n\n")[:40] + random_texts(400, seed=2)
    texts += ["<|endoftext|>The end", "a<|endoftext|><|endoftext|>b", "<|begin_of_text|>Hi<|eot_id|>"]

    gpt2_merges = train_merges([byte_chars(w) for w in regex.findall(GPT2, corpus)], 250)
    gpt2 = ByteLevelBpe(GPT2, gpt2_merges, ["<|endoftext|>"])
    gpt2_json = {"version": "1.0", "added_tokens": gpt2.added_tokens(), "normalizer": None,
                 "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                   "use_regex": True},
                 "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                                    "use_regex": True},
                 "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                             "use_regex": True},
                 "model": gpt2.model(pair_merges=False)}
    write_json(os.path.join(out_dir, "gpt2.json"), gpt2_json)

    prefixed = ByteLevelBpe(GPT2, gpt2_merges, ["<|endoftext|>"], add_prefix_space=True)
    prefixed_json = dict(gpt2_json)
    prefixed_json["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                      "use_regex": True}
    write_json(os.path.join(out_dir, "gpt2_prefix.json"), prefixed_json)

    llama3_merges = train_merges([byte_chars(w) for w in regex.findall(CL100K, corpus)], 250)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    llama3 = ByteLevelBpe(CL100K, llama3_merges, specials, ignore_merges=True,
                          extra_words=[byte_chars(" Software"), byte_chars(" License")])
    template = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>",
                                                         "ids": [llama3.specials["<|begin_of_text|>"]],
                                                         "tokens": ["<|begin_of_text|>"]}}}
    llama3_json = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": llama3.added_tokens(),
                   "normalizer": None,
                   "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                       {"type": "Split", "pattern": {"Regex": CL100K}, "behavior": "Isolated", "invert": False},
                       {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                        "use_regex": False}]},
                   "post_processor": {"type": "Sequence", "processors": [
                       {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                       template]},
                   "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                               "use_regex": True},
                   "model": llama3.model(pair_merges=True)}
    write_json(os.path.join(out_dir, "llama3.json"), llama3_json)

    cases = [{"text": t, "gpt2": gpt2.encode(t), "gpt2_prefix": prefixed.encode(t), "llama3": llama3.encode(t),
              "llama3_bos": llama3.encode(t, bos="<|begin_of_text|>")} for t in texts]
    write_json(os.path.join(out_dir, "bytelevel_cases.json"), cases)


# ---- SentencePiece ---------------------------------------------------------------------------

def sentencepiece(corpus_path, out_dir):
    import sentencepiece as spm
    prefix = os.path.join(out_dir, "spm")
    spm.SentencePieceTrainer.train(
        input=corpus_path, model_prefix=prefix, vocab_size=700, model_type="bpe", byte_fallback=True,
        normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")

    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    mergeable = {p for p, i in vocab.items() if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))}
    # A merge for every way to build a piece from two others, ranked by the piece's id (its
    # SentencePiece score order), as HF's converters do.
    merges = sorted((vocab[p], vocab[p[:k]], vocab[p[k:]], p[:k], p[k:])
                    for p in mergeable for k in range(1, len(p)) if p[:k] in mergeable and p[k:] in mergeable)
    specials = [{"id": i, "content": sp.id_to_piece(i), "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True} for i in (0, 1, 2)]
    template = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    model = {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
             "vocab": vocab, "merges": [[m[3], m[4]] for m in merges]}
    legacy = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": specials,
              "normalizer": {"type": "Sequence", "normalizers": [
                  {"type": "Prepend", "prepend": "▁"},
                  {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
              "pre_tokenizer": None, "post_processor": template,
              "decoder": {"type": "Sequence", "decoders": [
                  {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                  {"type": "ByteFallback"}, {"type": "Fuse"},
                  {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
              "model": dict(model, merges=[m[3] + " " + m[4] for m in merges])}
    write_json(os.path.join(out_dir, "spm_legacy.json"), legacy)
    metaspace = dict(legacy, normalizer=None,
                     pre_tokenizer={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                                    "split": True},
                     decoder={"type": "Sequence", "decoders": [
                         {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True},
                         {"type": "ByteFallback"}, {"type": "Fuse"}]},
                     model=model)
    write_json(os.path.join(out_dir, "spm_metaspace.json"), metaspace)

    corpus = open(corpus_path, encoding="utf-8").read()
    # The whole corpus as one text: one long word for the Llama-2 form, which has no pre-tokenizer.
    texts = EDGE_CASES + corpus.split("\n\n")[:40] + [corpus] + random_texts(400, seed=3)
    texts = [t for t in texts if not any(s in t for s in ("<s>", "</s>", "<unk>"))]
    cases = []
    for t in texts:
        ids = sp.encode(t)
        cases.append({"text": t, "ids": ids, "ids_bos": sp.encode(t, add_bos=True), "decoded": sp.decode(ids)})
    write_json(os.path.join(out_dir, "spm_cases.json"), cases)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "pretokenize":
        pretokenize(sys.argv[2])
    elif command == "bytelevel":
        bytelevel(sys.argv[2], sys.argv[3])
    elif command == "sentencepiece":
        sentencepiece(sys.argv[2], sys.argv[3])
    else:
        sys.exit("unknown command " + command)
