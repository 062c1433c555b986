"""`graft serve` on a checkpoint with a saved action generator: real action chunks, not one repeated action.

A tiny agent (rgb + proprio grafted, an action_chunk output recorded with inputs [rgb, proprio] and
execute 4, and its ActionGenerator) is saved the way `graft onboard` leaves it (<run>/<method>/agent
with generators/), then served in-process through the same pieces `run_serve` uses (no sockets:
`PolicyServer.run_batch`). The run's config.yaml beside it is stale on purpose: the agent folder
alone says how to act.
"""
from __future__ import annotations

import json

import numpy as np
import pytest


STALE_RUN_CONFIG = """curriculum:
  stages:
  - {name: action_chunk, output: action_chunk, generator: action, inputs: [proprio], rollout: {execute: 2}}
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory, chunk_agent):
    """(agent folder with its generator, agent folder without a generator, the generator)."""
    from graft.agent.build import save_mmllm

    # fitted to [-2, 2], wider than the reach arm's Box: served chunks must be clipped
    mm, generator = chunk_agent(spread=2.0, inputs=["rgb", "proprio"], execute=4)
    root = tmp_path_factory.mktemp("serve_chunks")
    (root / "run").mkdir()  # an onboarding run's config that disagrees: serving must not read it
    (root / "run" / "config.yaml").write_text(STALE_RUN_CONFIG)
    with_gen = save_mmllm(mm, root / "run" / "graft" / "agent", generators={"action_chunk": generator})
    without = save_mmllm(mm, root / "plain" / "graft" / "agent")
    return with_gen, without, generator


@pytest.fixture(scope="module")
def env():
    from graft.envs.rollout import load_env_config, make_env_factory

    env = make_env_factory(load_env_config("mujoco_reach"))()
    yield env
    env.close()


def served(compose, env, *overrides):
    """(policy, model description, handshake, server) as `run_serve` builds them."""
    from graft.agent.serve import PolicyServer, metadata_for
    from graft.curricula.serve import build_agent, serving, settings_from

    cfg = compose("serve", ["env=mujoco_reach", *overrides])
    policy, model = build_agent(cfg, env)
    fn, check, stats, settings = serving(policy, settings_from(cfg))
    meta = metadata_for(policy, env, settings, model, cfg.control_rate_hz)
    return policy, model, meta, PolicyServer(fn, meta, settings, check=check, policy_stats=stats)


def observations(env, seeds=(0, 1)) -> list[dict]:
    out = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        out.append(obs)
    return out


def test_a_saved_action_generator_answers_real_chunks(compose, env, saved):
    from graft.agent.chunk_policy import ChunkPolicy, chunk_prompt
    from graft.agent.mmllm import Example
    from graft.agent.outputs import generate_output
    from graft.envs.robot.protocol import validate_observation

    folder, _, generator = saved
    policy, model, meta, server = served(compose, env, f"checkpoint={folder}", "seed=3")
    assert isinstance(policy, ChunkPolicy) and policy.output == "action_chunk"
    assert policy.modalities == ["rgb", "proprio"] and policy.execute == 4  # graft.json's, not the run config's
    assert meta.chunk_size == 4 and meta.control_rate_hz == pytest.approx(1.0 / env.unwrapped.dt)
    assert list(meta.observation.modalities) == ["rgb", "proprio"] and meta.action_space == env.action_space
    assert model["output"] == "action_chunk" and "first 4 of 16" in model["chunk"]
    keys = [*meta.observation.modalities, "mission"]  # what a client sends: the handshake's keys
    obs = [validate_observation({k: o[k] for k in keys}, meta.observation) for o in observations(env)]
    for o in obs:
        server.check(o)
    answers = server.run_batch(obs)
    box = env.action_space
    assert [a.shape for a in answers] == [(4, 2), (4, 2)] and all(a.dtype == np.float32 for a in answers)
    assert all(np.isfinite(a).all() and (a >= box.low).all() and (a <= box.high).all() for a in answers)
    assert not np.allclose(answers[0][0], answers[0][1:])  # different actions, not one repeated
    again = served(compose, env, f"checkpoint={folder}", "seed=3")[3].run_batch(obs)
    assert all(np.array_equal(a, b) for a, b in zip(answers, again))  # deterministic for a seed
    alone = server.run_batch(obs[1:])[0]  # an answer does not depend on the rows batched with it
    np.testing.assert_allclose(alone, answers[1], atol=1e-4)
    reference = generate_output(policy.mm, "action_chunk", generator,
                                [Example(chunk_prompt(["rgb", "proprio"], obs[1]["mission"]),
                                         {m: obs[1][m] for m in ("rgb", "proprio")})], seed=3)[0, :4]
    np.testing.assert_allclose(alone, np.clip(reference, box.low, box.high), atol=1e-4)
    other = served(compose, env, f"checkpoint={folder}", "seed=4")[3].run_batch(obs)
    assert not np.allclose(other[0], answers[0])
    assert server.stats()["plans"] == 2


def test_overrides_the_handshake_and_the_checks(compose, env, saved):
    from graft.envs.spec import ObservationError

    folder, _, _ = saved
    _, model, meta, server = served(compose, env, f"checkpoint={folder}", "inputs=[proprio]", "execute=16")
    assert list(meta.observation.modalities) == ["proprio"] and meta.chunk_size == 16
    assert model["modalities"] == ["proprio"]
    obs = observations(env, (0,))[0]
    assert server.run_batch([{"proprio": obs["proprio"], "mission": obs["mission"]}])[0].shape == (16, 2)
    for mission in ("<action_chunk_0> reach it", "reach the <rgb>"):
        with pytest.raises(ObservationError, match="mission"):
            server.check({"proprio": obs["proprio"], "mission": mission})
    with pytest.raises(ValueError, match="execute must be in"):
        served(compose, env, f"checkpoint={folder}", "execute=17")
    with pytest.raises(ValueError, match=r"reads \['depth'\]"):
        served(compose, env, f"checkpoint={folder}", "inputs=[depth]")
    with pytest.raises(ValueError, match="no generators/goal_image/"):
        served(compose, env, f"checkpoint={folder}", "output=goal_image")
    with pytest.raises(ValueError, match="served in float32"):
        served(compose, env, f"checkpoint={folder}", "dtype=bfloat16")


def test_without_a_generator_or_with_output_none_the_text_agent_is_served(compose, env, saved):
    import shutil

    from graft.agent.policy import Agent

    folder, without, _ = saved
    for overrides in ([f"checkpoint={without}"], [f"checkpoint={folder}", "output=none"]):
        agent, model, meta, _ = served(compose, env, *overrides)
        assert type(agent) is Agent and meta.chunk_size == 1 and "repeated" in model["chunk"]
        assert sorted(agent.modalities) == ["proprio", "rgb"]
    # a folder saved before graft_output recorded inputs / execute: every grafted input the env emits,
    # min(8, H) actions
    old = shutil.copytree(folder, without.parent.parent / "old" / "agent")
    meta_json = json.loads((old / "graft.json").read_text())
    for key in ("inputs", "execute", "prompt"):
        del meta_json["grafts"]["action_chunk"]["output"][key]
    (old / "graft.json").write_text(json.dumps(meta_json))
    policy, _, meta, _ = served(compose, env, f"checkpoint={old}")
    assert policy.modalities == ["rgb", "proprio"] and meta.chunk_size == 8


def test_ros2_runs_the_same_chunk_policy_in_process(compose, env, saved):
    """`graft ros2 policy=<folder>` loads through the same loader: chunks of the recorded execute count."""
    import gymnasium as gym
    from graft.curricula.ros2 import agent_policy
    from graft.envs.robot.protocol import Metadata
    from graft.envs.robot.ros2.policies import LocalPolicy
    from graft.envs.spec import ObservationSpec

    folder, _, _ = saved
    fn, model, rate, chunk_size = agent_policy(compose("ros2", [f"policy={folder}"]))
    assert chunk_size == 4 and model["output"] == "action_chunk" and rate == pytest.approx(1.0 / env.unwrapped.dt)
    meta = Metadata(ObservationSpec({}), gym.spaces.Box(-1, 1, (2,), np.float32), rate, chunk_size=chunk_size)
    obs = {**observations(env, (0,))[0], "target": np.zeros(2, np.float32)}  # the bridge's extra keys are ignored
    reply = LocalPolicy(fn, meta).act(obs, timeout=30)
    assert reply.actions.shape == (4, 2) and not np.allclose(reply.actions[0], reply.actions[1:])
