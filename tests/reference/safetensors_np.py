"""Minimal safetensors reader/writer in pure Python + numpy, independent of shrink's C++ code.

Format (huggingface/safetensors): u64 little-endian header length N, N bytes of JSON header
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the
byte buffer; offsets are relative to the start of the buffer and the tensors tile it exactly.
"""
import json
import os
import struct

import numpy as np


class SafetensorsError(Exception):
    pass


# dtype name -> (numpy dtype used for the raw bytes, bytes per element). BF16 has no numpy type:
# it is kept as its raw uint16 bits and converted with bf16_bits_to_f32 / f32_to_bf16_bits.
DTYPES = {
    "F64": (np.dtype("<f8"), 8),
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),
    "I64": (np.dtype("<i8"), 8),
    "I32": (np.dtype("<i4"), 4),
    "I16": (np.dtype("<i2"), 2),
    "I8": (np.dtype("i1"), 1),
    "U64": (np.dtype("<u8"), 8),
    "U32": (np.dtype("<u4"), 4),
    "U16": (np.dtype("<u2"), 2),
    "U8": (np.dtype("u1"), 1),
    "BOOL": (np.dtype("?"), 1),
}

_FROM_NUMPY = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint64"): "U64",
    np.dtype("uint32"): "U32",
    np.dtype("uint16"): "U16",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}

_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation's own limit


def f32_to_bf16_bits(x):
    """Round float32 values to bfloat16 (round to nearest, ties to even), return uint16 bits."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    rounded = np.where(nan, (bits >> 16) | 0x40, rounded)  # keep NaN a (quiet) NaN
    return rounded.astype(np.uint16)


def bf16_bits_to_f32(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


class Tensor:
    """One stored tensor: its safetensors dtype name and the array of raw values (BF16: uint16 bits)."""

    def __init__(self, dtype, array):
        self.dtype = dtype
        self.array = array

    @property
    def shape(self):
        return tuple(self.array.shape)

    def to_numpy(self):
        """Values as numpy: BF16 upcast to float32, every other dtype as stored."""
        if self.dtype == "BF16":
            return bf16_bits_to_f32(self.array)
        return self.array


def encode(tensors, metadata=None):
    """Serialise {name: Tensor | np.ndarray} to bytes. Tensors are laid out in name order."""
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SafetensorsError(f"__metadata__ entry {k!r}: expected str -> str, found "
                                       f"{type(k).__name__} -> {type(v).__name__}; convert values to strings")
        header["__metadata__"] = dict(metadata)
    chunks = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, Tensor):
            arr = np.asarray(t)
            if arr.dtype not in _FROM_NUMPY:
                raise SafetensorsError(f"tensor {name!r}: numpy dtype {arr.dtype} has no safetensors name; "
                                       "cast it to one of " + ", ".join(str(d) for d in _FROM_NUMPY))
            t = Tensor(_FROM_NUMPY[arr.dtype], arr)
        if t.dtype not in DTYPES:
            raise SafetensorsError(f"tensor {name!r}: unknown dtype {t.dtype!r}; expected one of {sorted(DTYPES)}")
        raw = np.ascontiguousarray(t.array, dtype=DTYPES[t.dtype][0]).tobytes()
        header[name] = {"dtype": t.dtype, "shape": [int(d) for d in t.array.shape],
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # pad with spaces so the buffer starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save_file(tensors, path, metadata=None):
    """Write atomically: a temporary file next to `path`, renamed at the end."""
    data = encode(tensors, metadata)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def decode(data, name="<bytes>"):
    """Parse safetensors bytes. Returns ({tensor name: Tensor}, metadata dict). Validates everything."""
    if len(data) < 8:
        raise SafetensorsError(f"{name}: file is {len(data)} bytes, expected at least 8 (header length); "
                               "the file is truncated or not safetensors")
    (n,) = struct.unpack_from("<Q", data, 0)
    if n > _MAX_HEADER_BYTES or 8 + n > len(data):
        raise SafetensorsError(f"{name}: header length {n} does not fit the {len(data)}-byte file; "
                               "the file is truncated or not safetensors")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError(f"{name}: header is not valid UTF-8 JSON ({e}); the file is corrupt") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{name}: header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{name}: __metadata__ must map strings to strings, found {metadata!r}")
    buf = memoryview(data)[8 + n:]
    tensors = {}
    spans = []
    for tname, info in header.items():
        where = f"{name}: tensor {tname!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: expected keys dtype, shape, data_offsets, found {info!r}")
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            raise SafetensorsError(f"{where}: unknown dtype {dtype!r}; supported: {sorted(DTYPES)}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise SafetensorsError(f"{where}: shape must be a list of non-negative ints, found {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= len(buf)):
            raise SafetensorsError(f"{where}: data_offsets {offs!r} outside the {len(buf)}-byte data buffer")
        np_dtype, size = DTYPES[dtype]
        count = int(np.prod(shape, dtype=np.int64))
        if offs[1] - offs[0] != count * size:
            raise SafetensorsError(f"{where}: shape {shape} of {dtype} needs {count * size} bytes, "
                                   f"data_offsets give {offs[1] - offs[0]}")
        arr = np.frombuffer(buf[offs[0]:offs[1]], dtype=np_dtype).reshape(shape)
        tensors[tname] = Tensor(dtype, arr)
        spans.append((offs[0], offs[1], tname))
    spans.sort()
    pos = 0
    for begin, end, tname in spans:
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else f"leaves a gap at byte {pos}"
            raise SafetensorsError(f"{name}: tensor {tname!r} at data offset {begin} {what}")
        pos = end
    if pos != len(buf):
        raise SafetensorsError(f"{name}: tensors cover {pos} bytes of a {len(buf)}-byte data buffer")
    return tensors, metadata


def read(path):
    """({name: Tensor}, metadata) of a .safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    return decode(data, path)


def load_file(path):
    """{name: np.ndarray}; BF16 tensors are upcast to float32 (exact)."""
    tensors, _ = read(path)
    return {k: t.to_numpy() for k, t in tensors.items()}
