"""Independent safetensors reader/writer for cross-checking bitdelta's C++ implementation.

Written from the published format (8-byte little-endian header size, JSON header, data section
with data_offsets relative to its start); the file handling is st_io.py's (json, struct and
numpy only, because Debian ships no `safetensors` Python package).

  safetensors_ref.py read FILE    prints {"metadata": {...}, "tensors": {name: {dtype, shape, values}}}
  safetensors_ref.py write FILE   writes the fixed tensors of expected_tensors() with metadata
  safetensors_ref.py fingerprint FILE...   prints the model fingerprint (docs/formats.md) of
                                           the tensors of all FILEs together (e.g. shards)
"""
import hashlib
import json
import sys

import numpy as np

import st_io
from st_io import decode, load  # bitdelta_ref.py imports these two from here


def read(path):
    metadata, tensors = load(path)
    out = {"metadata": metadata, "tensors": {}}
    for name, (dtype, shape, raw) in tensors.items():
        values = decode(dtype, raw)
        assert values.size == int(np.prod(shape, dtype=np.int64)), name
        out["tensors"][name] = {"dtype": dtype, "shape": shape,
                                "values": [v.item() for v in values]}
    print(json.dumps(out))


def fingerprint(*paths):
    """SHA-256 over, for each tensor in name order: name, 0, dtype, 0, shape as a comma list,
    0, byte length, 0, raw bytes."""
    tensors = {}
    for path in paths:
        for name, tensor in load(path)[1].items():
            assert name not in tensors, name
            tensors[name] = tensor
    digest = hashlib.sha256()
    for name in sorted(tensors, key=lambda n: n.encode("utf-8")):
        dtype, shape, raw = tensors[name]
        for field in (name, dtype, ",".join(str(d) for d in shape), str(len(raw))):
            digest.update(field.encode("utf-8") + b"\0")
        digest.update(raw)
    print(digest.hexdigest())


def pattern(dtype, count):
    """The values the C++ test expects: floats (i - count/2) / 4, ints 3i - 7, unsigned 5i."""
    index = np.arange(count)
    if dtype in ("F32", "F16", "BF16"):
        return (index - count / 2) / 4.0
    if dtype in ("I8", "I32"):
        return index * 3 - 7
    return index * 5


def expected_tensors():
    return [("python.f32", "F32", [2, 3]), ("python.f16", "F16", [5]),
            ("python.bf16", "BF16", [2, 2]), ("python.u8", "U8", [7]), ("python.i8", "I8", [3]),
            ("python.i32", "I32", [2, 2]), ("python.u32", "U32", [3]),
            ("python.empty", "F32", [0, 3]), ("python.scalar", "F32", [])]


def write(path):
    # Data in reverse listing order, header keys in listing order: the two orders differ,
    # which a reader must handle.
    tensors = []
    for name, dtype, shape in reversed(expected_tensors()):
        values = pattern(dtype, int(np.prod(shape, dtype=np.int64)))
        tensors.append((name, dtype, shape, st_io.encode(dtype, values)))
    st_io.write(path, tensors, {"format": "pt", "writer": "python"},
                header_order=[name for name, _, _ in expected_tensors()])


if __name__ == "__main__":
    {"read": read, "write": write, "fingerprint": fingerprint}[sys.argv[1]](*sys.argv[2:])
