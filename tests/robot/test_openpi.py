"""`graft serve protocol=openpi` driven by the real openpi client (PyPI `openpi-client`).

Two `graft serve` processes: a tiny BabyAI agent (grid + rgb, a token, chunks of 2 repeated
actions) and a tiny reach agent with a saved action generator (real chunks of 4). Whole episodes
run through `WebsocketClientPolicy` + `ActionChunkBroker`, exactly as an openpi robot script would.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from openpi_client import msgpack_numpy  # the README's test command installs openpi-client (--no-deps)
from openpi_client.action_chunk_broker import ActionChunkBroker
from openpi_client.websocket_client_policy import WebsocketClientPolicy


class CountingPolicy(WebsocketClientPolicy):
    """openpi's client, counting the requests that reach the server."""

    def __init__(self, *args, **kwargs):
        self.calls = 0
        super().__init__(*args, **kwargs)

    def infer(self, obs):
        self.calls += 1
        return super().infer(obs)


@pytest.fixture(scope="module")
def reach_checkpoint(tmp_path_factory, chunk_agent):
    from graft.agent.build import save_mmllm

    mm, generator = chunk_agent(inputs=["rgb", "proprio"], execute=4)
    return save_mmllm(mm, tmp_path_factory.mktemp("openpi") / "agent", generators={"action_chunk": generator})


@pytest.fixture(scope="module")
def openpi_servers(start_server, babyai_checkpoint, reach_checkpoint, token):
    started = {
        "babyai": start_server(f"checkpoint={babyai_checkpoint}", "env=babyai_goto", "protocol=openpi",
                               f"token={token}", "chunk_size=2"),
        "reach": start_server(f"checkpoint={reach_checkpoint}", "env=mujoco_reach", "protocol=openpi",
                              "openpi_keys={observation/state: proprio}"),
    }
    for server in started.values():
        server.uri()
    return started


def make_env(name):
    from graft.envs.rollout import load_env_config, make_env_factory

    return make_env_factory(load_env_config(name))()


def test_a_whole_babyai_episode_runs_through_the_openpi_client(openpi_servers, token, babyai_checkpoint):
    from graft.agent.build import load_mmllm
    from graft.agent.policy import Agent

    client = CountingPolicy("127.0.0.1", openpi_servers["babyai"].port, api_key=token)
    meta = client.get_server_metadata()
    assert meta["wire"] == "openpi" and meta["action_horizon"] == 2 and meta["auth"]
    assert meta["observation_keys"] == {"grid": "grid", "rgb": "rgb", "prompt": "mission"}
    assert meta["action_space"]["names"][:3] == ["left", "right", "forward"]
    assert meta["timing"]["chunk_execution_ms"] == pytest.approx(200.0)  # 2 actions at 10 Hz
    assert meta["timing"]["inference_ms"]["count"] == 5 and not meta["timing"]["inference_slower_than_execution"]
    assert meta["model"]["norm_stats"]["recorded"] is False  # saved without stats: said, not hidden

    env = make_env("babyai_goto")
    local = Agent.for_env(load_mmllm(babyai_checkpoint), env)
    broker = ActionChunkBroker(client, action_horizon=2)
    obs, _ = env.reset(seed=123)
    actions, done = [], False
    while not done:
        request = {"grid": obs["grid"], "rgb": obs["rgb"], "prompt": obs["mission"]}
        answer = broker.infer(request)
        action = int(answer["actions"])
        if len(actions) % 2 == 0:  # a fresh chunk: the server's answer is the in-process agent's
            assert answer["server_timing"]["infer_ms"] >= 0
            expect = local.infer({"grid": obs["grid"], "rgb": obs["rgb"], "mission": obs["mission"]})["actions"]
            assert action == int(expect)
        else:
            assert action == actions[-1]  # the broker executes the chunk's repeated action
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
    env.close()
    assert len(actions) >= 2 and client.calls == math.ceil(len(actions) / 2)


def test_a_whole_reach_episode_runs_on_real_action_chunks(openpi_servers):
    client = CountingPolicy("127.0.0.1", openpi_servers["reach"].port)
    meta = client.get_server_metadata()
    assert meta["action_horizon"] == 4 and meta["action_space"]["type"] == "box"
    assert meta["observation_keys"] == {"rgb": "rgb", "observation/state": "proprio", "prompt": "mission"}
    env = make_env("mujoco_reach")
    low, high = env.action_space.low, env.action_space.high
    broker = ActionChunkBroker(client, action_horizon=4)
    obs, _ = env.reset(seed=5)
    raw = client.infer({"rgb": obs["rgb"], "observation/state": obs["proprio"], "prompt": obs["mission"]})
    assert raw["actions"].shape == (4, 2) and raw["actions"].dtype == np.float32  # (H, A) in env units
    calls, steps, done = client.calls, 0, False
    while not done:
        action = broker.infer({"rgb": obs["rgb"], "observation/state": obs["proprio"], "prompt": obs["mission"]})
        action = action["actions"]
        assert action.shape == (2,) and np.all(action >= low) and np.all(action <= high)
        obs, _, terminated, truncated, _ = env.step(action)
        steps += 1
        done = terminated or truncated
    env.close()
    assert steps >= 4 and client.calls - calls == math.ceil(steps / 4)


def test_bad_requests_get_a_text_error_and_the_connection_keeps_serving(openpi_servers, token, babyai_obs):
    from websockets.exceptions import InvalidStatus

    rng = np.random.default_rng(0)
    good = babyai_obs(rng)
    good = {"grid": good["grid"], "rgb": good["rgb"], "prompt": good["mission"]}
    client = WebsocketClientPolicy("127.0.0.1", openpi_servers["babyai"].port, api_key=token)
    bad = [({"rgb": good["rgb"], "prompt": "go"}, r"bad_observation: .*grid.*openpi keys"),
           ({**good, "grid": good["grid"][:5]}, r"grid.*7x7x3.*got shape \(5, 7, 3\)"),
           ({**good, "prompt": 3}, r"mission.*str"),
           ({**good, "mission": "go", "prompt": "go"}, "both mean 'mission'")]
    for obs, why in bad:
        with pytest.raises(RuntimeError, match=why):
            client.infer(obs)
        assert client.infer(good)["actions"].shape == (2,)  # the same connection, served again
    hostile = {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}
    client._ws.send(msgpack_numpy.packb({"grid": hostile}))
    assert "is not allowed" in client._ws.recv()
    client._ws.send("a text frame")
    assert client._ws.recv().startswith("bad_message")
    assert client.infer(good)["actions"].shape == (2,)
    for wrong in (None, "not-the-token"):
        with pytest.raises(InvalidStatus, match="401"):
            WebsocketClientPolicy("127.0.0.1", openpi_servers["babyai"].port, api_key=wrong)


def test_the_wire_matches_openpis_own_msgpack_numpy():
    from graft.envs.robot import openpi_wire
    from graft.envs.robot.codec import CodecError

    message = {"actions": np.arange(8, dtype=np.float32).reshape(4, 2), "ids": np.arange(3),
               "mask": np.array([True, False]), "server_timing": {"infer_ms": 1.5}, "name": "graft"}
    theirs = msgpack_numpy.unpackb(openpi_wire.encode(message))
    for key in ("actions", "ids", "mask"):
        assert theirs[key].dtype == message[key].dtype and np.array_equal(theirs[key], message[key])
    assert theirs["server_timing"] == {"infer_ms": 1.5} and theirs["name"] == "graft"
    ours = openpi_wire.decode(msgpack_numpy.packb({**message, "scalar": np.float32(2.5)}))
    assert np.array_equal(ours["actions"], message["actions"]) and ours["actions"].flags.writeable
    assert ours["scalar"] == np.float32(2.5) and ours["scalar"].dtype == np.float32
    array = {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "<f4", b"shape": [2]}
    for broken, why in [({**array, b"dtype": "|O"}, "not allowed"), ({**array, b"shape": [3]}, "needs 12 bytes"),
                        ({**array, b"extra": 1}, "exactly the keys"), ({**array, b"dtype": ">f4"}, "not allowed")]:
        with pytest.raises(CodecError, match=why):
            openpi_wire.decode(msgpack_numpy.packb({"x": broken}))
    with pytest.raises(CodecError, match="exceeds the limit"):
        openpi_wire.decode(b"\0" * 100, max_bytes=10)
    with pytest.raises(CodecError, match="malformed or truncated|undecodable"):
        openpi_wire.decode(openpi_wire.encode(message)[:-3])
