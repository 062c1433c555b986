"""An observation is validated once: at the server's boundary for a request (never again in the policy
or the MM-LLM), at the policy's entry for an in-process call. Counted on `ModalitySpec.validate`,
which every check of a modality's arrays ends in (the handshake's, grid's stricter one, the MM-LLM's)."""
from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest


@pytest.fixture
def calls(monkeypatch) -> Counter:
    from graft.envs.spec import ModalitySpec

    counted: Counter = Counter()
    original = ModalitySpec.validate

    def counting(self, value, batched=False):
        counted[self.name] += 1
        return original(self, value, batched)

    monkeypatch.setattr(ModalitySpec, "validate", counting)
    return counted


def make_env(name: str):
    from graft.envs.rollout import load_env_config, make_env_factory

    return make_env_factory(load_env_config(name))()


def server_for(policy, env, model=None):
    from graft.agent.serve import PolicyServer, ServeSettings, metadata_for
    from graft.curricula.serve import serving

    fn, check, stats, settings = serving(policy, ServeSettings())
    return PolicyServer(fn, metadata_for(policy, env, settings, model or {}), settings, check=check, policy_stats=stats)


def send(server, observations) -> list[dict]:
    """Each observation as one `act` request through the server's own path (decode, checks, batcher)."""
    from graft.agent.serve_batching import Batcher
    from graft.envs.robot.codec import encode

    async def main():
        server.batcher = Batcher(server.run_batch, max_batch=8, max_wait_s=0.001)
        task = asyncio.create_task(server.batcher.run())
        try:
            return await asyncio.gather(*(server.handle(encode({"type": "act", "id": i, "observation": o}))
                                          for i, o in enumerate(observations)))
        finally:
            task.cancel()
    return asyncio.run(main())


def test_a_request_to_the_text_agent_is_validated_once_per_modality(compose, babyai_obs, calls):
    from graft.curricula.serve import build_agent

    env = make_env("babyai_goto")
    try:
        agent, model = build_agent(compose("serve", ["checkpoint=tiny"]), env)
        server = server_for(agent, env, model)
    finally:
        env.close()
    assert agent.modalities == ["grid", "rgb"]  # grid has checks of its own beyond its spec
    rng = np.random.default_rng(0)
    calls.clear()
    answers = send(server, [babyai_obs(rng, i) for i in range(3)])
    assert [a["type"] for a in answers] == ["action"] * 3
    assert calls == {"grid": 3, "rgb": 3}
    calls.clear()
    bad = {**babyai_obs(rng), "grid": np.full((7, 7, 3), 7, np.uint8)}  # colour index 7: grid's own rule
    (answer,) = send(server, [bad])
    assert answer["code"] == "bad_observation" and "colour index 7" in answer["error"]


def chunk_policy(chunk_agent, env):
    from graft.agent.loader import load_policy

    mm, generator = chunk_agent(spread=2.0, inputs=["rgb", "proprio"], execute=4)
    return load_policy(mm, env, generators={"action_chunk": generator})


def test_action_chunks_are_validated_once_per_request_and_once_per_step(chunk_agent, calls):
    env = make_env("mujoco_reach")
    try:
        policy = chunk_policy(chunk_agent, env)
        server = server_for(policy, env)
        first = [env.reset(seed=s)[0] for s in (0, 1)]
    finally:
        env.close()
    requests = [{k: o[k] for k in ("rgb", "proprio", "mission")} for o in first]
    calls.clear()
    answers = send(server, requests)
    assert [a["actions"].shape for a in answers] == [(4, 2), (4, 2)]
    assert calls == {"rgb": 2, "proprio": 2}
    # in process: once at the policy's entry, for a whole vector-env batch or one observation
    batch = {k: np.stack([o[k] for o in first]) for k in ("rgb", "depth", "proprio")}
    batch["mission"] = tuple(o["mission"] for o in first)
    calls.clear()
    policy.reset()
    assert policy(batch, {}).shape == (2, 2)  # plans (the MM-LLM and the generator run) ...
    assert policy(batch, {}).shape == (2, 2)  # ... then executes the queued plan
    assert calls == {"rgb": 2, "proprio": 2}
    calls.clear()
    assert policy.infer(first[0])["actions"].shape == (4, 2)
    assert calls == {"rgb": 1, "proprio": 1}


def test_an_in_process_text_agent_validates_at_its_entry(tiny_mm, calls):
    import gymnasium as gym
    from graft.agent.policy import Agent
    from graft.envs.spec import ObservationError

    mm = tiny_mm()
    agent = Agent(mm, gym.spaces.Discrete(3), ["left", "right", "forward"])
    rng = np.random.default_rng(0)
    obs = {m: np.stack([mm.modalities[m].sample(rng) for _ in range(4)]) for m in ("grid", "rgb")}
    obs["mission"] = ("go to the ball",) * 4
    calls.clear()
    assert agent(obs, {}).shape == (4,)
    assert calls == {"grid": 1, "rgb": 1}  # one batched check each, none inside the MM-LLM
    with pytest.raises(ObservationError, match="colour index"):
        agent({**obs, "grid": np.full((4, 7, 7, 3), 7, np.uint8)}, {})
    with pytest.raises(ObservationError, match="placeholder <grid>"):
        agent({**obs, "mission": ("go to <grid>",) * 4}, {})
    assert "validate" not in mm.modalities["grid"].__dict__  # the MM-LLM checks again outside a policy call
