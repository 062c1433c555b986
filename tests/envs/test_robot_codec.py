"""The msgpack + numpy codec: exact round trips, and only CodecError on anything else."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest
from graft.envs.robot.codec import NDARRAY_EXT, CodecError, decode, encode
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DTYPES = ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
          "float16", "float32", "float64"]


@settings(max_examples=200, deadline=None)
@given(arr=hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=4, max_side=6)),
       text=st.text(max_size=30))
def test_arrays_round_trip_bit_exactly(arr, text):
    out = decode(encode({"obs": {"x": arr, "mission": text}, "n": [1, 2.5, None, True]}))
    back = out["obs"]["x"]
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert back.tobytes() == arr.tobytes()  # bit-exact, NaN payloads included
    assert back.flags.writeable and out["obs"]["mission"] == text and out["n"] == [1, 2.5, None, True]


def test_big_endian_and_strided_arrays_arrive_as_little_endian_copies():
    big = np.arange(6, dtype=">i4").reshape(2, 3)
    out = decode(encode({"a": big, "b": np.arange(10.0)[::3], "s": np.float32(1.5)}))
    assert out["a"].dtype == np.dtype("<i4") and out["a"].tolist() == big.tolist()
    assert out["b"].tolist() == [0.0, 3.0, 6.0, 9.0] and out["s"] == 1.5


@pytest.mark.parametrize("value, pattern", [
    (np.array([object()]), "dtype object"),
    (np.zeros(2, complex), "dtype complex128"),
    ({1, 2}, "cannot encode a set"),
])
def test_unsendable_values_are_named(value, pattern):
    with pytest.raises(CodecError, match=pattern):
        encode({"v": value})


def ext(header) -> bytes:
    return msgpack.packb({"v": msgpack.ExtType(NDARRAY_EXT, msgpack.packb(header, use_bin_type=True))},
                         use_bin_type=True)


@pytest.mark.parametrize("data, pattern", [
    (ext(["|O8", [1], b"\x00" * 8]), "dtype '|O8' is not allowed"),
    (ext(["<f4", [2, 2], b"\x00" * 12]), r"needs 16 bytes, got 12"),
    (ext(["<f4", [-1], b""]), "non-negative ints"),
    (ext(["<f4", [2**40, 2**40], b""]), "needs"),  # huge shapes are refused before any allocation
    (ext(["<f4", [1] * 9, b"\x00" * 4]), "at most 8"),
    (ext(["<f4", [1]]), r"\[dtype, shape, bytes\]"),
    (msgpack.packb(msgpack.ExtType(9, b"x")), "unknown msgpack extension type 9"),
    (b"\x92\x01", "truncated"),
    (msgpack.packb(1) + b"\x01", "trailing bytes"),
    (msgpack.packb({1: 2}), "malformed"),  # int map keys
])
def test_malformed_messages_raise_codec_errors(data, pattern):
    with pytest.raises(CodecError, match=pattern):
        decode(data)


def test_the_size_limit_is_checked_first():
    with pytest.raises(CodecError, match="exceeds the limit of 10 bytes"):
        decode(b"\x00" * 11, max_bytes=10)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512))
def test_random_bytes_decode_or_raise_codec_error_only(data):
    try:
        decode(data)
    except CodecError:
        pass
