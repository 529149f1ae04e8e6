"""Safetensors reading and writing for the Python references, with json, struct and numpy only
(Debian ships no `safetensors` package).

Written from the published format, not from bitdelta's code: an 8-byte little-endian header
size, a JSON header (optional "__metadata__" of strings; per tensor dtype, shape and
data_offsets relative to the data section), then the data section.
"""
import json
import struct

import numpy as np

NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "U8": np.uint8, "I8": np.int8,
                "I32": np.int32, "U32": np.uint32}


def load(path):
    """(metadata, {name: (dtype, shape, raw bytes)}), tensors in header order."""
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


def decode(dtype, raw):
    """The stored values as a flat numpy array; BF16 is widened exactly to float32."""
    if dtype == "BF16":  # numpy has no bfloat16: the 16 stored bits are a float32's high half
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, dtype=np.dtype(NUMPY_DTYPES[dtype]).newbyteorder("<"))


def encode(dtype, values):
    """`values` stored as `dtype`; BF16 by truncation (exact for values bfloat16 can hold)."""
    if dtype == "BF16":
        return (np.asarray(values, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    return np.asarray(values, np.dtype(NUMPY_DTYPES[dtype]).newbyteorder("<")).tobytes()


def read_arrays(path):
    """{name: numpy array of its shape} of every tensor, in header order."""
    return {name: decode(dtype, raw).reshape(shape)
            for name, (dtype, shape, raw) in load(path)[1].items()}


def write(path, tensors, metadata=None, header_order=None):
    """Writes `tensors`, a list of (name, dtype, shape, raw bytes), with the data in list order.
    The header lists them in `header_order` (names) when given, else in list order, and is
    padded with spaces to a multiple of 8 bytes."""
    header, offsets, offset = {}, {}, 0
    for name, _, _, raw in tensors:
        offsets[name] = [offset, offset + len(raw)]
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    entries = {name: (dtype, shape) for name, dtype, shape, _ in tensors}
    for name in header_order or [name for name, _, _, _ in tensors]:
        dtype, shape = entries[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": offsets[name]}
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text + b"".join(raw for _, _, _, raw in tensors))
