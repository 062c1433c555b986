"""`graft serve` as a real process on loopback: handshake, auth, round trip, batching, bad input."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from graft.envs.robot.client import PolicyClient
from graft.envs.robot.codec import encode
from graft.envs.robot.protocol import ServerError
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect


@pytest.fixture(scope="module")
def main_uri(servers):
    return servers["main"].uri()


@pytest.fixture(scope="module")
def local_agent(babyai_checkpoint):
    """The same checkpoint loaded in this process."""
    from graft.agent.build import load_mmllm
    from graft.agent.policy import Agent
    from graft.envs.rollout import load_env_config, make_env_factory

    env = make_env_factory(load_env_config("babyai_goto"))()
    agent = Agent.for_env(load_mmllm(babyai_checkpoint), env)
    env.close()
    return agent


def local_action(agent, obs) -> int:
    batch = {m: obs[m][None] for m in agent.modalities}
    batch["mission"] = [obs["mission"]]
    return int(agent(batch, {})[0])


def test_handshake_describes_observations_actions_and_model(main_uri, token, babyai_checkpoint):
    with PolicyClient(main_uri, token=token) as client:
        meta = client.metadata
    specs = meta.observation.modalities
    assert specs["grid"].shape == (7, 7, 3) and specs["grid"].dtype == "uint8"
    assert specs["rgb"].shape == (56, 56, 3) and meta.observation.text_keys == ("mission",)
    assert meta.action_space.n == 7 and meta.action_names[-1] == "done"
    assert meta.chunk_size == 1 and meta.control_rate_hz == 10.0 and meta.auth
    assert meta.model["checkpoint"] == str(babyai_checkpoint) and meta.model["backbone"] == "tiny_llama"
    assert sorted(meta.model["adapters"]) == ["grid", "rgb"] and "torch" in meta.model["versions"]


def test_a_token_is_required_and_checked(main_uri, token):
    for wrong in (None, "not-the-token", token + "x"):
        with pytest.raises(ConnectionError, match="HTTP 401"):
            PolicyClient(main_uri, token=wrong).connect()
    twice = [("Authorization", f"Bearer {token}"), ("Authorization", "Bearer guess")]
    with pytest.raises(InvalidStatus, match="401"):
        connect(main_uri, additional_headers=twice, proxy=None)
    with PolicyClient(main_uri, token=token) as client:
        assert client.ping() < 1000
        assert client.stats()["rejected"] >= 4


def test_serving_beyond_loopback_without_a_token_is_refused_before_binding(compose, monkeypatch):
    from graft.agent.serve import check_bind
    from graft.curricula.serve import run_serve

    monkeypatch.delenv("GRAFT_SERVE_TOKEN", raising=False)
    with pytest.raises(ValueError, match="refusing to serve on '0.0.0.0' without an auth token"):
        run_serve(compose("serve", ["host=0.0.0.0"]))
    for host in ("10.1.2.3", "example.org", "::"):
        with pytest.raises(ValueError, match="without an auth token"):
            check_bind(host, None)
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(host, None)
    check_bind("0.0.0.0", "a-secret")


def test_policies_may_return_one_action_or_whole_chunks():
    import gymnasium as gym
    from graft.agent.serve import PolicyServer, ServeSettings
    from graft.envs.robot.protocol import Metadata
    from graft.envs.spec import ModalitySpec, ObservationSpec

    spec = ObservationSpec({"proprio": ModalitySpec("proprio", (2,), "float32")})
    meta = Metadata(spec, gym.spaces.Box(-1, 1, (2,), np.float32), control_rate_hz=20, chunk_size=3)
    obs = [{"proprio": np.array([0.1, 0.2], np.float32), "mission": "m"}] * 2

    def one(batch):  # (B, 2): the proprio itself
        return batch["proprio"]

    def chunks(batch):  # (B, 3, 2): a ramp
        return batch["proprio"][:, None] * np.arange(1, 4, dtype=np.float32)[None, :, None]

    repeated = PolicyServer(one, meta, ServeSettings(chunk_size=3)).run_batch(obs)
    assert len(repeated) == 2 and repeated[0].shape == (3, 2) and np.allclose(repeated[0], [0.1, 0.2])
    planned = PolicyServer(chunks, meta, ServeSettings(chunk_size=3)).run_batch(obs)
    assert np.allclose(planned[1], [[0.1, 0.2], [0.2, 0.4], [0.3, 0.6]])
    with pytest.raises(RuntimeError, match="chunks of 3 actions, the handshake promised 4"):
        PolicyServer(chunks, meta, ServeSettings(chunk_size=4)).run_batch(obs)


def test_server_actions_equal_the_in_process_agent(main_uri, token, local_agent, babyai_obs):
    rng = np.random.default_rng(1)
    observations = [babyai_obs(rng, i) for i in range(12)]
    expected = [local_action(local_agent, o) for o in observations]
    assert len(set(expected)) >= 2, "the observations should make the agent answer differently"
    with PolicyClient(main_uri, token=token) as client:
        replies = [client.act(o, timeout=10) for o in observations]
    assert [int(r.actions[0]) for r in replies] == expected
    assert all(r.actions.shape == (1,) and r.model_ms > 0 and r.latency_ms >= r.model_ms for r in replies)


def test_eight_concurrent_clients_are_batched_and_each_get_their_own_answers(main_uri, token, local_agent,
                                                                              babyai_obs):
    rng = np.random.default_rng(2)
    observations = [babyai_obs(rng, i) for i in range(8)]
    expected = [local_action(local_agent, o) for o in observations]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def client_thread(i: int) -> None:
        try:
            with PolicyClient(main_uri, token=token) as client:
                results[i] = [client.act(observations[i], timeout=20) for _ in range(12)]
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 8
    for i, replies in results.items():
        got = [int(r.actions[0]) for r in replies]
        assert got == [expected[i]] * 12, f"client {i} got another client's action"
    assert max(r.batch_size for replies in results.values() for r in replies) > 1
    with PolicyClient(main_uri, token=token) as client:
        stats = client.stats()
    assert stats["max_batch_seen"] > 1 and stats["failures"] == 0 and stats["requests"] >= 96


def bad_observations(good: dict) -> dict[str, tuple[dict, str]]:
    return {
        "missing modality": ({"grid": good["grid"], "mission": good["mission"]},
                             r"missing modality \['rgb'\]"),
        "wrong shape": ({**good, "grid": good["grid"][:5]}, r"shape \(7x7x3\).*got shape \(5, 7, 3\)"),
        "wrong dtype": ({**good, "rgb": good["rgb"].astype(np.float32)}, r"dtype uint8.*got dtype float32"),
        "out of range": ({**good, "grid": np.full((7, 7, 3), 200, np.uint8)},
                         r"values in \[0, 10\].*maximum 200"),
        "unknown key": ({**good, "lidar": np.zeros(3, np.float32)}, r"unknown keys \['lidar'\]"),
        "mission not text": ({**good, "mission": 7}, r"'mission': expected a str"),
        "mission too long": ({**good, "mission": "go " * 400}, r"at most 512"),
        "placeholder in mission": ({**good, "mission": "go to <rgb>"}, r"contains the placeholder <rgb>"),
        "colour index": ({**good, "grid": np.full((7, 7, 3), 7, np.uint8)}, r"colour index 7.*expected < 6"),
        "not an array": ({**good, "grid": good["grid"].tolist()}, r"got list, expected a numpy array"),
    }


def test_bad_observations_get_an_error_naming_what_was_expected(main_uri, token, babyai_obs):
    good = babyai_obs(np.random.default_rng(3))
    with PolicyClient(main_uri, token=token) as client:
        for name, (obs, pattern) in bad_observations(good).items():
            with pytest.raises(ServerError, match=pattern) as err:
                client.request({"type": "act", "observation": obs}, 10, "action")
            assert err.value.code == "bad_observation", name
        assert client.act(good, timeout=10).actions.shape == (1,)  # same connection, still served


def test_nan_in_a_float_modality_is_rejected(servers):
    with PolicyClient(servers["reach"].uri()) as client:
        specs = client.metadata.observation.modalities
        assert set(specs) == {"rgb", "depth", "proprio", "objects"} and specs["proprio"].dtype == "float32"
        obs = {"rgb": np.zeros((64, 64, 3), np.uint8), "depth": np.ones((64, 64), np.float32),
               "proprio": np.array([0, 0, 0, np.nan, 0.1, 0], np.float32), "mission": "reach the red target",
               "objects": np.array([[0.1, 0.0, 0.9, 0.1, 0.1], [-0.1, 0.05, 0.15, 0.3, 0.95]], np.float32)}
        with pytest.raises(ServerError, match=r"'proprio'.*NaN"):
            client.act(obs, timeout=10)
        obs["proprio"] = np.zeros(6, np.float32)
        assert client.act(obs, timeout=30).actions.shape == (1, 2)


def test_malformed_messages_get_errors_and_the_connection_stays_open(main_uri, token, babyai_obs):
    valid = encode({"type": "act", "id": 1, "observation": babyai_obs(np.random.default_rng(4))})
    frames = {
        "text frame": "hello",
        "not msgpack": b"\xc1\xc1\xc1",
        "truncated": valid[: len(valid) // 2],
        "trailing bytes": valid + b"\x00",
        "not a map": encode([1, 2, 3]),
        "unknown type": encode({"type": "launch"}),
        "bad array dtype": valid.replace(b"|u1", b"|O8"),
    }
    from graft.envs.robot.codec import decode

    with connect(main_uri, additional_headers={"Authorization": f"Bearer {token}"}, proxy=None) as ws:
        assert decode(ws.recv(timeout=10))["type"] == "metadata"
        for name, frame in frames.items():
            ws.send(frame)
            answer = decode(ws.recv(timeout=10))
            assert answer["type"] == "error" and answer["code"] == "bad_message", name
        ws.send(valid)
        assert decode(ws.recv(timeout=10))["type"] == "action"


def test_an_oversized_message_closes_only_that_connection(main_uri, token):
    with connect(main_uri, additional_headers={"Authorization": f"Bearer {token}"}, proxy=None,
                 max_size=None) as ws:
        ws.recv(timeout=10)
        ws.send(b"\x00" * 70_000)  # the server's cap is 64 KiB
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1009
    with PolicyClient(main_uri, token=token) as client:
        assert client.ping() < 1000 and client.stats()["oversized"] >= 1


def test_serve_dtype_picks_the_deployment_precision_and_refuses_others(compose, babyai_obs):
    import torch
    from graft.agent.serve import agent_policy
    from graft.curricula.serve import build_agent
    from graft.envs.rollout import load_env_config, make_env_factory

    env = make_env_factory(load_env_config("babyai_goto"))()
    try:
        agent, _ = build_agent(compose("serve", ["dtype=bfloat16"]), env)
        assert agent.dtype is torch.bfloat16
        rng = np.random.default_rng(0)
        singles = [babyai_obs(rng, i) for i in range(3)]
        batch = {k: [o[k] for o in singles] if k == "mission" else np.stack([o[k] for o in singles]) for k in singles[0]}
        actions = agent_policy(agent)(batch)  # what the server calls: the merged deployment copy
        assert len(actions) == 3 and agent.deploy
        assert (True, torch.bfloat16) in agent.mm.__dict__["_scorers"]
        assert all(env.action_space.contains(int(a)) for a in actions)
        with pytest.raises(ValueError, match="float32 or bfloat16"):
            build_agent(compose("serve", ["dtype=float16"]), env)
    finally:
        env.close()


def test_the_handshake_reports_inference_beside_execution_and_warns_when_it_is_slower(start_server, main_uri, token):
    from graft.envs.robot.protocol import chunk_timing

    stalled = start_server("checkpoint=tiny", "env=babyai_goto", "debug_delay_ms=400")  # its own: others kill theirs
    with pytest.warns(RuntimeWarning, match=r"inference takes 4\d\d\.\d ms .* longer than the 100\.0 ms"):
        with PolicyClient(stalled.uri()) as client:  # every batch sleeps 400 ms; 1 action at 10 Hz
            timing = client.metadata.timing
    assert timing["inference_slower_than_execution"] and timing["inference_ms"]["p50"] >= 400
    assert timing["chunk_execution_ms"] == 100.0 and timing["inference_per_execution"] >= 4
    assert "graft serve: warning: inference takes" in stalled.log.read_text()
    stalled.stop()
    with PolicyClient(main_uri, token=token) as client:  # a tiny model: well inside its 100 ms
        timing = client.metadata.timing
    assert not timing["inference_slower_than_execution"] and timing["warning"] is None
    assert timing["inference_ms"]["count"] == 5 and 0 < timing["inference_ms"]["p50"] < 100
    assert chunk_timing([30.0, 50.0, 70.0], chunk_size=4, control_rate_hz=100.0)["warning"].startswith(
        "inference takes 50.0 ms (median of 3), longer than the 40.0 ms one chunk of 4 action(s) at 100 Hz")
    assert chunk_timing([], 1, 10.0) == {"inference_ms": {"count": 0}, "chunk_execution_ms": 100.0,
                                         "inference_per_execution": None, "inference_slower_than_execution": False,
                                         "warning": None}
