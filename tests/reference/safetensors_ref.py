"""Independent safetensors reader/writer for cross-checking bitdelta's C++ implementation.

Written from the published format (8-byte little-endian header size, JSON header, data section
with data_offsets relative to its start) using only json, struct and numpy, because Debian ships
no `safetensors` Python package.

  safetensors_ref.py read FILE    prints {"metadata": {...}, "tensors": {name: {dtype, shape, values}}}
  safetensors_ref.py write FILE   writes the fixed tensors of expected_tensors() with metadata
  safetensors_ref.py fingerprint FILE...   prints the model fingerprint (docs/formats.md) of
                                           the tensors of all FILEs together (e.g. shards)
"""
import hashlib
import json
import struct
import sys

import numpy as np

NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "U8": np.uint8, "I8": np.int8,
                "I32": np.int32, "U32": np.uint32}


def decode(dtype, raw):
    if dtype == "BF16":  # numpy has no bfloat16: widen the 16 stored bits to a float32
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, dtype=np.dtype(NUMPY_DTYPES[dtype]).newbyteorder("<"))


def encode(dtype, values):
    if dtype == "BF16":  # values are exact in bfloat16, so truncation is exact
        return (np.asarray(values, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    return np.asarray(values, np.dtype(NUMPY_DTYPES[dtype]).newbyteorder("<")).tobytes()


def load(path):
    """Returns (metadata, {name: (dtype, shape, raw bytes)})."""
    blob = open(path, "rb").read()
    (header_size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_size].decode("utf-8"))
    data = blob[8 + header_size:]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        tensors[name] = (entry["dtype"], entry["shape"], data[begin:end])
    return metadata, tensors


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
    header = {"__metadata__": {"format": "pt", "writer": "python"}}
    chunks, offset = [], 0
    # Data in reverse listing order, header keys in listing order: the two orders differ,
    # which a reader must handle.
    for name, dtype, shape in reversed(expected_tensors()):
        raw = encode(dtype, pattern(dtype, int(np.prod(shape, dtype=np.int64))))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    ordered = {"__metadata__": header.pop("__metadata__")}
    ordered.update({name: header[name] for name, _, _ in expected_tensors()})
    text = json.dumps(ordered).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


if __name__ == "__main__":
    {"read": read, "write": write, "fingerprint": fingerprint}[sys.argv[1]](*sys.argv[2:])
