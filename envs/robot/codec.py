"""The wire codec shared by the policy server and the robot client: msgpack with numpy arrays.

Messages are msgpack maps of plain values (str, int, float, bool, None, bytes, lists, maps with
str keys). A numpy array travels as msgpack extension type `NDARRAY_EXT` whose payload is itself
msgpack: `[dtype, shape, raw bytes]`, with `dtype` a little-endian numpy type string from a fixed
allow-list (bool, u1..u8, i1..i8, f2, f4, f8) and the raw bytes in C order. Nothing is ever
unpickled and no object dtype is accepted, so a hostile peer can make `decode` raise `CodecError`
but cannot run code or allocate more than the message itself (length checks happen before any
array is built; `max_bytes` bounds the message).

    encode({"rgb": np.zeros((64, 64, 3), np.uint8), "mission": "reach"}) -> bytes
    decode(bytes) -> the same dict, arrays as writable numpy arrays

Numpy scalars (np.float32(1.5)) are sent as plain Python numbers.
"""
from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

NDARRAY_EXT = 1
ALLOWED_DTYPES = frozenset(
    np.dtype(t).str
    for t in ("?", "<u1", "<u2", "<u4", "<u8", "<i1", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8")
)
MAX_NDIM = 8
DEFAULT_MAX_BYTES = 4 * 1024 * 1024  # 4 MiB: a 512x512 RGB frame plus depth fits


class CodecError(ValueError):
    """A message could not be encoded or decoded (what was wrong, and what was expected)."""


def _little_endian(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # (ascontiguousarray makes 0-d arrays 1-d)


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = sendable(obj)
        payload = msgpack.packb([arr.dtype.str, list(arr.shape), arr.tobytes()], use_bin_type=True)
        return msgpack.ExtType(NDARRAY_EXT, payload)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    if isinstance(obj, int):
        raise CodecError(f"integer {obj} does not fit in msgpack's 64 bits")
    raise CodecError(f"cannot encode a {type(obj).__name__}; "
                     "send numbers, str, bytes, lists, dicts or numpy arrays")


def encode(message: Any) -> bytes:
    """Pack `message` (a dict of plain values and numpy arrays) into msgpack bytes."""
    try:
        return msgpack.packb(message, default=_default, use_bin_type=True, strict_types=False)
    except CodecError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode message: {exc}") from exc


def _ext_hook(code: int, payload: bytes) -> np.ndarray:
    if code != NDARRAY_EXT:
        raise CodecError(f"unknown msgpack extension type {code}; only {NDARRAY_EXT} (numpy array) is used")
    try:
        header = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:
        raise CodecError(f"array payload is not msgpack: {exc}") from exc
    if not (isinstance(header, list) and len(header) == 3):
        raise CodecError("array payload must be [dtype, shape, bytes]")
    dtype, shape, data = header
    return array_from(dtype, shape, data)


def array_from(dtype: Any, shape: Any, data: Any) -> np.ndarray:
    """A writable array from a peer's (dtype string, shape, raw bytes), checked before it is built:
    an allowed little-endian dtype, at most MAX_NDIM non-negative dims, exactly the bytes they need.
    Shared by this codec and the openpi one (envs/robot/openpi_wire.py)."""
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise CodecError(f"array dtype {dtype!r} is not allowed; expected one of {sorted(ALLOWED_DTYPES)}")
    if isinstance(shape, tuple):
        shape = list(shape)
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d for d in shape)):
        raise CodecError(f"array shape {shape!r} must be a list of at most {MAX_NDIM} non-negative ints")
    if not isinstance(data, bytes):
        raise CodecError(f"array data must be bytes, got {type(data).__name__}")
    itemsize = np.dtype(dtype).itemsize
    count = math.prod(shape)  # Python ints: no overflow; checked against the bytes we hold
    if count * itemsize != len(data):
        raise CodecError(f"array of dtype {dtype} and shape {tuple(shape)} needs {count * itemsize} bytes, "
                         f"got {len(data)}")
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(tuple(shape)).copy()


def sendable(obj: np.ndarray) -> np.ndarray:
    """`obj` little-endian and C-contiguous, or CodecError if its dtype may not be sent."""
    arr = _little_endian(obj)
    if arr.dtype.str not in ALLOWED_DTYPES:
        raise CodecError(f"cannot send an array of dtype {obj.dtype}; allowed: {sorted(ALLOWED_DTYPES)}")
    return arr


def decode(data: bytes, max_bytes: int | None = DEFAULT_MAX_BYTES) -> Any:
    """Unpack one msgpack message; raise CodecError on anything malformed, truncated or too big."""
    return unpack(data, max_bytes, ext_hook=_ext_hook)


def unpack(data: bytes, max_bytes: int | None, **hooks: Any) -> Any:
    """msgpack.unpackb with `hooks` (ext_hook / object_hook) behind the size cap; every failure is a
    CodecError. Shared with the openpi codec (envs/robot/openpi_wire.py)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected a binary message, got {type(data).__name__}")
    if max_bytes is not None and len(data) > max_bytes:
        raise CodecError(f"message of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        return msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, use_list=True, **hooks)
    except CodecError:
        raise
    except msgpack.ExtraData as exc:
        raise CodecError("message holds trailing bytes after one msgpack object") from exc
    except (ValueError, TypeError, msgpack.StackError, msgpack.FormatError) as exc:
        raise CodecError(f"malformed or truncated msgpack message: {exc}") from exc
    except Exception as exc:  # msgpack may raise others on adversarial input; none may escape as a crash
        raise CodecError(f"undecodable message ({type(exc).__name__}: {exc})") from exc
