"""Property-based: the server answers malformed, truncated and random messages and stays up."""
from __future__ import annotations

import numpy as np
import pytest
from graft.envs.robot.codec import decode, encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from websockets.sync.client import connect

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def ws(servers, token):
    """A raw websocket to the main server, one per test, reused by all of that test's examples (the
    connection must survive them)."""
    with connect(servers["main"].uri(), additional_headers={"Authorization": f"Bearer {token}"}, proxy=None,
                 max_size=None) as conn:
        assert decode(conn.recv(timeout=30))["type"] == "metadata"
        yield conn


@pytest.fixture
def valid_act(babyai_obs):
    return encode({"type": "act", "id": 5, "observation": babyai_obs(np.random.default_rng(5))})


def exchange(ws, frame) -> dict:
    ws.send(frame)
    answer = decode(ws.recv(timeout=30))
    assert isinstance(answer, dict) and answer["type"] in ("error", "action", "pong", "stats"), answer
    return answer


@FUZZ
@given(frame=st.binary(max_size=4096))
def test_random_bytes_get_an_answer(ws, frame):
    answer = exchange(ws, frame)
    if answer["type"] == "error":
        assert answer["code"] in ("bad_message", "bad_observation") and answer["error"]


@FUZZ
@given(data=st.data())
def test_truncated_and_corrupted_acts_get_an_answer(ws, valid_act, data):
    cut = data.draw(st.integers(0, len(valid_act) - 1))
    answer = exchange(ws, valid_act[:cut])
    assert answer["type"] == "error" and answer["code"] == "bad_message"
    positions = st.integers(0, len(valid_act) - 1)
    flips = data.draw(st.lists(st.tuples(positions, st.integers(0, 255)), max_size=4))
    corrupted = bytearray(valid_act)
    for pos, byte in flips:
        corrupted[pos] = byte
    exchange(ws, bytes(corrupted))  # an action (pixels flipped) or an error, but an answer


arrays = st.one_of(
    hnp.arrays(st.sampled_from(["uint8", "float32", "int64", "bool", "float16"]),
               hnp.array_shapes(min_dims=0, max_dims=3, max_side=8)),
    hnp.arrays(np.uint8, st.sampled_from([(7, 7, 3), (56, 56, 3)]), elements=st.integers(0, 255)),
    hnp.arrays(np.float32, (7, 7, 3), elements=st.floats(allow_nan=True, allow_infinity=True, width=32)),
)
int64 = st.integers(-2**63, 2**63 - 1)
values = st.one_of(arrays, st.text(max_size=40), int64, st.none(), st.lists(int64, max_size=5),
                   st.binary(max_size=20), st.floats())
observations = st.dictionaries(st.sampled_from(["grid", "rgb", "mission", "depth", "direction", ""]), values,
                               max_size=5)


@FUZZ
@given(obs=observations, kind=st.sampled_from(["act", "act", "stats", "ping", "reset", ""]),
       rid=st.one_of(st.integers(-2**63, 2**64 - 1), st.text(max_size=5), st.none()))
def test_structured_garbage_gets_an_answer(ws, obs, kind, rid):
    answer = exchange(ws, encode({"type": kind, "id": rid, "observation": obs}))
    if kind == "act" and answer["type"] == "action":  # only a fully valid observation may act
        assert set(obs) == {"grid", "rgb", "mission"} and isinstance(obs["mission"], str)
        assert answer["actions"].shape == (1,)


def test_the_server_still_acts_after_the_fuzzing(ws, valid_act, servers):
    """Its own burst of malformed frames on one connection (not the fuzz tests' leftovers: this test
    runs alone or in any order), then a valid act on that same connection is answered with an action."""
    before = exchange(ws, encode({"type": "stats"}))
    rng = np.random.default_rng(0)
    garbage = [valid_act[:cut] for cut in np.linspace(0, len(valid_act) - 1, 40).astype(int)]  # truncated
    garbage += [b"\xc1" + rng.bytes(int(n)) for n in rng.integers(0, 64, 20)]  # 0xc1: never valid msgpack
    garbage += [encode([1, 2]), encode({"type": "fly"}), encode({"id": 1}), "a text frame"]
    for frame in garbage:
        answer = exchange(ws, frame)
        assert answer["type"] == "error" and answer["code"] == "bad_message", (frame[:40], answer)
    assert exchange(ws, valid_act)["type"] == "action"
    after = exchange(ws, encode({"type": "stats"}))
    bad = after["errors"].get("bad_message", 0) - before["errors"].get("bad_message", 0)
    assert bad == len(garbage) and after["failures"] == before["failures"]
    assert after["answered"] == before["answered"] + 1
    assert servers["main"].proc.poll() is None
