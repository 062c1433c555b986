"""The sample codec: lossless round trips (examples and hypothesis properties) and clear refusals."""
from __future__ import annotations

import enum
import json
import math

import numpy as np
import pytest
from graft.memory.schema import SampleError, decode_sample, encode_sample, samples_equal, validate_sample
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def babyai_record(rng: np.random.Generator) -> dict:
    return {
        "episode_seed": 12345, "step": 3, "kind": "demo", "env": "BabyAI-GoToLocal-v0",
        "mission": "go to the red ball", "modalities": ["grid", "rgb"], "prompt": "<grid>\nWhat next?",
        "response": "turn left", "action": [0.0],
        "grid": rng.integers(0, 11, (7, 7, 3), dtype=np.uint8),
        "rgb": rng.integers(0, 256, (56, 56, 3), dtype=np.uint8),
        "depth": rng.random((8, 8), dtype=np.float32),
        "proprio": rng.standard_normal(6).astype(np.float32),
    }


def roundtrip(sample: dict) -> dict:
    meta, arrays = encode_sample(sample)
    json.loads(meta)  # standard JSON
    return decode_sample(meta, arrays)


def test_babyai_record_round_trips_bit_exact(rng):
    sample = babyai_record(rng)
    back = roundtrip(sample)
    assert samples_equal(sample, back)
    assert list(back) == list(sample)
    for key in ("grid", "rgb", "depth", "proprio"):
        assert back[key].dtype == sample[key].dtype and back[key].shape == sample[key].shape
        assert np.array_equal(back[key], sample[key])
        assert back[key].flags.writeable and back[key].flags.c_contiguous


def test_arrays_keep_nan_payloads_signed_zero_byte_order_and_layout():
    weird = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 1e-45], dtype=np.float32)
    weird.view(np.uint32)[0] = 0x7FC00123  # a NaN with a payload
    sample = {
        "weird": weird,
        "big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        "strided": np.arange(20, dtype=np.uint8)[::3],
        "zero_d": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 4), dtype=np.float16),
        "text": np.array(["ab", "ç"], dtype="<U2"),
        "when": np.array(["2026-01-01"], dtype="datetime64[D]"),
        "flags": np.array([True, False]),
        "complex": np.array([1 + 2j], dtype=np.complex64),
    }
    back = roundtrip(sample)
    assert samples_equal(sample, back)
    assert back["weird"].tobytes() == weird.tobytes()
    assert back["big_endian"].dtype.str == ">f8"
    assert back["zero_d"].shape == () and isinstance(back["zero_d"], np.ndarray)
    assert np.array_equal(back["fortran"], sample["fortran"])


def test_numpy_scalars_come_back_as_the_same_numpy_type():
    sample = {"r": np.float32(0.25), "n": np.int64(-3), "b": np.bool_(True), "s": np.str_("hi")}
    back = roundtrip(sample)
    for key, value in sample.items():
        assert type(back[key]) is type(value) and back[key] == value


def test_json_values_keep_their_exact_types():
    sample = {"i": 1, "f": 1.0, "b": True, "none": None, "neg0": -0.0, "big": 2**70,
              "nested": [[1, 2.5], ["x", None, False], []], "unicode": "é\u2603\n\"q\""}
    back = roundtrip(sample)
    assert samples_equal(sample, back)
    assert type(back["i"]) is int and type(back["f"]) is float and type(back["b"]) is bool
    assert math.copysign(1, back["neg0"]) == -1


def test_samples_equal_tells_types_and_bits_apart():
    assert not samples_equal({"a": 1}, {"a": 1.0})
    assert not samples_equal({"a": 1}, {"a": True})
    assert not samples_equal({"a": 0.0}, {"a": -0.0})
    assert not samples_equal({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not samples_equal({"a": np.zeros(2, np.float32)}, {"a": np.zeros(2, np.float64)})
    assert not samples_equal({"a": np.zeros((2, 1))}, {"a": np.zeros((1, 2))})


@pytest.mark.parametrize("sample, words", [
    ({"x": np.array([object(), 1], dtype=object)}, ["'x'", "dtype object", "plain dtype"]),
    ({"x": np.zeros(2, dtype=[("a", "i4"), ("b", "f4")])}, ["'x'", "structured"]),
    ({"x": np.void(b"ab")}, ["'x'", "numpy scalar"]),
    ({1: "one"}, ["key 1", "int", "must be str"]),
    ({("a",): 1}, ["key ('a',)", "must be str"]),
    ({"x": (1, 2)}, ["'x'", "tuple", "use a list"]),
    ({"x": {"y": 1}}, ["'x'", "nested dict", "'x.<field>'"]),
    ({"x": {1, 2}}, ["'x'", "unsupported type builtins.set"]),
    ({"x": b"raw"}, ["'x'", "bytes", "uint8 array"]),
    ({"x": [1, [2, np.zeros(2)]]}, ["'x'][1][1]", "inside a list", "top-level"]),
    ({"x": [1.0, float("nan")]}, ["'x'][1]", "non-finite", "numpy array"]),
    ({"x": float("inf")}, ["'x'", "non-finite"]),
    ({"x": enum.IntEnum("E", "A").A}, ["'x'", "unsupported type"]),
])
def test_bad_samples_are_refused_with_the_key_and_the_expectation(sample, words):
    with pytest.raises(SampleError) as err:
        encode_sample(sample)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_non_dict_and_torch_tensor_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(SampleError, match="must be a dict"):
        validate_sample([("a", 1)])
    with pytest.raises(SampleError, match=r"\.numpy\(\)"):
        validate_sample({"t": torch.zeros(2)})


def test_decode_refuses_corrupt_records():
    meta, arrays = encode_sample({"a": np.arange(4, dtype=np.int32)})
    dtype, shape, data = arrays["a"]
    with pytest.raises(SampleError, match="12 bytes, expected 16"):
        decode_sample(meta, {"a": (dtype, shape, data[:12])})
    with pytest.raises(SampleError, match="no 'a'"):
        decode_sample(meta, {})
    with pytest.raises(SampleError, match="not named"):
        decode_sample(meta, {**arrays, "b": arrays["a"]})


# -- properties -----------------------------------------------------------------------------------

DTYPES = [np.dtype(d) for d in ("u1", "i2", "<i8", ">i4", "f2", "<f4", ">f8", "c8", "?", "U3", "S2", "m8[s]")]
array_values = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                         st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=12)
numpy_scalars = st.sampled_from(["u1", "i8", "f4", "f8", "?"]).flatmap(
    lambda dt: hnp.from_dtype(np.dtype(dt)).map(lambda v: np.dtype(dt).type(v)))
samples = st.dictionaries(st.text(max_size=6), st.one_of(json_values, array_values, numpy_scalars),
                          max_size=6)


@settings(max_examples=150, deadline=None)
@given(samples)
def test_any_valid_sample_round_trips_losslessly(sample):
    back = roundtrip(sample)
    assert samples_equal(sample, back)


@settings(max_examples=60, deadline=None)
@given(array_values)
def test_arrays_come_back_bit_identical_with_dtype_and_shape(array):
    back = roundtrip({"a": array})["a"]
    assert back.dtype.str == array.dtype.str
    assert back.shape == array.shape
    assert back.tobytes() == np.ascontiguousarray(array).tobytes()
