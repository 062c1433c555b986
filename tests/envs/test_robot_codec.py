"""The msgpack + numpy codec: exact round trips, and only CodecError on anything else; the wire
contract (codec, protocol) and atomic writes as leaf modules that import nothing else of graft's."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

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


# -- the wire contract's leaf modules -------------------------------------------------------------

LEAVES = {"graft.envs.robot.codec": "envs/robot/codec.py", "graft.envs.robot.protocol": "envs/robot/protocol.py",
          "graft.envs.atomic": "envs/atomic.py", "graft.envs.robot.openpi_wire": "envs/robot/openpi_wire.py"}
ALLOWED = {"graft.envs.robot.openpi_wire": {"graft.envs.robot.codec"}}  # openpi's maps over the codec's checks
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", sorted(LEAVES))
def test_leaf_modules_import_nothing_else_of_graft(module):
    code = (f"import sys, json, {module}\n"
            "print(json.dumps(sorted(m for m in sys.modules if m == 'graft' or m.startswith('graft.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    allowed = ALLOWED.get(module, set())
    assert set(json.loads(out.stdout)) == parents | {module} | allowed
    # not even inside a function, where the import check above would not see it
    tree = ast.parse((ROOT / LEAVES[module]).read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.split(".")[0] == "graft" and m not in allowed]


def test_protocol_works_on_duck_typed_specs_and_the_client_gets_modality_specs_back():
    import gymnasium as gym
    from graft.envs.robot.client import handshake_spec
    from graft.envs.robot.protocol import Metadata, ObservationError, validate_observation
    from graft.envs.spec import ModalitySpec

    class Spec:  # an observation spec with the duck-typed interface, not graft's ObservationSpec
        def __init__(self):
            self.modalities = {"proprio": ModalitySpec("proprio", (2,), "float32", -1.0, 1.0, "joints")}
            self.text_keys = ("mission",)

        def validate(self, obs):
            return {"proprio": np.asarray(obs["proprio"], np.float32)}

    meta = Metadata(Spec(), gym.spaces.Discrete(3), control_rate_hz=10)
    back = Metadata.from_message(decode(encode(meta.to_message())), handshake_spec)
    assert back.observation.modalities == {"proprio": ModalitySpec("proprio", (2,), "float32", -1.0, 1.0, "joints")}
    assert back.observation.text_keys == ("mission",) and back.action_space == gym.spaces.Discrete(3)
    assert back.to_message() == meta.to_message()
    built = Metadata.from_message(meta.to_message(), observation_spec=lambda mods, text: (sorted(mods), text))
    assert built.observation == (["proprio"], ("mission",))
    ok = validate_observation({"proprio": [0.5, 0.5], "mission": "go"}, Spec())
    assert ok["mission"] == "go" and ok["proprio"].dtype == np.float32
    with pytest.raises(ObservationError, match=r"unknown keys \['lidar'\]"):
        validate_observation({"proprio": [0, 0], "mission": "go", "lidar": 1}, Spec())
    with pytest.raises(ObservationError, match="at most 4"):
        validate_observation({"proprio": [0, 0], "mission": "a long one"}, Spec(), max_text=4)


def test_protocol_raises_the_error_class_of_the_spec_it_was_given():
    """The server catches graft.envs.spec.ObservationError; protocol finds it without importing it."""
    from graft.envs.robot import protocol
    from graft.envs.spec import ModalitySpec, ObservationError, ObservationSpec

    spec = ObservationSpec({"proprio": ModalitySpec("proprio", (2,), "float32")})
    for bad in ({"proprio": np.zeros(2, np.float32), "mission": "m", "x": 1},  # protocol's own check
                {"proprio": np.zeros(3, np.float32), "mission": "m"}):  # the spec's check
        with pytest.raises(ObservationError):
            protocol.validate_observation(bad, spec)
