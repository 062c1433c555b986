"""The sample: one flat dict record, and its lossless codec (JSON + raw array bytes, never pickle).

A sample is what graft's data generation emits and what replay stores, e.g.

    {"episode_seed": 7, "step": 3, "kind": "demo", "env": "BabyAI-GoToLocal-v0",
     "mission": "go to the red ball", "modalities": ["grid"], "prompt": "...", "response": "left",
     "action": [0.0], "grid": uint8 (7, 7, 3), "rgb": uint8 (56, 56, 3)}

Rules (checked by `validate_sample`, which names the offending key and what was expected):

- keys are `str`;
- a top-level value is one of
  * a JSON value: `str`, `int`, `float`, `bool`, `None`, or a (nested) `list` of those. Types are
    checked exactly (a `tuple`, an `IntEnum` or a `str` subclass would not come back as itself, so
    they are refused); floats must be finite, so the JSON stays standard JSON;
  * a numpy array (any shape, including 0-d and empty) of a plain dtype: bool, signed/unsigned int,
    float, complex, datetime64/timedelta64, fixed-width bytes/str. Object and structured dtypes are
    refused. NaN and ±inf are allowed in arrays and kept bit-exact (payload and sign included);
  * a numpy scalar (`np.float32(1.5)`, `np.int64(3)`, `np.str_`), which comes back as the same
    numpy scalar type.
- arrays and numpy scalars are top-level values only, not list elements; nested dicts are refused
  (flatten the key instead, e.g. "info.level").

`encode_sample(d)` gives `(json_meta, arrays)`: `json_meta` holds every key in order, JSON values
inline and a marker for each array; `arrays[key] = (dtype.str, shape, raw C-order bytes)`.
`decode_sample(json_meta, arrays)` inverts it: same keys in the same order, arrays bit-identical
with the same dtype (byte order included) and shape, returned writable and C-contiguous.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

Sample = dict[str, Any]  # see the module docstring for what may be in it

EncodedArrays = dict[str, tuple[str, tuple[int, ...], bytes]]
"""key -> (numpy dtype string such as '<f4', shape, raw C-order bytes)."""

# dtype kinds stored as raw bytes: bool, int, uint, float, complex, timedelta, datetime, bytes, str.
ARRAY_KINDS = frozenset("biufcmMSU")
_JSON_SCALARS = (str, int, float, bool, type(None))
# In json_meta, an array-valued key holds {"$nd": "array"} or {"$nd": "scalar"}. Samples may not
# contain dicts, so a dict in json_meta is always such a marker.
_MARK = "$nd"


class SampleError(ValueError):
    """A sample that graft cannot store losslessly; the message names the key and what was expected."""


def _check_dtype(key: str, dtype: np.dtype, what: str) -> None:
    if dtype.hasobject or dtype.kind not in ARRAY_KINDS or dtype.fields is not None:
        hint = " (an object array of str, e.g. from datasets' numpy format, should be a list: .tolist())"
        raise SampleError(
            f"sample[{key!r}]: {what} has dtype {dtype} (kind {dtype.kind!r}); expected a plain dtype "
            f"(bool, int, uint, float, complex, datetime64, timedelta64, fixed-width bytes or str), "
            f"not object or structured dtypes{hint if dtype.kind == 'O' else ''}")


def _check_json(key: str, value: Any, path: str) -> None:
    """Raise SampleError unless `value` is a JSON scalar or a nested list of them."""
    t = type(value)
    if t in _JSON_SCALARS:
        if t is float and not math.isfinite(value):
            raise SampleError(
                f"sample[{key!r}]{path}: non-finite float {value!r}; JSON fields must be finite "
                "(store non-finite data in a numpy array, where NaN/inf are kept bit-exact)")
        return
    if t is list:
        for i, item in enumerate(value):
            _check_json(key, item, f"{path}[{i}]")
        return
    where = f"sample[{key!r}]{path}"
    if isinstance(value, (np.ndarray, np.generic)):
        raise SampleError(f"{where}: numpy {type(value).__name__} inside a list; numpy values are "
                          "supported only as top-level values (make the whole list one array)")
    if isinstance(value, tuple):
        raise SampleError(f"{where}: tuple {value!r}; use a list (a tuple would come back as a list)")
    if isinstance(value, Mapping):
        raise SampleError(f"{where}: nested dict; samples are flat: use top-level keys such as "
                          f"'{key}.<field>'")
    hint = ""
    if type(value).__module__.startswith("torch"):
        hint = " (convert tensors with .numpy())"
    elif isinstance(value, (bytes, bytearray)):
        hint = " (store bytes as a uint8 array: np.frombuffer(b, np.uint8))"
    raise SampleError(
        f"{where}: unsupported type {t.__module__}.{t.__qualname__}{hint}; expected str, int, float, "
        "bool, None, a list of those, or (top level only) a numpy array or numpy scalar")


def validate_sample(sample: Mapping[str, Any]) -> None:
    """Raise SampleError naming the first key whose value graft cannot store losslessly."""
    if not isinstance(sample, Mapping):
        raise SampleError(f"a sample must be a dict of str keys, got {type(sample).__name__}")
    for key, value in sample.items():
        if type(key) is not str:
            raise SampleError(f"sample key {key!r} has type {type(key).__name__}; keys must be str")
        if isinstance(value, np.ndarray):
            _check_dtype(key, value.dtype, "array")
        elif isinstance(value, np.generic):
            _check_dtype(key, value.dtype, "numpy scalar")
        else:
            _check_json(key, value, "")


def encode_sample(sample: Mapping[str, Any]) -> tuple[str, EncodedArrays]:
    """Validate and encode a sample as (json_meta, arrays); see the module docstring."""
    validate_sample(sample)
    meta: dict[str, Any] = {}
    arrays: EncodedArrays = {}
    for key, value in sample.items():
        if isinstance(value, (np.ndarray, np.generic)):
            array = np.asarray(value)
            arrays[key] = (array.dtype.str, tuple(array.shape), array.tobytes(order="C"))
            meta[key] = {_MARK: "array" if isinstance(value, np.ndarray) else "scalar"}
        else:
            meta[key] = value
    return json.dumps(meta, separators=(",", ":"), allow_nan=False), arrays


def _decode_array(key: str, dtype_str: str, shape: Any, data: bytes) -> np.ndarray:
    dtype = np.dtype(dtype_str)
    shape = tuple(int(s) for s in shape)
    expected = dtype.itemsize * math.prod(shape)
    if len(data) != expected:
        raise SampleError(f"stored array {key!r}: {len(data)} bytes, expected {expected} for "
                          f"dtype {dtype_str} and shape {shape}; the record is corrupt")
    if dtype.itemsize == 0:  # e.g. '<U0': frombuffer cannot take a zero itemsize
        return np.zeros(shape, dtype)
    # bytearray: one copy that makes the array writable (torch.from_numpy warns on read-only arrays).
    return np.frombuffer(bytearray(data), dtype=dtype).reshape(shape)


def decode_sample(json_meta: str, arrays: Mapping[str, tuple[str, Any, bytes]]) -> Sample:
    """Invert encode_sample: the same keys in the same order, arrays bit-identical."""
    meta = json.loads(json_meta)
    if not isinstance(meta, dict):
        raise SampleError(f"json_meta must encode a JSON object, got {type(meta).__name__}")
    out: Sample = {}
    for key, value in meta.items():
        if isinstance(value, dict):
            if key not in arrays:
                raise SampleError(f"json_meta marks {key!r} as a numpy value but arrays has no {key!r}; "
                                  f"arrays has {sorted(arrays)}")
            array = _decode_array(key, *arrays[key])
            out[key] = array if value.get(_MARK) == "array" else array[()]
        else:
            out[key] = value
    extra = set(arrays) - set(out)
    if extra:
        raise SampleError(f"arrays {sorted(extra)} are not named in json_meta; the record is corrupt")
    return out


def samples_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when two samples have the same keys in the same order, the same value types, JSON values
    equal and numpy values bit-identical with the same dtype and shape (NaN equals its own bits)."""
    if list(a) != list(b):
        return False
    for key in a:
        x, y = a[key], b[key]
        if type(x) is not type(y):
            return False
        if isinstance(x, (np.ndarray, np.generic)):
            x, y = np.asarray(x), np.asarray(y)
            if x.dtype.str != y.dtype.str or x.shape != y.shape or x.tobytes() != y.tobytes():
                return False
        elif not _json_equal(x, y):
            return False
    return True


def _json_equal(x: Any, y: Any) -> bool:
    if type(x) is not type(y):  # keeps 1 != 1.0 != True apart
        return False
    if type(x) is list:
        return len(x) == len(y) and all(_json_equal(i, j) for i, j in zip(x, y))
    if type(x) is float:  # -0.0 vs 0.0 must differ too
        return math.copysign(1.0, x) == math.copysign(1.0, y) and x == y
    return x == y
